/*
 * kdf.c - per-message key derivation (FORMATS.md section 4).
 */
#include "esdk_int.h"

#include <string.h>

int
esdk_derive_keys(const struct esdk_suite *s, const uint8_t *data_key,
                 size_t dk_len, const uint8_t *msg_id, size_t id_len,
                 uint8_t *key_out, uint8_t *commit_out)
{
    static const uint8_t derive_str[] = "DERIVEKEY";
    static const uint8_t commit_str[] = "COMMITKEY";
    uint8_t info_key[2 + 32];
    const uint8_t *info[2];
    uint8_t *outs[2];
    size_t info_len[2], out_len[2];

    if (s == NULL || dk_len != s->key_len ||
        id_len != (s->version == 2 ? 32u : 16u) ||
        (s->committing && commit_out == NULL)) {
        return KC_EINVAL;
    }
    if (s->kdf == ESDK_KDF_IDENTITY) {
        memcpy(key_out, data_key, dk_len);
        return 0;
    }

    kc_store_u16(info_key, s->id);
    outs[0] = key_out;
    out_len[0] = s->key_len;
    info[0] = info_key;
    if (s->version == 2) {
        /* v2: salt = message ID; info = suite ID || "DERIVEKEY", and
         * "COMMITKEY" alone for the commitment key. */
        memcpy(info_key + 2, derive_str, sizeof(derive_str) - 1);
        info_len[0] = 2 + sizeof(derive_str) - 1;
        info[1] = commit_str;
        info_len[1] = sizeof(commit_str) - 1;
        outs[1] = commit_out;
        out_len[1] = ESDK_COMMIT_LEN;
        return esdk_hkdf(s->kdf, data_key, dk_len, msg_id, id_len,
                         s->committing ? 2 : 1, info, info_len, outs,
                         out_len);
    }
    /* v1: empty salt; info = suite ID || message ID. */
    memcpy(info_key + 2, msg_id, id_len);
    info_len[0] = 2 + id_len;
    return esdk_hkdf(s->kdf, data_key, dk_len, NULL, 0, 1, info, info_len,
                     outs, out_len);
}
