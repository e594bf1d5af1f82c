/*
 * esdk.h - the AWS Encryption SDK message format: encryption contexts,
 * encrypted data keys, the message writer and reader, and the raw AES
 * keyring's wrapping of data keys.  Pure functions over bytes: no I/O, no
 * sockets, no provider calls.
 *
 * Every function returns 0 or a negative KC_E* code (proto/kc_err.h).
 * Nothing here is thread-safe unless said so; the agent is single-threaded.
 * Buffers that receive plaintext or key bytes are struct kc_buf, which
 * wipes on free; on any failure such outputs are cleared.
 */
#ifndef KC_ESDK_H
#define KC_ESDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"
#include "kc_err.h"

/* Algorithm suite IDs (FORMATS.md section 1). */
#define ESDK_SUITE_AES128_GCM_IV12_TAG16              0x0014
#define ESDK_SUITE_AES192_GCM_IV12_TAG16              0x0046
#define ESDK_SUITE_AES256_GCM_IV12_TAG16              0x0078
#define ESDK_SUITE_AES128_HKDF_SHA256                 0x0114
#define ESDK_SUITE_AES192_HKDF_SHA256                 0x0146
#define ESDK_SUITE_AES256_HKDF_SHA256                 0x0178
#define ESDK_SUITE_AES128_HKDF_SHA256_ECDSA_P256      0x0214
#define ESDK_SUITE_AES192_HKDF_SHA384_ECDSA_P384      0x0346
#define ESDK_SUITE_AES256_HKDF_SHA384_ECDSA_P384      0x0378
#define ESDK_SUITE_AES256_HKDF_SHA512_COMMIT          0x0478
#define ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384     0x0578

#define ESDK_DEFAULT_FRAME_LEN 4096
#define ESDK_PUBKEY_EC_KEY     "aws-crypto-public-key"
#define ESDK_RESERVED_PREFIX   "aws-crypto-"

enum esdk_kdf {
    ESDK_KDF_IDENTITY,
    ESDK_KDF_HKDF_SHA256,
    ESDK_KDF_HKDF_SHA384,
    ESDK_KDF_HKDF_SHA512,
};

struct esdk_suite {
    uint16_t id;
    uint8_t version;      /* message format version: 1 or 2 */
    uint8_t key_len;      /* data key and content key length, bytes */
    enum esdk_kdf kdf;
    bool committing;      /* v2: 32-byte commitment key in the header */
    int sig_nid;          /* OpenSSL curve NID, 0 when not signing */
    const char *name;     /* e.g. "AES_256_GCM_HKDF_SHA512_COMMIT_KEY" */
};

/*
 * esdk_suite_get - the suite with this ID, or NULL for unknown IDs
 * (including 0x0000 and the S3EC/DBE suites).  Thread-safe.
 */
const struct esdk_suite *esdk_suite_get(uint16_t id);

/* ---- encryption context --------------------------------------------- */

struct esdk_ec_pair {
    uint8_t *key; /* owned (or borrowed), not NUL-terminated */
    size_t key_len;
    uint8_t *val; /* owned (or borrowed), not NUL-terminated */
    size_t val_len;
};

struct esdk_ec {
    struct esdk_ec_pair *pairs; /* owned; in insertion order */
    size_t n;
    bool borrowed; /* pairs point at the caller's bytes, never written */
};

void esdk_ec_init(struct esdk_ec *ec);
/*
 * esdk_ec_init_borrowed - like esdk_ec_init, but esdk_ec_add keeps
 * pointers to the caller's bytes instead of copies: they must outlive ec.
 * For a context read from a request and used while the request runs;
 * anything that keeps a context longer copies it into an owned one.
 */
void esdk_ec_init_borrowed(struct esdk_ec *ec);
/* esdk_ec_clear - free every pair; ec is empty and reusable (in the same
 * mode). */
void esdk_ec_clear(struct esdk_ec *ec);

/*
 * esdk_ec_add - add a pair (a copy, unless borrowed).  Returns
 * KC_ECONTEXT for a duplicate key,
 * an empty key, or a key/value that is not valid UTF-8; KC_ETOOBIG past
 * 65535 bytes for a key or value; KC_ENOMEM.
 */
KC_MUST_USE int esdk_ec_add(struct esdk_ec *ec, const void *key,
                            size_t key_len, const void *val, size_t val_len);

/* esdk_ec_get - borrow the value for key, or NULL when absent. */
const struct esdk_ec_pair *esdk_ec_get(const struct esdk_ec *ec,
                                       const void *key, size_t key_len);

/*
 * esdk_ec_check_caller - refuse keys a caller may not set (prefix
 * "aws-crypto-").  Returns 0 or KC_ECONTEXT.
 */
KC_MUST_USE int esdk_ec_check_caller(const struct esdk_ec *ec);

/*
 * esdk_ec_contains - true when every pair of want is in have with an
 * equal value.
 */
bool esdk_ec_contains(const struct esdk_ec *have, const struct esdk_ec *want);

/*
 * esdk_ec_serialize - canonical serialization appended to out: empty for
 * an empty context, else u16 count || pairs sorted by key bytes.  This is
 * both the header's AAD block and the raw AES keyring's wrapping AAD.
 * Returns 0, KC_ETOOBIG (over 65535 bytes or pairs), KC_ENOMEM.
 */
KC_MUST_USE int esdk_ec_serialize(const struct esdk_ec *ec,
                                  struct kc_buf *out);

/* esdk_ec_serialized_len - bytes esdk_ec_serialize would append (0 for an
 * empty context), or SIZE_MAX when that is over 65535. */
size_t esdk_ec_serialized_len(const struct esdk_ec *ec);

/*
 * esdk_ec_serialize_to - the same bytes into dst (cap bytes), *len set:
 * for callers that serialize into a buffer of their own, e.g. on the
 * stack.  Returns 0, KC_ETOOBIG (over cap or 65535), KC_ECONTEXT
 * (duplicate key), KC_ENOMEM.
 */
KC_MUST_USE int esdk_ec_serialize_to(const struct esdk_ec *ec, uint8_t *dst,
                                     size_t cap, size_t *len);

/* ---- encrypted data keys -------------------------------------------- */

struct esdk_edk {
    uint8_t *provider_id; /* owned */
    size_t provider_id_len;
    uint8_t *provider_info; /* owned */
    size_t provider_info_len;
    uint8_t *ciphertext; /* owned */
    size_t ciphertext_len;
};

struct esdk_edk_list {
    struct esdk_edk *v; /* owned */
    size_t n;
};

void esdk_edk_list_init(struct esdk_edk_list *l);
void esdk_edk_list_clear(struct esdk_edk_list *l);
/* esdk_edk_list_add - copy an EDK in.  KC_ETOOBIG for a field > 65535. */
KC_MUST_USE int esdk_edk_list_add(struct esdk_edk_list *l, const void *pid,
                                  size_t pid_len, const void *info,
                                  size_t info_len, const void *ct,
                                  size_t ct_len);
/* esdk_edk_list_copy - deep copy of src appended to dst. */
KC_MUST_USE int esdk_edk_list_copy(struct esdk_edk_list *dst,
                                   const struct esdk_edk_list *src);

/* ---- writer ---------------------------------------------------------- */

struct esdk_enc; /* opaque: one message being written */

/*
 * esdk_enc_new - start a message under suite (0x0478 or 0x0578; others
 * give KC_EUNSUPPORTED) with the caller's context ec (borrowed; must pass
 * esdk_ec_check_caller, else KC_ECONTEXT).  For a signing suite a fresh
 * ECDSA key pair is made and its public key added to the message context.
 * On success *out is owned by the caller: esdk_enc_free.
 */
KC_MUST_USE int esdk_enc_new(uint16_t suite, const struct esdk_ec *ec,
                             struct esdk_enc **out);

/*
 * esdk_enc_wrapping_aad - borrow the canonical serialization of the full
 * message context (caller pairs plus any aws-crypto-public-key): the AAD
 * a keyring must use to wrap the data key for this message.
 */
void esdk_enc_wrapping_aad(const struct esdk_enc *enc, const uint8_t **p,
                           size_t *len);

/*
 * esdk_enc_finish - write the whole message (header, framed body with
 * frame_len bytes per frame, footer for signing suites) to out.
 * data_key (dk_len must equal the suite's key length) and edks (at least
 * one) are borrowed.  Returns 0, KC_EINVAL, KC_ETOOBIG, KC_ENOMEM.
 */
KC_MUST_USE int esdk_enc_finish(struct esdk_enc *enc, const uint8_t *data_key,
                                size_t dk_len,
                                const struct esdk_edk_list *edks,
                                uint32_t frame_len, const uint8_t *pt,
                                size_t pt_len, struct kc_buf *out);

/* esdk_enc_free - wipe and free (signing key included).  NULL is a no-op. */
void esdk_enc_free(struct esdk_enc *enc);

/*
 * Per-data-key header templates.  For the non-signing suite 0x0478 every
 * message under one data key has the same header except its message ID
 * and commitment key: version, suite, the serialized context, the EDKs,
 * content type and frame length are fixed.  A template holds those bytes
 * serialized once (build it when a data key is cached, keep it with the
 * key), so each message costs only: 32 random bytes, HKDF, and AES-GCM
 * over the header and body.  Templates hold no secret (context and EDKs
 * are public in every message).
 */
struct esdk_tmpl; /* opaque */

/*
 * esdk_tmpl_new - the template for messages under suite with the caller's
 * context ec (borrowed; must pass esdk_ec_check_caller) and edks (at
 * least one; borrowed, copied into the template), frame_len bytes per
 * frame.  Returns 0 with *out (esdk_tmpl_free), KC_EUNSUPPORTED for a
 * signing suite or any suite but 0x0478 (use esdk_enc_new), KC_EINVAL,
 * KC_ECONTEXT, KC_ETOOBIG, KC_ENOMEM.
 */
KC_MUST_USE int esdk_tmpl_new(uint16_t suite, const struct esdk_ec *ec,
                              const struct esdk_edk_list *edks,
                              uint32_t frame_len, struct esdk_tmpl **out);

/*
 * esdk_tmpl_new_in - esdk_tmpl_new, but the template is built in the
 * caller's room (room_len bytes, pointer-aligned) when it fits there;
 * *out == room tells.  Such a template is the caller's memory: never
 * pass it to esdk_tmpl_free.
 */
KC_MUST_USE int esdk_tmpl_new_in(uint16_t suite, const struct esdk_ec *ec,
                                 const struct esdk_edk_list *edks,
                                 uint32_t frame_len, void *room,
                                 size_t room_len, struct esdk_tmpl **out);

/*
 * esdk_tmpl_encrypt - append one whole message (fresh message ID, header
 * from t, framed body) for pt to out; byte-for-byte what esdk_enc_new +
 * esdk_enc_finish would write with the same ID.  data_key (dk_len = the
 * suite's key length) is borrowed.  Returns 0, KC_EINVAL, KC_ETOOBIG,
 * KC_ENOMEM, KC_ESYS; on failure out is as it was.
 */
KC_MUST_USE int esdk_tmpl_encrypt(const struct esdk_tmpl *t,
                                  const uint8_t *data_key, size_t dk_len,
                                  const uint8_t *pt, size_t pt_len,
                                  struct kc_buf *out);

/*
 * A message begun before its data key is at hand.  Under suite 0x0478 the
 * key derivation's salt is the message ID, so drawing the ID and keying
 * HMAC with it (two of the ten SHA-512 compressions of a message's HKDF)
 * need no data key.  A caller that must first look its key up in memory
 * that is likely cold does this meanwhile, in two halves placed around
 * its memory reads, and loses no time waiting for them.  Holds no secret:
 * the message ID is sent in the header.
 *
 * One begin serves one message.  Never copy a begun start: a copy used
 * again would give a second message the same ID, hence under the same
 * data key the same content key and GCM nonces.  The caller's storage,
 * borrowed by each call; not shared between threads.
 */
#define ESDK_MSG_START_STATE 512

enum esdk_msg_stage {
    ESDK_MSG_UNUSED,   /* not begun, or used up */
    ESDK_MSG_BEGUN,
    ESDK_MSG_FINISHED,
};

struct esdk_msg_start {
    uint16_t suite;
    uint8_t stage; /* enum esdk_msg_stage */
    uint8_t kdf;   /* the suite's enum esdk_kdf */
    uint8_t msg_id[32];
    _Alignas(16) unsigned char salt[ESDK_MSG_START_STATE]; /* crypto.c */
};

/*
 * esdk_msg_start_begin - draw the message ID and do the first half.
 * Returns 0, KC_EINVAL (ms NULL), KC_EUNSUPPORTED (a suite whose
 * derivation is not salted with the message ID: format version 1),
 * KC_ESYS.
 */
KC_MUST_USE int esdk_msg_start_begin(uint16_t suite,
                                     struct esdk_msg_start *ms);

/* esdk_msg_start_finish - the second half; a no-op unless just begun. */
void esdk_msg_start_finish(struct esdk_msg_start *ms);

/*
 * esdk_tmpl_encrypt_started - esdk_tmpl_encrypt with the message ID of
 * ms, begun for t's suite (finished here if need be).  ms is used up,
 * whatever the outcome, and holds nothing secret after.  Same returns;
 * KC_EINVAL for an ms NULL, not begun, or begun for another suite.
 */
KC_MUST_USE int esdk_tmpl_encrypt_started(const struct esdk_tmpl *t,
                                          struct esdk_msg_start *ms,
                                          const uint8_t *data_key,
                                          size_t dk_len, const uint8_t *pt,
                                          size_t pt_len, struct kc_buf *out);

/* esdk_tmpl_msg_len - exact length of a message for pt_len bytes. */
size_t esdk_tmpl_msg_len(const struct esdk_tmpl *t, size_t pt_len);

/* esdk_tmpl_frame_len - the frame length t writes (so a holder can
 * rebuild it after a configuration change). */
uint32_t esdk_tmpl_frame_len(const struct esdk_tmpl *t);

/* esdk_tmpl_free - free a template.  NULL is a no-op. */
void esdk_tmpl_free(struct esdk_tmpl *t);

/*
 * esdk_rand_shutdown - wipe and unmap this thread's randomness pool (at
 * exit; a later draw makes a new one).  Thread-safe per thread.
 */
void esdk_rand_shutdown(void);

/* ---- reader ---------------------------------------------------------- */

struct esdk_limits {
    size_t max_edks;       /* most EDKs accepted in a header (0 = 65535) */
    size_t max_frame_len;  /* largest frame length accepted */
    size_t max_message;    /* largest whole message accepted */
    uint64_t max_frames;   /* most body frames accepted */
    bool allow_legacy;     /* accept suites without key commitment */
};

/* esdk_limits_default - sane limits: 16 EDKs, 1 MiB frames, 64 MiB
 * messages, 2^20 frames, no legacy suites.  In a caller's struct, a zero
 * max_frame_len, max_message or max_frames means that default (never
 * "unlimited"); a NULL lim means all defaults. */
void esdk_limits_default(struct esdk_limits *lim);

struct esdk_header {
    const struct esdk_suite *suite;
    uint8_t message_id[32];
    size_t message_id_len;     /* 16 (v1) or 32 (v2) */
    struct esdk_ec ec;         /* as stored, order preserved */
    struct kc_buf ec_canonical; /* sorted serialization: wrapping AAD */
    struct esdk_edk_list edks;
    uint8_t content_type;      /* 1 non-framed, 2 framed */
    uint32_t frame_len;
    uint8_t commitment[32];    /* v2 only */
    size_t body_off;           /* offset just past the header + auth tag */
    /* Added by the esdk implementation: */
    size_t header_len;         /* bytes of header body (covered by tag) */
    uint8_t header_iv[12];     /* v1: stored IV; v2: zeros */
    uint8_t header_tag[16];
};

/*
 * esdk_header_parse - parse and sanity-check the header of msg (borrowed)
 * without any key: version, suite (unknown: KC_EFORMAT; not committing and
 * !lim->allow_legacy: KC_EUNSUPPORTED naming nothing secret), EDK count
 * against lim->max_edks before reading further, content type, frame
 * length, EC duplicates.  Returns 0 with *out owned by the caller
 * (esdk_header_free), or KC_EFORMAT, KC_EUNSUPPORTED, KC_ETOOBIG,
 * KC_ENOMEM.
 */
KC_MUST_USE int esdk_header_parse(const uint8_t *msg, size_t len,
                                  const struct esdk_limits *lim,
                                  struct esdk_header **out);

void esdk_header_free(struct esdk_header *h);

/*
 * esdk_decrypt - with the unwrapped data key, verify the key commitment
 * (v2, constant time, before anything else), the header tag, every frame
 * tag and the footer signature (signing suites), then write the plaintext
 * to pt.  pt is emptied first (its max is kept and also limits the
 * plaintext); it holds plaintext only if everything verifies, and is
 * wiped and emptied on any failure.  msg must be the bytes given to
 * esdk_header_parse for h.
 * Returns 0, KC_EAUTH (commitment, tag or signature mismatch), KC_EFORMAT
 * (bad body or footer, trailing bytes), KC_ETOOBIG (over lim), KC_ENOMEM.
 */
KC_MUST_USE int esdk_decrypt(const struct esdk_header *h, const uint8_t *msg,
                             size_t len, const uint8_t *data_key,
                             size_t dk_len, const struct esdk_limits *lim,
                             struct kc_buf *pt);

/*
 * esdk_decrypt_required - esdk_decrypt for messages written with the
 * required-encryption-context CMM (FORMATS.md 3.2): req_ser (borrowed,
 * may be NULL when req_len is 0) is the canonical serialization
 * (esdk_ec_serialize) of the required pairs the caller reproduces, which
 * the writer left out of the stored context and appended to the header
 * AAD.  esdk_decrypt is this with req_len 0.  The data key must have been
 * unwrapped with the full context (stored pairs plus required pairs).
 * Same returns as esdk_decrypt.
 */
KC_MUST_USE int esdk_decrypt_required(const struct esdk_header *h,
                                      const uint8_t *msg, size_t len,
                                      const uint8_t *data_key, size_t dk_len,
                                      const uint8_t *req_ser, size_t req_len,
                                      const struct esdk_limits *lim,
                                      struct kc_buf *pt);

/*
 * esdk_derive_keys - the suite's key derivation (FORMATS.md section 4):
 * key_out (suite key_len bytes) from data_key and the message ID, and for
 * committing suites commit_out (32 bytes; may be NULL otherwise).  For
 * tests and tools; the reader and writer use it internally.  Returns 0,
 * KC_EINVAL (lengths), KC_EUNSUPPORTED, KC_ENOMEM.  Outputs are wiped on
 * failure.
 */
KC_MUST_USE int esdk_derive_keys(const struct esdk_suite *s,
                                 const uint8_t *data_key, size_t dk_len,
                                 const uint8_t *msg_id, size_t id_len,
                                 uint8_t *key_out, uint8_t *commit_out);

/* ---- raw AES keyring (FORMATS.md section 5) -------------------------- */

/*
 * rawaes_wrap - wrap data_key under the wrapping key wkey (16, 24 or 32
 * bytes) with AAD = ec_ser (canonical context), random IV; append the EDK
 * {provider id = ns, info = name || 00000080 || 0000000C || IV,
 *  ciphertext = ct || tag} to out.
 */
KC_MUST_USE int rawaes_wrap(const uint8_t *wkey, size_t wkey_len,
                            const char *ns, const char *name,
                            const uint8_t *ec_ser, size_t ec_len,
                            const uint8_t *data_key, size_t dk_len,
                            struct esdk_edk_list *out);

/* rawaes_edk_matches - true when edk names this namespace and key name and
 * has the 128-bit tag / 12-byte IV layout. */
bool rawaes_edk_matches(const char *ns, const char *name,
                        const struct esdk_edk *edk);

/*
 * rawaes_unwrap - unwrap edk into dk_out (dk_len bytes, caller's locked
 * memory).  Returns KC_ENODATAKEY when the EDK is not ours (see
 * rawaes_edk_matches) or has the wrong length, KC_EAUTH when the GCM tag
 * fails (dk_out is then zeroed).
 */
KC_MUST_USE int rawaes_unwrap(const uint8_t *wkey, size_t wkey_len,
                              const char *ns, const char *name,
                              const struct esdk_edk *edk,
                              const uint8_t *ec_ser, size_t ec_len,
                              uint8_t *dk_out, size_t dk_len);

#endif /* KC_ESDK_H */
