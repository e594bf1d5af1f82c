/*
 * esdk_int.h - internals shared by the esdk .c files (not a public API).
 *
 * crypto.c owns every OpenSSL object: algorithm objects are fetched once,
 * lazily, and kept for the life of the process.  Everything else in the
 * library goes through the small helpers below, so a later change (HKDF
 * midstates, pooled randomness) touches crypto.c only.
 */
#ifndef KC_ESDK_INT_H
#define KC_ESDK_INT_H

#include <openssl/evp.h>

#include "esdk.h"

#define ESDK_IV_LEN      12
#define ESDK_TAG_LEN     16
#define ESDK_COMMIT_LEN  32
#define ESDK_MAX_KEY_LEN 32
#define ESDK_U16_MAX     65535u
#define ESDK_MAX_SIG_LEN 160 /* DER ECDSA P-384 is at most 104 bytes */
#define ESDK_MAX_PUB_LEN 49  /* compressed P-384 point */

/* Non-framed content limit from the spec: 2^36 - 32 bytes. */
#define ESDK_NONFRAMED_MAX (((uint64_t)1 << 36) - 32)

/* ---- crypto.c -------------------------------------------------------- */

/*
 * esdk_rand - fill p with n bytes from the CSPRNG (OpenSSL's DRBG, drawn
 * through a per-thread pool: see crypto.c).  0 or KC_ESYS.
 */
KC_MUST_USE int esdk_rand(void *p, size_t n);

/*
 * struct esdk_gcm - one AES-GCM key schedule reused for many IVs (the
 * header tag and every frame of one message).  Init with esdk_gcm_init,
 * always release with esdk_gcm_clear (wipes the schedule).
 */
struct esdk_gcm {
    EVP_CIPHER_CTX *ctx;
    bool enc;
};

/*
 * esdk_gcm_init - key an encryptor (enc) or decryptor.  key_len 16/24/32.
 * Returns 0, KC_EINVAL (length), KC_ENOMEM, KC_EUNSUPPORTED (no cipher).
 */
KC_MUST_USE int esdk_gcm_init(struct esdk_gcm *g, bool enc,
                              const uint8_t *key, size_t key_len);
void esdk_gcm_clear(struct esdk_gcm *g);

/*
 * esdk_gcm_seal - out = GCM(in), tag written.  AAD is aad || aad2 (either
 * may be empty).  in and out may alias exactly.  0 or KC_ESYS.
 */
KC_MUST_USE int esdk_gcm_seal(struct esdk_gcm *g, const uint8_t *iv,
                              const uint8_t *aad, size_t aad_len,
                              const uint8_t *aad2, size_t aad2_len,
                              const uint8_t *in, size_t n, uint8_t *out,
                              uint8_t *tag);

/*
 * esdk_gcm_open - out = GCM^-1(in) when the tag verifies, else KC_EAUTH
 * and out (n bytes) is wiped.  Same AAD rule as esdk_gcm_seal.
 */
KC_MUST_USE int esdk_gcm_open(struct esdk_gcm *g, const uint8_t *iv,
                              const uint8_t *aad, size_t aad_len,
                              const uint8_t *aad2, size_t aad2_len,
                              const uint8_t *in, size_t n, uint8_t *out,
                              const uint8_t *tag);

/*
 * esdk_hkdf - RFC 5869 HKDF with the suite's hash: extract(salt, ikm)
 * once, then expand to each of n_out outputs (info[i], out[i], out_len[i]).
 * salt may be empty (the v1 rule: hash-length zeros).
 * Returns 0, KC_EINVAL, KC_EUNSUPPORTED, KC_ENOMEM, KC_ESYS.  Outputs
 * wiped on error.  Computed on reused HMAC midstates (crypto.c).
 */
KC_MUST_USE int esdk_hkdf(enum esdk_kdf kdf, const uint8_t *ikm,
                          size_t ikm_len, const uint8_t *salt,
                          size_t salt_len, size_t n_out,
                          const uint8_t *const *info, const size_t *info_len,
                          uint8_t *const *out, const size_t *out_len);

/*
 * esdk_hkdf_salt_half - key the HMAC of HKDF's extract with salt into
 * state (ESDK_MSG_START_STATE bytes, 16-aligned), in two calls: half 0
 * the inner pad, half 1 the outer.  Without HMAC midstates (an OpenSSL
 * built without its deprecated digest calls) it does nothing, and
 * esdk_hkdf_salted is not available (ESDK_HKDF_SALTED undefined).
 */
void esdk_hkdf_salt_half(enum esdk_kdf kdf, const uint8_t *salt,
                         size_t salt_len, int half, void *state);

#ifndef OPENSSL_NO_DEPRECATED_3_0
#define ESDK_HKDF_SALTED 1
/*
 * esdk_hkdf_salted - esdk_hkdf with the salt already keyed into state by
 * both halves of esdk_hkdf_salt_half.  state is used up (wiped).
 */
KC_MUST_USE int esdk_hkdf_salted(void *state, const uint8_t *ikm,
                                 size_t ikm_len, size_t n_out,
                                 const uint8_t *const *info,
                                 const size_t *info_len,
                                 uint8_t *const *out, const size_t *out_len);
#endif

/*
 * esdk_derive_keys_started - esdk_derive_keys for a v2 suite with the
 * message ID and salt keying of ms (both halves done).
 */
KC_MUST_USE int esdk_derive_keys_started(const struct esdk_suite *s,
                                         const uint8_t *data_key,
                                         size_t dk_len,
                                         struct esdk_msg_start *ms,
                                         uint8_t *key_out,
                                         uint8_t *commit_out);

/*
 * esdk_hkdf_reference - the same through OpenSSL's EVP_KDF "HKDF" with a
 * fresh context per call: the slow, independent implementation the unit
 * tests compare esdk_hkdf against.  Same returns.
 */
KC_MUST_USE int esdk_hkdf_reference(enum esdk_kdf kdf, const uint8_t *ikm,
                                    size_t ikm_len, const uint8_t *salt,
                                    size_t salt_len, size_t n_out,
                                    const uint8_t *const *info,
                                    const size_t *info_len,
                                    uint8_t *const *out,
                                    const size_t *out_len);

/* ECDSA over the suite's curve and hash.  EVP_PKEY is freed by
 * EVP_PKEY_free. */
KC_MUST_USE int esdk_sig_keygen(int nid, EVP_PKEY **out);

/*
 * esdk_sig_pub_b64 - the compressed public point, base64 (NUL-terminated)
 * into b64 (at least 80 bytes).  Returns 0, KC_ESYS.
 */
KC_MUST_USE int esdk_sig_pub_b64(EVP_PKEY *key, int nid, char *b64,
                                 size_t b64_size, size_t *b64_len);

/*
 * esdk_sig_pub_from_b64 - import a compressed point (base64) on curve nid.
 * Returns 0 or KC_EFORMAT (bad base64, length or point), KC_ENOMEM.
 */
KC_MUST_USE int esdk_sig_pub_from_b64(int nid, const uint8_t *b64,
                                      size_t b64_len, EVP_PKEY **out);

/* esdk_sig_sign - DER signature of m into sig (ESDK_MAX_SIG_LEN bytes). */
KC_MUST_USE int esdk_sig_sign(EVP_PKEY *key, int nid, const uint8_t *m,
                              size_t n, uint8_t *sig, size_t *sig_len);

/* esdk_sig_verify - 0 when sig is a valid signature of m, else KC_EAUTH. */
KC_MUST_USE int esdk_sig_verify(EVP_PKEY *key, int nid, const uint8_t *m,
                                size_t n, const uint8_t *sig,
                                size_t sig_len);

/* ---- ec.c ------------------------------------------------------------ */

/*
 * esdk_ec_append - append a pair without the duplicate search (the caller
 * detects duplicates later through esdk_ec_serialize, which sorts).  Keys
 * may be empty here: the reader accepts whatever the format allows.
 * Returns 0, KC_ECONTEXT (not UTF-8), KC_ETOOBIG, KC_ENOMEM.
 */
KC_MUST_USE int esdk_ec_append(struct esdk_ec *ec, const void *key,
                               size_t key_len, const void *val,
                               size_t val_len);

/* ---- header.c -------------------------------------------------------- */

/* esdk_limits_effective - lim with zero fields replaced by the defaults
 * (see esdk.h); NULL lim gives the defaults. */
void esdk_limits_effective(const struct esdk_limits *lim,
                           struct esdk_limits *eff);

/* ---- frame AAD (shared by reader and writer) ------------------------- */

enum esdk_body_kind {
    ESDK_BODY_FRAME,
    ESDK_BODY_FINAL,
    ESDK_BODY_SINGLE,
};

/* Largest body AAD: 32 id + 34 string + 4 seq + 8 len. */
#define ESDK_BODY_AAD_MAX 80

/* esdk_body_aad - build the body AAD into aad; returns its length. */
size_t esdk_body_aad(uint8_t *aad, const uint8_t *msg_id, size_t id_len,
                     enum esdk_body_kind kind, uint32_t seq, uint64_t len);

/* esdk_frame_iv - the derived frame IV 00*8 || u32 seq. */
void esdk_frame_iv(uint8_t *iv, uint32_t seq);

#endif /* KC_ESDK_INT_H */
