/*
 * rawaes.c - the raw AES keyring's data-key wrapping (FORMATS.md 5):
 * AES-GCM under a local wrapping key, AAD = canonical context.
 */
#include "esdk_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define RAWAES_TAG_BITS  128u
#define RAWAES_INFO_TAIL (4 + 4 + ESDK_IV_LEN) /* tag bits, IV len, IV */

static bool
wkey_len_ok(size_t n)
{
    return n == 16 || n == 24 || n == 32;
}

int
rawaes_wrap(const uint8_t *wkey, size_t wkey_len, const char *ns,
            const char *name, const uint8_t *ec_ser, size_t ec_len,
            const uint8_t *data_key, size_t dk_len,
            struct esdk_edk_list *out)
{
    uint8_t ct[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
    struct esdk_gcm g = {NULL, true};
    uint8_t *info = NULL, *iv;
    size_t name_len, info_len = 0;
    int r;

    if (wkey == NULL || ns == NULL || name == NULL || data_key == NULL ||
        out == NULL || (ec_ser == NULL && ec_len > 0) ||
        !wkey_len_ok(wkey_len) || dk_len == 0 || dk_len > ESDK_MAX_KEY_LEN) {
        return KC_EINVAL;
    }
    name_len = strlen(name);
    if (name_len > ESDK_U16_MAX - RAWAES_INFO_TAIL) {
        return KC_ETOOBIG;
    }
    info_len = name_len + RAWAES_INFO_TAIL;
    if ((info = malloc(info_len)) == NULL) {
        return KC_ENOMEM;
    }
    memcpy(info, name, name_len);
    kc_store_u32(info + name_len, RAWAES_TAG_BITS);
    kc_store_u32(info + name_len + 4, ESDK_IV_LEN);
    iv = info + name_len + 8;
    if ((r = esdk_rand(iv, ESDK_IV_LEN)) != 0 ||
        (r = esdk_gcm_init(&g, true, wkey, wkey_len)) != 0 ||
        (r = esdk_gcm_seal(&g, iv, ec_ser, ec_len, NULL, 0, data_key, dk_len,
                           ct, ct + dk_len)) != 0) {
        goto out;
    }
    r = esdk_edk_list_add(out, ns, strlen(ns), info, info_len, ct,
                          dk_len + ESDK_TAG_LEN);
out:
    sodium_memzero(ct, sizeof(ct));
    esdk_gcm_clear(&g);
    free(info);
    return r;
}

bool
rawaes_edk_matches(const char *ns, const char *name,
                   const struct esdk_edk *edk)
{
    size_t ns_len = strlen(ns), name_len = strlen(name);
    const uint8_t *tail;

    if (edk->provider_id_len != ns_len ||
        memcmp(edk->provider_id, ns, ns_len) != 0) {
        return false;
    }
    if (edk->provider_info_len != name_len + RAWAES_INFO_TAIL ||
        memcmp(edk->provider_info, name, name_len) != 0) {
        return false;
    }
    tail = edk->provider_info + name_len;
    return kc_load_u32(tail) == RAWAES_TAG_BITS &&
           kc_load_u32(tail + 4) == ESDK_IV_LEN;
}

int
rawaes_unwrap(const uint8_t *wkey, size_t wkey_len, const char *ns,
              const char *name, const struct esdk_edk *edk,
              const uint8_t *ec_ser, size_t ec_len, uint8_t *dk_out,
              size_t dk_len)
{
    struct esdk_gcm g = {NULL, false};
    const uint8_t *iv;
    int r;

    if (wkey == NULL || ns == NULL || name == NULL || edk == NULL ||
        dk_out == NULL || (ec_ser == NULL && ec_len > 0) ||
        !wkey_len_ok(wkey_len) || dk_len == 0) {
        if (dk_out != NULL) {
            kc_wipe(dk_out, dk_len);
        }
        return KC_EINVAL;
    }
    if (!rawaes_edk_matches(ns, name, edk) ||
        edk->ciphertext_len != dk_len + ESDK_TAG_LEN) {
        return KC_ENODATAKEY;
    }
    iv = edk->provider_info + strlen(name) + 8;
    if ((r = esdk_gcm_init(&g, false, wkey, wkey_len)) == 0) {
        /* esdk_gcm_open wipes dk_out itself when the tag fails. */
        r = esdk_gcm_open(&g, iv, ec_ser, ec_len, NULL, 0, edk->ciphertext,
                          dk_len, dk_out, edk->ciphertext + dk_len);
    }
    esdk_gcm_clear(&g);
    if (r != 0) {
        kc_wipe(dk_out, dk_len);
    }
    return r;
}
