/*
 * naive.c - the baseline: one AWS Encryption SDK v2 message (suite
 * 0x0478, one framed body) written the way straightforward OpenSSL 3
 * code would write it, with a cached data key and its EDK: every
 * algorithm fetched and every context created per call, HKDF through
 * EVP_KDF, the message ID from RAND_bytes, the header serialized anew.
 * Written here, not taken from the esdk library, so the comparison is
 * against independent code; keycache-bench checks that the esdk reader
 * accepts its output.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <string.h>

#include "bench.h"

static void
put16(uint8_t **p, size_t v)
{
    (*p)[0] = (uint8_t)(v >> 8);
    (*p)[1] = (uint8_t)v;
    *p += 2;
}

static void
put32(uint8_t **p, uint32_t v)
{
    (*p)[0] = (uint8_t)(v >> 24);
    (*p)[1] = (uint8_t)(v >> 16);
    (*p)[2] = (uint8_t)(v >> 8);
    (*p)[3] = (uint8_t)v;
    *p += 4;
}

static void
putb(uint8_t **p, const void *src, size_t n)
{
    memcpy(*p, src, n);
    *p += n;
}

static int
hkdf_step(const char *mode, const uint8_t *key, size_t key_len,
          const uint8_t *salt, size_t salt_len, const uint8_t *info,
          size_t info_len, uint8_t *out, size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[6];
    size_t i = 0;
    int ok;

    p[i++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                              (char *)"SHA2-512", 0);
    p[i++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE,
                                              (char *)mode, 0);
    p[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                               (void *)key, key_len);
    if (salt_len > 0) {
        p[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                   (void *)salt, salt_len);
    }
    if (info_len > 0) {
        p[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                   (void *)info, info_len);
    }
    p[i] = OSSL_PARAM_construct_end();
    ok = kctx != NULL && EVP_KDF_derive(kctx, out, out_len, p) == 1;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return ok ? 0 : -1;
}

/* GCM seal with a fetch and a context per call. */
static int
gcm_seal(const uint8_t *key, const uint8_t *iv, const uint8_t *aad,
         size_t aad_len, const uint8_t *in, size_t n, uint8_t *out,
         uint8_t *tag)
{
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    uint8_t dummy[16];
    int l, ok;

    ok = c != NULL && x != NULL &&
         EVP_EncryptInit_ex2(x, c, key, iv, NULL) == 1 &&
         EVP_EncryptUpdate(x, NULL, &l, aad, (int)aad_len) == 1 &&
         (n == 0 || EVP_EncryptUpdate(x, out, &l, in, (int)n) == 1) &&
         EVP_EncryptFinal_ex(x, dummy, &l) == 1 &&
         EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(x);
    EVP_CIPHER_free(c);
    return ok ? 0 : -1;
}

size_t
naive_encrypt(const struct naive_key *k, const uint8_t *pt, size_t n,
              uint8_t *out)
{
    static const char body_str[] = "AWSKMSEncryptionClient Final Frame";
    uint8_t msg_id[32], prk[64], key[32], commit[32], info[11];
    uint8_t iv[12] = {0}, aad[32 + 34 + 4 + 8], *p = out, *h = out;
    uint32_t frame_len = 4096;

    if (n > frame_len || RAND_bytes(msg_id, sizeof(msg_id)) != 1 ||
        hkdf_step("EXTRACT_ONLY", k->dk, 32, msg_id, 32, NULL, 0, prk,
                  64) != 0) {
        return 0;
    }
    info[0] = 0x04;
    info[1] = 0x78;
    memcpy(info + 2, "DERIVEKEY", 9);
    if (hkdf_step("EXPAND_ONLY", prk, 64, NULL, 0, info, 11, key, 32) != 0 ||
        hkdf_step("EXPAND_ONLY", prk, 64, NULL, 0,
                  (const uint8_t *)"COMMITKEY", 9, commit, 32) != 0) {
        return 0;
    }
    /* Header: version, suite, id, AAD, EDKs, content type, frame length,
     * commitment; then its tag over it with a zero IV. */
    *p++ = 2;
    put16(&p, 0x0478);
    putb(&p, msg_id, 32);
    put16(&p, k->ec_len);
    putb(&p, k->ec, k->ec_len);
    put16(&p, 1);
    put16(&p, k->pid_len);
    putb(&p, k->pid, k->pid_len);
    put16(&p, k->info_len);
    putb(&p, k->info, k->info_len);
    put16(&p, k->ct_len);
    putb(&p, k->ct, k->ct_len);
    *p++ = 2;
    put32(&p, frame_len);
    putb(&p, commit, 32);
    if (gcm_seal(key, iv, h, (size_t)(p - h), NULL, 0, NULL, p) != 0) {
        return 0;
    }
    p += 16;
    /* One final frame: marker, seq 1, IV 00..01, length, ct, tag. */
    put32(&p, 0xFFFFFFFFu);
    put32(&p, 1);
    iv[11] = 1;
    putb(&p, iv, 12);
    put32(&p, (uint32_t)n);
    memcpy(aad, msg_id, 32);
    memcpy(aad + 32, body_str, 34);
    memcpy(aad + 66, "\0\0\0\1", 4);
    memset(aad + 70, 0, 8);
    aad[76] = (uint8_t)(n >> 8);
    aad[77] = (uint8_t)n;
    if (gcm_seal(key, iv, aad, sizeof(aad), pt, n, p, p + n) != 0) {
        return 0;
    }
    p += n + 16;
    OPENSSL_cleanse(prk, sizeof(prk));
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(commit, sizeof(commit));
    return (size_t)(p - out);
}
