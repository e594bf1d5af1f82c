/*
 * keyring.c - slots for the configured aliases.
 */
#include "keyring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esdk.h"

/*
 * Resolve a slot's also_wrap_with list ("a, b") into slot pointers.  The
 * extra keys wrap the same data key, so a reader holding any one of them
 * can decrypt.
 */
static int
resolve_extras(struct keyring *kr, struct keyslot *s, char *err,
               size_t errlen)
{
    const char *pos = s->cfg->also_wrap_with, *item;
    size_t len;

    if (pos == NULL) {
        return 0;
    }
    if ((s->extra = calloc(config_list_count(pos) + 1,
                           sizeof(*s->extra))) == NULL) {
        return KC_ENOMEM;
    }
    while (config_list_next(&pos, &item, &len)) {
        struct keyslot *x = keyring_find(kr, item, len);

        if (x == NULL || x == s) {
            snprintf(err, errlen,
                     "[key.%s] also_wrap_with names '%.*s', which is %s",
                     s->cfg->alias, (int)len, item,
                     x == NULL ? "not a configured alias" : "the key itself");
            return KC_ECONFIG;
        }
        s->extra[s->nextra++] = x;
    }
    return 0;
}

/* Signing suites rewrap per message, which only a local key can do. */
static int
check_suite(const struct keyslot *s, char *err, size_t errlen)
{
    size_t i;

    if (s->cfg->suite != ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384) {
        return 0;
    }
    for (i = 0; i <= s->nextra; i++) {
        const struct keyslot *x = i == 0 ? s : s->extra[i - 1];

        if (strcmp(x->cfg->provider, "local") != 0) {
            snprintf(err, errlen,
                     "[key.%s] suite 0x0578 wraps the data key again for "
                     "every message; that needs local keys, and %s uses "
                     "provider %s", s->cfg->alias, x->cfg->alias,
                     x->cfg->provider);
            return KC_ECONFIG;
        }
    }
    return 0;
}

int
keyring_new(const struct agent_config *cfg, struct event_base *base,
            struct keyring **out, char *err, size_t errlen)
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
        if ((r = provider_new(k, &kr->slots[i].n, base,
                              &kr->slots[i].provider, err, errlen)) != 0) {
            goto out;
        }
    }
    for (i = 0; i < kr->n; i++) {
        struct keyslot *s = &kr->slots[i];

        if ((r = authz_policy_parse(s->cfg->allow_encrypt, &s->allow_encrypt,
                                    err, errlen)) != 0 ||
            (r = authz_policy_parse(s->cfg->allow_decrypt, &s->allow_decrypt,
                                    err, errlen)) != 0) {
            goto out;
        }
        if ((r = resolve_extras(kr, &kr->slots[i], err, errlen)) != 0 ||
            (r = check_suite(&kr->slots[i], err, errlen)) != 0) {
            goto out;
        }
    }
    *out = kr;
    kr = NULL;
    r = 0;
out:
    keyring_free(kr);
    return r;
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
        free(kr->slots[i].extra);
        authz_policy_clear(&kr->slots[i].allow_encrypt);
        authz_policy_clear(&kr->slots[i].allow_decrypt);
    }
    free(kr->slots);
    free(kr);
}
