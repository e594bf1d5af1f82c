/*
 * kdf.c - per-message key derivation (FORMATS.md section 4).
 */
#include "esdk_int.h"

#include <string.h>

/*
 * v2: salt = message ID; info = suite ID || "DERIVEKEY" for the content
 * key, and "COMMITKEY" alone for the commitment key.  The salt comes keyed
 * in ms when given, else from msg_id.
 */
static int
derive_v2(const struct esdk_suite *s, const uint8_t *data_key, size_t dk_len,
          struct esdk_msg_start *ms, const uint8_t *msg_id,
          uint8_t *key_out, uint8_t *commit_out)
{
    static const uint8_t derive_str[] = "DERIVEKEY";
    static const uint8_t commit_str[] = "COMMITKEY";
    uint8_t info_key[2 + sizeof(derive_str) - 1];
    const uint8_t *info[2] = {info_key, commit_str};
    size_t info_len[2] = {sizeof(info_key), sizeof(commit_str) - 1};
    uint8_t *outs[2] = {key_out, commit_out};
    size_t out_len[2] = {s->key_len, ESDK_COMMIT_LEN};
    size_t n_out = s->committing ? 2 : 1;

    kc_store_u16(info_key, s->id);
    memcpy(info_key + 2, derive_str, sizeof(derive_str) - 1);
#ifdef ESDK_HKDF_SALTED
    if (ms != NULL) {
        return esdk_hkdf_salted(ms->salt, data_key, dk_len, n_out, info,
                                info_len, outs, out_len);
    }
#else
    (void)ms;
#endif
    return esdk_hkdf(s->kdf, data_key, dk_len, msg_id, 32, n_out, info,
                     info_len, outs, out_len);
}

int
esdk_derive_keys(const struct esdk_suite *s, const uint8_t *data_key,
                 size_t dk_len, const uint8_t *msg_id, size_t id_len,
                 uint8_t *key_out, uint8_t *commit_out)
{
    uint8_t info_key[2 + 32];
    const uint8_t *info = info_key;
    size_t info_len, out_len;

    if (s == NULL || dk_len != s->key_len ||
        id_len != (s->version == 2 ? 32u : 16u) ||
        (s->committing && commit_out == NULL)) {
        return KC_EINVAL;
    }
    if (s->kdf == ESDK_KDF_IDENTITY) {
        memcpy(key_out, data_key, dk_len);
        return 0;
    }
    if (s->version == 2) {
        return derive_v2(s, data_key, dk_len, NULL, msg_id, key_out,
                         commit_out);
    }
    /* v1: empty salt; info = suite ID || message ID. */
    kc_store_u16(info_key, s->id);
    memcpy(info_key + 2, msg_id, id_len);
    info_len = 2 + id_len;
    out_len = s->key_len;
    return esdk_hkdf(s->kdf, data_key, dk_len, NULL, 0, 1, &info, &info_len,
                     &key_out, &out_len);
}

int
esdk_derive_keys_started(const struct esdk_suite *s, const uint8_t *data_key,
                         size_t dk_len, struct esdk_msg_start *ms,
                         uint8_t *key_out, uint8_t *commit_out)
{
    if (s == NULL || ms == NULL || s->version != 2 ||
        s->kdf == ESDK_KDF_IDENTITY || dk_len != s->key_len ||
        ms->stage != ESDK_MSG_FINISHED || ms->suite != s->id ||
        (s->committing && commit_out == NULL)) {
        return KC_EINVAL;
    }
    return derive_v2(s, data_key, dk_len, ms, ms->msg_id, key_out,
                     commit_out);
}
