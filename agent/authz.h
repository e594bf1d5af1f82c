/*
 * authz.h - who may do what: per-alias encrypt/decrypt policies and the
 * agent-wide stats policy, checked against the peer credentials the
 * kernel reported for the connection (SO_PEERCRED, SO_PEERGROUPS).
 *
 * Policy text: a comma-separated list of uid:N, user:NAME, gid:N,
 * group:NAME.  A group matches the peer's primary gid or any of its
 * supplementary groups (as the kernel reported them at connect time).
 * No policy (NULL text) means: the agent's own uid only.
 */
#ifndef KC_AUTHZ_H
#define KC_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc_buf.h"

#define AUTHZ_MAX_GROUPS 64

struct authz_rule {
    bool is_gid; /* else uid */
    unsigned int id;
};

struct authz_policy {
    struct authz_rule *rules; /* owned; NULL with n = 0: own uid only */
    size_t n;
    bool is_default;
};

/* The peer as the kernel saw it at connect time. */
struct authz_peer {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    gid_t groups[AUTHZ_MAX_GROUPS]; /* supplementary groups */
    size_t ngroups;
    uint64_t grants_logged; /* audit: grants already logged, one bit per
                               (alias, op) on this connection */
    uint64_t grants_gen;    /* keyring generation the bits refer to */
};

/*
 * authz_policy_parse - parse text (NULL: the default policy).  Names are
 * resolved now (getpwnam/getgrnam), so an unknown user or group is a
 * config error, not a silent deny later.  On failure err says why.
 * Returns 0, KC_ECONFIG, KC_ENOMEM.
 */
KC_MUST_USE int authz_policy_parse(const char *text, struct authz_policy *p,
                                   char *err, size_t errlen);

void authz_policy_clear(struct authz_policy *p);

/* authz_allows - true when the peer matches a rule of p. */
bool authz_allows(const struct authz_policy *p, const struct authz_peer *peer);

#endif /* KC_AUTHZ_H */
