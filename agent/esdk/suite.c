/*
 * suite.c - the ESDK algorithm suite table (FORMATS.md section 1), and
 * the small helpers for the body AAD and derived frame IV.
 */
#include "esdk_int.h"

#include <openssl/obj_mac.h>
#include <string.h>

/* Every ESDK suite.  S3EC (0x0070..) and DBE (0x67xx) IDs are absent on
 * purpose: they are not valid in an ESDK message. */
static const struct esdk_suite suites[] = {
    {ESDK_SUITE_AES128_GCM_IV12_TAG16, 1, 16, ESDK_KDF_IDENTITY, false, 0,
     "AES_128_GCM_IV12_TAG16_NO_KDF"},
    {ESDK_SUITE_AES192_GCM_IV12_TAG16, 1, 24, ESDK_KDF_IDENTITY, false, 0,
     "AES_192_GCM_IV12_TAG16_NO_KDF"},
    {ESDK_SUITE_AES256_GCM_IV12_TAG16, 1, 32, ESDK_KDF_IDENTITY, false, 0,
     "AES_256_GCM_IV12_TAG16_NO_KDF"},
    {ESDK_SUITE_AES128_HKDF_SHA256, 1, 16, ESDK_KDF_HKDF_SHA256, false, 0,
     "AES_128_GCM_IV12_TAG16_HKDF_SHA256"},
    {ESDK_SUITE_AES192_HKDF_SHA256, 1, 24, ESDK_KDF_HKDF_SHA256, false, 0,
     "AES_192_GCM_IV12_TAG16_HKDF_SHA256"},
    {ESDK_SUITE_AES256_HKDF_SHA256, 1, 32, ESDK_KDF_HKDF_SHA256, false, 0,
     "AES_256_GCM_IV12_TAG16_HKDF_SHA256"},
    {ESDK_SUITE_AES128_HKDF_SHA256_ECDSA_P256, 1, 16, ESDK_KDF_HKDF_SHA256,
     false, NID_X9_62_prime256v1,
     "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256"},
    {ESDK_SUITE_AES192_HKDF_SHA384_ECDSA_P384, 1, 24, ESDK_KDF_HKDF_SHA384,
     false, NID_secp384r1, "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384"},
    {ESDK_SUITE_AES256_HKDF_SHA384_ECDSA_P384, 1, 32, ESDK_KDF_HKDF_SHA384,
     false, NID_secp384r1, "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384"},
    {ESDK_SUITE_AES256_HKDF_SHA512_COMMIT, 2, 32, ESDK_KDF_HKDF_SHA512, true,
     0, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"},
    {ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384, 2, 32, ESDK_KDF_HKDF_SHA512,
     true, NID_secp384r1, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"},
};

const struct esdk_suite *
esdk_suite_get(uint16_t id)
{
    size_t i;

    for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        if (suites[i].id == id) {
            return &suites[i];
        }
    }
    return NULL;
}

size_t
esdk_body_aad(uint8_t *aad, const uint8_t *msg_id, size_t id_len,
              enum esdk_body_kind kind, uint32_t seq, uint64_t len)
{
    static const char frame[] = "AWSKMSEncryptionClient Frame";
    static const char final[] = "AWSKMSEncryptionClient Final Frame";
    static const char single[] = "AWSKMSEncryptionClient Single Block";
    const char *s;
    size_t n = 0, slen;

    s = kind == ESDK_BODY_FRAME   ? frame
        : kind == ESDK_BODY_FINAL ? final
                                  : single;
    slen = strlen(s);
    memcpy(aad, msg_id, id_len);
    n += id_len;
    memcpy(aad + n, s, slen);
    n += slen;
    kc_store_u32(aad + n, seq);
    n += 4;
    kc_store_u64(aad + n, len);
    n += 8;
    return n;
}

void
esdk_frame_iv(uint8_t *iv, uint32_t seq)
{
    memset(iv, 0, ESDK_IV_LEN - 4);
    kc_store_u32(iv + ESDK_IV_LEN - 4, seq);
}
