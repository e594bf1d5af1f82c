/*
 * keyring.h - the configured key aliases at run time: each alias's
 * config, its provider and its counters.
 */
#ifndef KC_KEYRING_H
#define KC_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "authz.h"
#include "config.h"
#include "metrics.h"
#include "provider.h"

struct key_counters {
    uint64_t encrypt;         /* successful encrypt requests */
    uint64_t decrypt;         /* successful decrypt requests */
    uint64_t errors;          /* failed requests attributed to the alias */
    uint64_t cache_hits;      /* data key found in the cache */
    uint64_t cache_misses;    /* data key had to come from the provider */
    uint64_t provider_calls;  /* generate/wrap/unwrap calls made */
    uint64_t provider_errors; /* of which failed */
};

struct keyslot {
    const struct key_config *cfg; /* retained: owned by the config */
    struct provider *provider;    /* owned */
    struct key_counters n;
    struct metrics_key m;
    size_t entries;               /* cache entries for this alias */
    struct authz_policy allow_encrypt;
    struct authz_policy allow_decrypt;
    uint64_t logged_grants;       /* ops whose grant was audited, bits */
    struct keyslot **extra;       /* also_wrap_with, owned array */
    size_t nextra;
};

struct keyring {
    struct keyslot *slots; /* owned, cfg->nkeys of them */
    size_t n;
    size_t nflights;       /* provider flights still using these slots */
    struct agent_config *cfg; /* owned once retired by a reload */
    struct keyring *next_retired;
};

/*
 * keyring_new - one slot and provider per [key.*] section of cfg
 * (retained).  On failure err names the alias and reason.  Returns 0 with
 * *out owned by the caller (keyring_free), or the provider's error.
 */
KC_MUST_USE int keyring_new(const struct agent_config *cfg,
                            struct event_base *base, struct keyring **out,
                            char *err, size_t errlen);

/* keyring_find - the slot for alias (len bytes), or NULL. */
struct keyslot *keyring_find(struct keyring *kr, const char *alias,
                             size_t len);

/* keyring_free - free providers (wiping master keys); NULL is a no-op. */
void keyring_free(struct keyring *kr);

#endif /* KC_KEYRING_H */
