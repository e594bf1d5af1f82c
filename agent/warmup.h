/*
 * warmup.h - pre-warm: fetch the encryption keys for the (alias,
 * context) pairs listed in the config (`prewarm`) at start, and say when
 * the agent is ready.  Failed fetches are retried every few seconds;
 * the agent is ready once every one has succeeded.
 */
#ifndef KC_WARMUP_H
#define KC_WARMUP_H

#include "agent.h"

/*
 * warmup_parse_check - validate every key's prewarm text without
 * fetching.  Returns 0 or KC_ECONFIG with the reason in err.
 */
KC_MUST_USE int warmup_parse_check(const struct agent_config *cfg, char *err,
                                   size_t errlen);

/*
 * warmup_start - start the fetches; on_ready runs (once) when all have
 * succeeded, possibly before this returns.  Returns 0 or KC_ENOMEM.
 */
KC_MUST_USE int warmup_start(struct agent *a, void (*on_ready)(struct agent *));

/* warmup_stop - cancel retries (at exit). */
void warmup_stop(struct agent *a);

#endif /* KC_WARMUP_H */
