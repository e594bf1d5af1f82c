/*
 * authz.c - peer-credential policies.
 */
#include "authz.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static int
parse_id(const char *s, size_t len, unsigned int *out)
{
    char buf[16], *end;
    unsigned long v;

    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (buf[0] < '0' || buf[0] > '9') {
        return -1;
    }
    errno = 0;
    v = strtoul(buf, &end, 10);
    if (errno != 0 || *end != '\0' || v > 0xfffffffeUL) {
        return -1;
    }
    *out = (unsigned int)v;
    return 0;
}

/* Resolve a user or group name (len bytes at s). */
static int
lookup_name(bool group, const char *s, size_t len, unsigned int *out)
{
    char name[256];
    struct passwd *pw;
    struct group *gr;

    if (len == 0 || len >= sizeof(name)) {
        return -1;
    }
    memcpy(name, s, len);
    name[len] = '\0';
    if (group) {
        if ((gr = getgrnam(name)) == NULL) {
            return -1;
        }
        *out = (unsigned int)gr->gr_gid;
    } else {
        if ((pw = getpwnam(name)) == NULL) {
            return -1;
        }
        *out = (unsigned int)pw->pw_uid;
    }
    return 0;
}

/* One "kind:value" item of len bytes at s into *rule. */
static int
parse_rule(const char *s, size_t len, struct authz_rule *rule, char *err,
           size_t errlen)
{
    const char *colon = memchr(s, ':', len);
    size_t klen, vlen;
    const char *v;
    int r = -1;

    if (colon == NULL) {
        snprintf(err, errlen, "policy entry '%.*s' must be uid:N, user:NAME, "
                 "gid:N or group:NAME", (int)len, s);
        return KC_ECONFIG;
    }
    klen = (size_t)(colon - s);
    v = colon + 1;
    vlen = len - klen - 1;
    if (klen == 3 && memcmp(s, "uid", 3) == 0) {
        rule->is_gid = false;
        r = parse_id(v, vlen, &rule->id);
    } else if (klen == 3 && memcmp(s, "gid", 3) == 0) {
        rule->is_gid = true;
        r = parse_id(v, vlen, &rule->id);
    } else if (klen == 4 && memcmp(s, "user", 4) == 0) {
        rule->is_gid = false;
        r = lookup_name(false, v, vlen, &rule->id);
    } else if (klen == 5 && memcmp(s, "group", 5) == 0) {
        rule->is_gid = true;
        r = lookup_name(true, v, vlen, &rule->id);
    } else {
        snprintf(err, errlen, "policy entry '%.*s': unknown kind (use uid, "
                 "user, gid or group)", (int)len, s);
        return KC_ECONFIG;
    }
    if (r != 0) {
        snprintf(err, errlen, "policy entry '%.*s': not a valid number or "
                 "no such user/group", (int)len, s);
        return KC_ECONFIG;
    }
    return 0;
}

int
authz_policy_parse(const char *text, struct authz_policy *p, char *err,
                   size_t errlen)
{
    const char *pos = text, *item;
    size_t len;
    int r;

    memset(p, 0, sizeof(*p));
    if (text == NULL) {
        p->is_default = true;
        return 0;
    }
    p->rules = calloc(config_list_count(text) + 1, sizeof(*p->rules));
    if (p->rules == NULL) {
        return KC_ENOMEM;
    }
    while (config_list_next(&pos, &item, &len)) {
        if ((r = parse_rule(item, len, &p->rules[p->n], err, errlen)) != 0) {
            authz_policy_clear(p);
            return r;
        }
        p->n++;
    }
    if (p->n == 0) {
        snprintf(err, errlen, "empty policy: omit the line for the default "
                 "(the agent's own uid)");
        authz_policy_clear(p);
        return KC_ECONFIG;
    }
    return 0;
}

void
authz_policy_clear(struct authz_policy *p)
{
    free(p->rules);
    memset(p, 0, sizeof(*p));
}

static bool
peer_in_group(const struct authz_peer *peer, unsigned int gid)
{
    size_t i;

    if ((unsigned int)peer->gid == gid) {
        return true;
    }
    for (i = 0; i < peer->ngroups; i++) {
        if ((unsigned int)peer->groups[i] == gid) {
            return true;
        }
    }
    return false;
}

bool
authz_allows(const struct authz_policy *p, const struct authz_peer *peer)
{
    size_t i;

    if (peer->uid == (uid_t)-1) {
        return false; /* credentials unknown: never trust */
    }
    if (p->is_default || p->n == 0) {
        static uid_t own = (uid_t)-1;

        if (own == (uid_t)-1) {
            own = geteuid(); /* fixed for the process: ask once */
        }
        return peer->uid == own;
    }
    for (i = 0; i < p->n; i++) {
        if (p->rules[i].is_gid ? peer_in_group(peer, p->rules[i].id)
                               : (unsigned int)peer->uid == p->rules[i].id) {
            return true;
        }
    }
    return false;
}
