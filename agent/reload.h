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
 * On success the new keys, limits and policies apply as soon as no
 * provider call is in flight (at once for local keys); cached keys of
 * aliases that were removed, or whose provider or key changed, are
 * wiped.  Returns 0, KC_ECONFIG (or the key loading error), KC_ENOMEM.
 */
KC_MUST_USE int reload_request(struct agent *a, char *err, size_t errlen);

/* reload_poll - apply a validated reload if it is waiting and no flight
 * is in the air; called when flights land. */
void reload_poll(struct agent *a);

/* reload_discard - at exit: free a reload still waiting. */
void reload_discard(struct agent *a);

#endif /* KC_RELOAD_H */
