/*
 * crypto.c - the OpenSSL 3 seam of the esdk library: AES-GCM, HKDF,
 * ECDSA and randomness.
 *
 * Algorithm objects (ciphers, digests, the HKDF KDF) are fetched once per
 * process on first use and never freed; the fetch is guarded by
 * pthread_once so it is safe even if a second thread ever appears.
 *
 * Two hot paths are done by hand rather than through EVP (measured with
 * tests/bench: see PERFORMANCE.md there):
 * - HKDF is RFC 5869 written directly over the SHA-2 compression
 *   functions: each HMAC key is absorbed once into inner and outer
 *   midstates, and every HMAC with that key starts from plain struct
 *   copies of them.  A v2 message needs extract + two expands, which is
 *   10 SHA-512 block compressions this way (the minimum), against about
 *   three times the work through EVP_KDF.  The low-level SHA-2 calls are
 *   deprecated in OpenSSL 3 but present; a build with
 *   OPENSSL_NO_DEPRECATED_3_0 falls back to EVP_KDF (hkdf_evp below).
 * - Randomness comes from a per-thread pool refilled 4 KiB at a time by
 *   RAND_bytes (see rand_pool below for why that is safe).
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "esdk_int.h"

#include <sys/mman.h>
#include <unistd.h>

#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
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

/* ---- randomness -------------------------------------------------------- */

/*
 * rand_pool - RAND_bytes costs about 0.6 us per call in OpenSSL 3 whatever
 * the length (locking and DRBG bookkeeping), a quarter of a whole small
 * encrypt; one call for 4 KiB serves 127 message ids.  Why this is safe:
 * - the bytes are the DRBG's own output, handed out once each: a draw
 *   takes bytes from the end of the unused part and wipes them in the
 *   pool at once, so nothing handed out stays behind;
 * - fork: the pool lives in its own mapping marked MADV_WIPEONFORK, so a
 *   child sees a zeroed page (left == 0) and refills from its own
 *   (fork-aware) DRBG instead of repeating the parent's bytes; a
 *   pthread_atfork child handler wipes it as well, for kernels without
 *   MADV_WIPEONFORK;
 * - the mapping is MADV_DONTDUMP and locked where the limit allows, like
 *   other secrets, and esdk_rand_shutdown wipes and unmaps it;
 * - threads: the pool is per thread (__thread), so no locking is needed
 *   and two threads never share bytes.
 * Draws larger than RAND_POOL_DIRECT go straight to RAND_bytes.
 */
#define RAND_POOL_MAP    4096
#define RAND_POOL_DIRECT 256

struct rand_pool {
    size_t left; /* unused bytes: buf[0 .. left) */
    uint8_t buf[RAND_POOL_MAP - sizeof(size_t)];
};

static __thread struct rand_pool *tls_pool;
static __thread bool tls_pool_failed;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
rand_pool_child(void)
{
    /* Only the forking thread exists in the child. */
    if (tls_pool != NULL) {
        sodium_memzero(tls_pool, sizeof(*tls_pool));
    }
}

static void
rand_atfork_register(void)
{
    (void)pthread_atfork(NULL, NULL, rand_pool_child);
}

static struct rand_pool *
rand_pool_get(void)
{
    void *m;

    if (tls_pool != NULL || tls_pool_failed) {
        return tls_pool;
    }
    (void)pthread_once(&atfork_once, rand_atfork_register);
    m = mmap(NULL, RAND_POOL_MAP, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        tls_pool_failed = true; /* draw directly from RAND_bytes */
        return NULL;
    }
#ifdef MADV_WIPEONFORK
    (void)madvise(m, RAND_POOL_MAP, MADV_WIPEONFORK);
#endif
#ifdef MADV_DONTDUMP
    (void)madvise(m, RAND_POOL_MAP, MADV_DONTDUMP);
#endif
    (void)mlock(m, RAND_POOL_MAP); /* best effort, like sodium_malloc */
    tls_pool = m;
    tls_pool->left = 0;
    return tls_pool;
}

static int
rand_direct(void *p, size_t n)
{
    if (n > INT_MAX || RAND_bytes(p, (int)n) != 1) {
        return KC_ESYS;
    }
    return 0;
}

int
esdk_rand(void *p, size_t n)
{
    struct rand_pool *rp;

    if (n > RAND_POOL_DIRECT || (rp = rand_pool_get()) == NULL) {
        return rand_direct(p, n);
    }
    if (rp->left < n) {
        sodium_memzero(rp->buf, rp->left);
        rp->left = 0;
        if (RAND_bytes(rp->buf, (int)sizeof(rp->buf)) != 1) {
            sodium_memzero(rp->buf, sizeof(rp->buf));
            return KC_ESYS;
        }
        rp->left = sizeof(rp->buf);
    }
    rp->left -= n;
    memcpy(p, rp->buf + rp->left, n);
    sodium_memzero(rp->buf + rp->left, n);
    return 0;
}

void
esdk_rand_shutdown(void)
{
    if (tls_pool == NULL) {
        return;
    }
    sodium_memzero(tls_pool, sizeof(*tls_pool));
    (void)munlock(tls_pool, RAND_POOL_MAP);
    (void)munmap(tls_pool, RAND_POOL_MAP);
    tls_pool = NULL;
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

/*
 * Read the tag through the provider's parameter directly:
 * EVP_CIPHER_CTX_ctrl builds the same parameter array and adds a
 * translation layer on top, measurable at one message per request.
 * (Setting the tag to verify stays on EVP_CIPHER_CTX_ctrl: with
 * EVP_CIPHER_CTX_set_params instead, OpenSSL 3.0's final tag comparison
 * reads uninitialised bytes under valgrind.)
 */
static int
gcm_get_tag(struct esdk_gcm *g, uint8_t *tag)
{
    OSSL_PARAM p[2];

    p[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag,
                                             ESDK_TAG_LEN);
    p[1] = OSSL_PARAM_construct_end();
    return EVP_CIPHER_CTX_get_params(g->ctx, p) == 1 ? 0 : KC_ESYS;
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
        gcm_get_tag(g, tag) != 0) {
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

/* The EVP_KDF reference path: a fresh KDF context per call. */
static KC_MUST_USE int
hkdf_evp(enum esdk_kdf kdf, const uint8_t *ikm, size_t ikm_len,
         const uint8_t *salt, size_t salt_len, size_t n_out,
         const uint8_t *const *info, const size_t *info_len,
         uint8_t *const *out, const size_t *out_len)
{
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

#ifndef OPENSSL_NO_DEPRECATED_3_0
/*
 * HMAC on midstates.  struct hm holds one HMAC key absorbed into the
 * inner (key ^ ipad) and outer (key ^ opad) hash states; hm_mac starts
 * from copies of them, so the key blocks are compressed once per key, not
 * once per MAC.  SHA-384 shares SHA-512's state and update.  Every state
 * and block is wiped after use (they are as secret as the key).
 */
#define HM_BLOCK_MAX 128

union hm_state {
    SHA256_CTX s256;
    SHA512_CTX s512;
};

struct hm {
    enum esdk_kdf kdf;
    size_t block, hash_len;
    union hm_state in, out;
};

static void
hm_init_state(const struct hm *h, union hm_state *st)
{
    switch (h->kdf) {
    case ESDK_KDF_HKDF_SHA256:
        SHA256_Init(&st->s256);
        break;
    case ESDK_KDF_HKDF_SHA384:
        SHA384_Init(&st->s512);
        break;
    default:
        SHA512_Init(&st->s512);
        break;
    }
}

static void
hm_update(const struct hm *h, union hm_state *st, const void *p, size_t n)
{
    if (n == 0) {
        return;
    }
    if (h->kdf == ESDK_KDF_HKDF_SHA256) {
        SHA256_Update(&st->s256, p, n);
    } else {
        SHA512_Update(&st->s512, p, n);
    }
}

static void
hm_final(const struct hm *h, union hm_state *st, uint8_t *md)
{
    switch (h->kdf) {
    case ESDK_KDF_HKDF_SHA256:
        SHA256_Final(md, &st->s256);
        break;
    case ESDK_KDF_HKDF_SHA384:
        SHA384_Final(md, &st->s512);
        break;
    default:
        SHA512_Final(md, &st->s512);
        break;
    }
}

_Static_assert(sizeof(struct hm) <= ESDK_MSG_START_STATE &&
                   _Alignof(struct hm) <= 16,
               "struct esdk_msg_start has no room for the keyed salt");

/* hm_block - set h up for kdf and put key (any length; hash-length
 * zeros when empty) into blk as HMAC's one-block key. */
static void
hm_block(struct hm *h, enum esdk_kdf kdf, const uint8_t *key,
         size_t key_len, uint8_t blk[HM_BLOCK_MAX])
{
    union hm_state st;

    h->kdf = kdf;
    h->block = kdf == ESDK_KDF_HKDF_SHA256 ? 64 : 128;
    h->hash_len = kdf == ESDK_KDF_HKDF_SHA256   ? 32
                  : kdf == ESDK_KDF_HKDF_SHA384 ? 48
                                                : 64;
    memset(blk, 0, HM_BLOCK_MAX);
    if (key_len > h->block) {
        hm_init_state(h, &st);
        hm_update(h, &st, key, key_len);
        hm_final(h, &st, blk);
        sodium_memzero(&st, sizeof(st));
    } else if (key_len > 0) {
        memcpy(blk, key, key_len);
    }
}

/* hm_absorb - XOR pad into blk and start st from it. */
static void
hm_absorb(const struct hm *h, uint8_t *blk, uint8_t pad, union hm_state *st)
{
    size_t i;

    for (i = 0; i < h->block; i++) {
        blk[i] ^= pad;
    }
    hm_init_state(h, st);
    hm_update(h, st, blk, h->block);
}

/* hm_key - absorb key into both states. */
static void
hm_key(struct hm *h, enum esdk_kdf kdf, const uint8_t *key, size_t key_len)
{
    uint8_t blk[HM_BLOCK_MAX];

    hm_block(h, kdf, key, key_len, blk);
    hm_absorb(h, blk, 0x36, &h->in);
    hm_absorb(h, blk, 0x36 ^ 0x5c, &h->out);
    sodium_memzero(blk, sizeof(blk));
}

/*
 * hm_key_half - hm_key in halves: half 0 the inner state (key ^ ipad),
 * half 1 the outer (key ^ opad).  Each half redoes hm_block, which would
 * hash a key longer than a block twice; no caller passes one (the salts
 * split this way are 32-byte message IDs).
 */
static void
hm_key_half(struct hm *h, enum esdk_kdf kdf, const uint8_t *key,
            size_t key_len, int half)
{
    uint8_t blk[HM_BLOCK_MAX];

    hm_block(h, kdf, key, key_len, blk);
    hm_absorb(h, blk, half == 0 ? 0x36 : 0x5c, half == 0 ? &h->in : &h->out);
    sodium_memzero(blk, sizeof(blk));
}

/* hm_mac - HMAC of a || b || c (any may be empty) into md (hash_len). */
static void
hm_mac(const struct hm *h, const uint8_t *a, size_t a_len, const uint8_t *b,
       size_t b_len, const uint8_t *c, size_t c_len, uint8_t *md)
{
    union hm_state st;
    uint8_t inner[64];

    memcpy(&st, &h->in, sizeof(st));
    hm_update(h, &st, a, a_len);
    hm_update(h, &st, b, b_len);
    hm_update(h, &st, c, c_len);
    hm_final(h, &st, inner);
    memcpy(&st, &h->out, sizeof(st));
    hm_update(h, &st, inner, h->hash_len);
    hm_final(h, &st, md);
    sodium_memzero(&st, sizeof(st));
    sodium_memzero(inner, sizeof(inner));
}

/* RFC 5869 expand of one output on the PRK's midstates. */
static int
hkdf_expand(const struct hm *prk, const uint8_t *info, size_t info_len,
            uint8_t *out, size_t out_len)
{
    uint8_t t[64];
    size_t off = 0, n, t_len = 0;
    uint8_t ctr;

    if (out_len > 255 * prk->hash_len) {
        return KC_EINVAL;
    }
    for (ctr = 1; off < out_len; ctr++) {
        hm_mac(prk, t, t_len, info, info_len, &ctr, 1, t);
        t_len = prk->hash_len;
        n = out_len - off < t_len ? out_len - off : t_len;
        memcpy(out + off, t, n);
        off += n;
    }
    sodium_memzero(t, sizeof(t));
    return 0;
}

/* HKDF from h, keyed with the salt: extract, then expand every output
 * from one keying of the PRK.  h is used up (wiped). */
static int
hkdf_keyed(struct hm *h, const uint8_t *ikm, size_t ikm_len, size_t n_out,
           const uint8_t *const *info, const size_t *info_len,
           uint8_t *const *out, const size_t *out_len)
{
    uint8_t prk[64];
    size_t i;
    int r = 0;

    hm_mac(h, ikm, ikm_len, NULL, 0, NULL, 0, prk);
    hm_key(h, h->kdf, prk, h->hash_len);
    for (i = 0; i < n_out && r == 0; i++) {
        r = hkdf_expand(h, info[i], info_len[i], out[i], out_len[i]);
    }
    if (r != 0) {
        for (i = 0; i < n_out; i++) {
            kc_wipe(out[i], out_len[i]);
        }
    }
    sodium_memzero(h, sizeof(*h));
    sodium_memzero(prk, sizeof(prk));
    return r;
}

int
esdk_hkdf(enum esdk_kdf kdf, const uint8_t *ikm, size_t ikm_len,
          const uint8_t *salt, size_t salt_len, size_t n_out,
          const uint8_t *const *info, const size_t *info_len,
          uint8_t *const *out, const size_t *out_len)
{
    struct hm h;

    if (kdf != ESDK_KDF_HKDF_SHA256 && kdf != ESDK_KDF_HKDF_SHA384 &&
        kdf != ESDK_KDF_HKDF_SHA512) {
        return KC_EINVAL;
    }
    /* PRK = HMAC(salt, ikm); an empty salt is hash-length zeros, which
     * as an HMAC key is the same as no key bytes at all. */
    hm_key(&h, kdf, salt, salt_len);
    return hkdf_keyed(&h, ikm, ikm_len, n_out, info, info_len, out, out_len);
}

void
esdk_hkdf_salt_half(enum esdk_kdf kdf, const uint8_t *salt, size_t salt_len,
                    int half, void *state)
{
    hm_key_half(state, kdf, salt, salt_len, half);
}

int
esdk_hkdf_salted(void *state, const uint8_t *ikm, size_t ikm_len,
                 size_t n_out, const uint8_t *const *info,
                 const size_t *info_len, uint8_t *const *out,
                 const size_t *out_len)
{
    return hkdf_keyed(state, ikm, ikm_len, n_out, info, info_len, out,
                      out_len);
}
#else
void
esdk_hkdf_salt_half(enum esdk_kdf kdf, const uint8_t *salt, size_t salt_len,
                    int half, void *state)
{
    (void)kdf;
    (void)salt;
    (void)salt_len;
    (void)half;
    (void)state;
}

int
esdk_hkdf(enum esdk_kdf kdf, const uint8_t *ikm, size_t ikm_len,
          const uint8_t *salt, size_t salt_len, size_t n_out,
          const uint8_t *const *info, const size_t *info_len,
          uint8_t *const *out, const size_t *out_len)
{
    return hkdf_evp(kdf, ikm, ikm_len, salt, salt_len, n_out, info,
                    info_len, out, out_len);
}
#endif

int
esdk_hkdf_reference(enum esdk_kdf kdf, const uint8_t *ikm, size_t ikm_len,
                    const uint8_t *salt, size_t salt_len, size_t n_out,
                    const uint8_t *const *info, const size_t *info_len,
                    uint8_t *const *out, const size_t *out_len)
{
    return hkdf_evp(kdf, ikm, ikm_len, salt, salt_len, n_out, info,
                    info_len, out, out_len);
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
