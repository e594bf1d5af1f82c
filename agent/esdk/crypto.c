/*
 * crypto.c - the OpenSSL 3 seam of the esdk library: AES-GCM, HKDF,
 * ECDSA and randomness.
 *
 * Algorithm objects (ciphers, digests, the HKDF KDF) are fetched once per
 * process on first use and never freed; the fetch is guarded by
 * pthread_once so it is safe even if a second thread ever appears.
 */
#include "esdk_int.h"

#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>

/* Bytes handed to one EVP update call: EVP takes int lengths. */
#define GCM_CHUNK ((size_t)1 << 30)

static pthread_once_t algs_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *alg_gcm128;
static EVP_CIPHER *alg_gcm192;
static EVP_CIPHER *alg_gcm256;
static EVP_MD *alg_sha256;
static EVP_MD *alg_sha384;
static EVP_KDF *alg_hkdf;

static void
algs_fetch(void)
{
    alg_gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    alg_gcm192 = EVP_CIPHER_fetch(NULL, "AES-192-GCM", NULL);
    alg_gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    alg_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    alg_sha384 = EVP_MD_fetch(NULL, "SHA2-384", NULL);
    alg_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

static void
algs_init(void)
{
    (void)pthread_once(&algs_once, algs_fetch);
}

static const EVP_CIPHER *
gcm_cipher(size_t key_len)
{
    algs_init();
    switch (key_len) {
    case 16:
        return alg_gcm128;
    case 24:
        return alg_gcm192;
    case 32:
        return alg_gcm256;
    default:
        return NULL;
    }
}

/* The digest for a signature curve: SHA-256 for P-256, else SHA-384. */
static const EVP_MD *
sig_md(int nid)
{
    algs_init();
    return nid == NID_X9_62_prime256v1 ? alg_sha256 : alg_sha384;
}

static const char *
sig_group(int nid)
{
    return nid == NID_X9_62_prime256v1 ? "P-256" : "P-384";
}

static size_t
sig_pub_len(int nid)
{
    return nid == NID_X9_62_prime256v1 ? 33 : 49;
}

int
esdk_rand(void *p, size_t n)
{
    if (n > INT_MAX || RAND_bytes(p, (int)n) != 1) {
        return KC_ESYS;
    }
    return 0;
}

/* ---- AES-GCM ---------------------------------------------------------- */

int
esdk_gcm_init(struct esdk_gcm *g, bool enc, const uint8_t *key,
              size_t key_len)
{
    const EVP_CIPHER *c;
    int ok;

    g->ctx = NULL;
    g->enc = enc;
    if ((c = gcm_cipher(key_len)) == NULL) {
        return key_len == 16 || key_len == 24 || key_len == 32
                   ? KC_EUNSUPPORTED
                   : KC_EINVAL;
    }
    if ((g->ctx = EVP_CIPHER_CTX_new()) == NULL) {
        return KC_ENOMEM;
    }
    if (enc) {
        ok = EVP_EncryptInit_ex2(g->ctx, c, key, NULL, NULL);
    } else {
        ok = EVP_DecryptInit_ex2(g->ctx, c, key, NULL, NULL);
    }
    if (ok != 1) {
        esdk_gcm_clear(g);
        return KC_ESYS;
    }
    return 0;
}

void
esdk_gcm_clear(struct esdk_gcm *g)
{
    /* EVP_CIPHER_CTX_free cleanses the key schedule. */
    EVP_CIPHER_CTX_free(g->ctx);
    g->ctx = NULL;
}

/* Feed AAD (out == NULL) or data through the context in int-sized bites. */
static int
gcm_update(struct esdk_gcm *g, uint8_t *out, const uint8_t *in, size_t n)
{
    size_t off = 0, step;
    int outl, ok;

    while (off < n) {
        step = n - off > GCM_CHUNK ? GCM_CHUNK : n - off;
        if (g->enc) {
            ok = EVP_EncryptUpdate(g->ctx, out == NULL ? NULL : out + off,
                                   &outl, in + off, (int)step);
        } else {
            ok = EVP_DecryptUpdate(g->ctx, out == NULL ? NULL : out + off,
                                   &outl, in + off, (int)step);
        }
        if (ok != 1 || (size_t)outl != step) {
            return KC_ESYS;
        }
        off += step;
    }
    return 0;
}

static int
gcm_start(struct esdk_gcm *g, const uint8_t *iv, const uint8_t *aad,
          size_t aad_len, const uint8_t *aad2, size_t aad2_len)
{
    int ok, r;

    if (g->enc) {
        ok = EVP_EncryptInit_ex2(g->ctx, NULL, NULL, iv, NULL);
    } else {
        ok = EVP_DecryptInit_ex2(g->ctx, NULL, NULL, iv, NULL);
    }
    if (ok != 1) {
        return KC_ESYS;
    }
    if ((r = gcm_update(g, NULL, aad, aad_len)) != 0) {
        return r;
    }
    return gcm_update(g, NULL, aad2, aad2_len);
}

int
esdk_gcm_seal(struct esdk_gcm *g, const uint8_t *iv, const uint8_t *aad,
              size_t aad_len, const uint8_t *aad2, size_t aad2_len,
              const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
    uint8_t dummy[16];
    int outl, r;

    if (!g->enc) {
        return KC_EINVAL;
    }
    if ((r = gcm_start(g, iv, aad, aad_len, aad2, aad2_len)) != 0) {
        return r;
    }
    if ((r = gcm_update(g, out, in, n)) != 0) {
        return r;
    }
    if (EVP_EncryptFinal_ex(g->ctx, dummy, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, ESDK_TAG_LEN,
                            tag) != 1) {
        return KC_ESYS;
    }
    return 0;
}

int
esdk_gcm_open(struct esdk_gcm *g, const uint8_t *iv, const uint8_t *aad,
              size_t aad_len, const uint8_t *aad2, size_t aad2_len,
              const uint8_t *in, size_t n, uint8_t *out, const uint8_t *tag)
{
    uint8_t t[ESDK_TAG_LEN], dummy[16];
    int outl, r;

    if (g->enc) {
        return KC_EINVAL;
    }
    memcpy(t, tag, sizeof(t));
    if ((r = gcm_start(g, iv, aad, aad_len, aad2, aad2_len)) != 0) {
        goto out;
    }
    if ((r = gcm_update(g, out, in, n)) != 0) {
        goto out;
    }
    if (EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_TAG, ESDK_TAG_LEN,
                            t) != 1) {
        r = KC_ESYS;
        goto out;
    }
    r = EVP_DecryptFinal_ex(g->ctx, dummy, &outl) == 1 ? 0 : KC_EAUTH;
out:
    if (r != 0 && out != NULL) {
        kc_wipe(out, n);
    }
    return r;
}

/* ---- HKDF ------------------------------------------------------------- */

static const char *
kdf_md_name(enum esdk_kdf kdf, size_t *hash_len)
{
    switch (kdf) {
    case ESDK_KDF_HKDF_SHA256:
        *hash_len = 32;
        return "SHA2-256";
    case ESDK_KDF_HKDF_SHA384:
        *hash_len = 48;
        return "SHA2-384";
    case ESDK_KDF_HKDF_SHA512:
        *hash_len = 64;
        return "SHA2-512";
    default:
        *hash_len = 0;
        return NULL;
    }
}

/* One HKDF step on a reset context; mode is "EXTRACT_ONLY"/"EXPAND_ONLY". */
static int
hkdf_step(EVP_KDF_CTX *kctx, const char *md, const char *mode,
          const uint8_t *key, size_t key_len, const uint8_t *salt,
          size_t salt_len, const uint8_t *info, size_t info_len,
          uint8_t *out, size_t out_len)
{
    OSSL_PARAM p[6];
    size_t i = 0;

    EVP_KDF_CTX_reset(kctx);
    p[i++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                              (char *)md, 0);
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
    return EVP_KDF_derive(kctx, out, out_len, p) == 1 ? 0 : KC_ESYS;
}

int
esdk_hkdf(enum esdk_kdf kdf, const uint8_t *ikm, size_t ikm_len,
          const uint8_t *salt, size_t salt_len, size_t n_out,
          const uint8_t *const *info, const size_t *info_len,
          uint8_t *const *out, const size_t *out_len)
{
    /*
     * TODO: each call extracts from scratch and builds a fresh KDF
     * context; the performance issue will cache the HMAC midstate per
     * data key here.  Callers need not change.
     */
    uint8_t prk[64];
    EVP_KDF_CTX *kctx = NULL;
    const char *md;
    size_t hash_len, i;
    int r;

    if ((md = kdf_md_name(kdf, &hash_len)) == NULL) {
        return KC_EINVAL;
    }
    algs_init();
    if (alg_hkdf == NULL) {
        return KC_EUNSUPPORTED;
    }
    if ((kctx = EVP_KDF_CTX_new(alg_hkdf)) == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    /* Empty salt: OpenSSL's HKDF then uses hash-length zeros (RFC 5869). */
    if ((r = hkdf_step(kctx, md, "EXTRACT_ONLY", ikm, ikm_len, salt,
                       salt_len, NULL, 0, prk, hash_len)) != 0) {
        goto out;
    }
    for (i = 0; i < n_out; i++) {
        if ((r = hkdf_step(kctx, md, "EXPAND_ONLY", prk, hash_len, NULL, 0,
                           info[i], info_len[i], out[i], out_len[i])) != 0) {
            goto out;
        }
    }
out:
    if (r != 0) {
        for (i = 0; i < n_out; i++) {
            kc_wipe(out[i], out_len[i]);
        }
    }
    sodium_memzero(prk, sizeof(prk));
    EVP_KDF_CTX_free(kctx);
    return r;
}

/* ---- ECDSA ------------------------------------------------------------ */

int
esdk_sig_keygen(int nid, EVP_PKEY **out)
{
    *out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", sig_group(nid));
    return *out == NULL ? KC_ESYS : 0;
}

int
esdk_sig_pub_b64(EVP_PKEY *key, int nid, char *b64, size_t b64_size,
                 size_t *b64_len)
{
    uint8_t pub[1 + 2 * 48], comp[ESDK_MAX_PUB_LEN];
    size_t pub_len = 0, coord = sig_pub_len(nid) - 1;

    /* Read the uncompressed point 04 || X || Y and compress it by hand
     * (02 or 03 by the parity of Y, then X): no dependence on the key's
     * point-format setting. */
    if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                        sizeof(pub), &pub_len) != 1 ||
        pub_len != 1 + 2 * coord || pub[0] != 0x04 ||
        b64_size < sodium_base64_ENCODED_LEN(
                       coord + 1, sodium_base64_VARIANT_ORIGINAL)) {
        ERR_clear_error();
        return KC_ESYS;
    }
    comp[0] = (uint8_t)(0x02 | (pub[pub_len - 1] & 1));
    memcpy(comp + 1, pub + 1, coord);
    sodium_bin2base64(b64, b64_size, comp, coord + 1,
                      sodium_base64_VARIANT_ORIGINAL);
    *b64_len = strlen(b64);
    return 0;
}

int
esdk_sig_pub_from_b64(int nid, const uint8_t *b64, size_t b64_len,
                      EVP_PKEY **out)
{
    uint8_t pub[ESDK_MAX_PUB_LEN + 8];
    char group[8];
    OSSL_PARAM p[3];
    EVP_PKEY_CTX *pctx = NULL;
    size_t pub_len = 0;
    int r = KC_EFORMAT;

    *out = NULL;
    if (sodium_base642bin(pub, sizeof(pub), (const char *)b64, b64_len,
                          NULL, &pub_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        pub_len != sig_pub_len(nid) || (pub[0] != 2 && pub[0] != 3)) {
        goto out;
    }
    snprintf(group, sizeof(group), "%s", sig_group(nid));
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                            group, 0);
    p[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub,
                                             pub_len);
    p[2] = OSSL_PARAM_construct_end();
    if ((pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    /* fromdata decodes the point and rejects one not on the curve. */
    if (EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, p) != 1) {
        *out = NULL;
        ERR_clear_error();
        goto out;
    }
    r = 0;
out:
    EVP_PKEY_CTX_free(pctx);
    return r;
}

int
esdk_sig_sign(EVP_PKEY *key, int nid, const uint8_t *m, size_t n,
              uint8_t *sig, size_t *sig_len)
{
    EVP_MD_CTX *mctx = NULL;
    size_t len = 0;
    int r = KC_ESYS;

    if (sig_md(nid) == NULL) {
        return KC_EUNSUPPORTED;
    }
    if ((mctx = EVP_MD_CTX_new()) == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    if (EVP_DigestSignInit(mctx, NULL, sig_md(nid), NULL, key) != 1 ||
        EVP_DigestSign(mctx, NULL, &len, m, n) != 1 ||
        len > ESDK_MAX_SIG_LEN ||
        EVP_DigestSign(mctx, sig, &len, m, n) != 1) {
        goto out;
    }
    *sig_len = len;
    r = 0;
out:
    EVP_MD_CTX_free(mctx);
    return r;
}

int
esdk_sig_verify(EVP_PKEY *key, int nid, const uint8_t *m, size_t n,
                const uint8_t *sig, size_t sig_len)
{
    EVP_MD_CTX *mctx = NULL;
    int r = KC_EAUTH;

    if (sig_md(nid) == NULL) {
        return KC_EUNSUPPORTED;
    }
    if ((mctx = EVP_MD_CTX_new()) == NULL) {
        r = KC_ENOMEM;
        goto out;
    }
    if (EVP_DigestVerifyInit(mctx, NULL, sig_md(nid), NULL, key) != 1) {
        r = KC_ESYS;
        goto out;
    }
    /* 1 is valid; 0 is a bad signature; <0 is malformed DER: all fail. */
    if (EVP_DigestVerify(mctx, sig, sig_len, m, n) == 1) {
        r = 0;
    } else {
        ERR_clear_error();
    }
out:
    EVP_MD_CTX_free(mctx);
    return r;
}
