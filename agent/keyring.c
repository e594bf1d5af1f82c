/*
 * keyring.c - slots for the configured aliases.
 */
#include "keyring.h"

#include <stdlib.h>
#include <string.h>

int
keyring_new(const struct agent_config *cfg, struct keyring **out, char *err,
            size_t errlen)
{
    struct keyring *kr;
    const struct key_config *k;
    size_t i = 0;
    int r;

    if ((kr = calloc(1, sizeof(*kr))) == NULL) {
        return KC_ENOMEM;
    }
    if (cfg->nkeys > 0 &&
        (kr->slots = calloc(cfg->nkeys, sizeof(*kr->slots))) == NULL) {
        free(kr);
        return KC_ENOMEM;
    }
    for (k = cfg->keys; k != NULL; k = k->next, i++) {
        kr->slots[i].cfg = k;
        kr->n = i + 1;
        if ((r = provider_new(k, &kr->slots[i].provider, err, errlen)) != 0) {
            keyring_free(kr);
            return r;
        }
    }
    *out = kr;
    return 0;
}

struct keyslot *
keyring_find(struct keyring *kr, const char *alias, size_t len)
{
    size_t i;

    for (i = 0; i < kr->n; i++) {
        const char *a = kr->slots[i].cfg->alias;

        if (strlen(a) == len && memcmp(a, alias, len) == 0) {
            return &kr->slots[i];
        }
    }
    return NULL;
}

void
keyring_free(struct keyring *kr)
{
    size_t i;

    if (kr == NULL) {
        return;
    }
    for (i = 0; i < kr->n; i++) {
        provider_free(kr->slots[i].provider);
    }
    free(kr->slots);
    free(kr);
}
