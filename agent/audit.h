/*
 * audit.h - one log line per security decision and per key lifecycle
 * event, with who (peer uid/gid/pid), what (op, key alias) and the
 * result.  Never key bytes, plaintext, ciphertext or context values.
 */
#ifndef KC_AUDIT_H
#define KC_AUDIT_H

#include <stdbool.h>

#include "authz.h"

/*
 * audit_decision - an authorization decision for op on alias (NULL for
 * agent-wide ops).  Denials are logged at warn level, grants at info.
 */
void audit_decision(const struct authz_peer *peer, const char *op,
                    const char *alias, bool allowed);

/*
 * audit_key_event - a data key's life: "generated", "evicted",
 * "expired", "cap_reached", "provider_error"; detail may be NULL.
 */
void audit_key_event(const char *alias, const char *event,
                     const char *detail);

#endif /* KC_AUDIT_H */
