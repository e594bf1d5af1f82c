/*
 * reload.h - re-read the config on SIGHUP or the reload op, validate it
 * fully, and apply it without dropping connections.
 */
#ifndef KC_RELOAD_H
#define KC_RELOAD_H

#include "agent.h"

/*
 * reload_request - load and validate a->config_path.  On failure the
 * running config stays and the reason is logged (and written to err).
 * On success the new keys, limits and policies apply at once; cached
 * keys of aliases that were removed, or whose key changed, are wiped;
 * provider calls still in the air finish on the old keyring, and what
 * they fetch is cached only if its alias stayed as it was
 * (reload_slot_successor).  Returns 0, KC_ECONFIG (or the key loading
 * error), KC_ENOMEM.
 */
KC_MUST_USE int reload_request(struct agent *a, char *err, size_t errlen);

/*
 * reload_slot_successor - the slot of keyring kr whose alias o's data
 * keys serve unchanged (the same key from the same key file wraps them,
 * and messages are written alike: suite, frame length), or NULL if the
 * alias is gone or changed.  Cached entries move to it on a reload; a key
 * fetched across the reload is cached under it.
 */
struct keyslot *reload_slot_successor(struct keyring *kr,
                                      const struct keyslot *o);

/* reload_retired_idle - a flight of a retired keyring has ended: free
 * idle retired keyrings on the next loop turn. */
void reload_retired_idle(struct agent *a);

/* reload_discard - at exit, after flights are gone: free retired
 * keyrings and a staged reload. */
void reload_discard(struct agent *a);

#endif /* KC_RELOAD_H */
