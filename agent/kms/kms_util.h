/*
 * kms_util.h - small helpers shared by the KMS signers and providers:
 * name/value pairs, percent-encoding, hex, SHA-256 and HMAC.
 *
 * Pure functions over bytes; thread-safe.  Buffers that may hold secrets
 * (HMAC keys, derived keys) are wiped by the callee before it returns.
 */
#ifndef KC_KMS_UTIL_H
#define KC_KMS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"

/* A header or parameter: both strings borrowed, NUL-terminated. */
struct kms_kv {
    const char *name;
    const char *value;
};

#define KMS_SHA256_LEN 32
#define KMS_SHA1_LEN   20

/*
 * kms_pct_encode - append s (len bytes) to out percent-encoded the way
 * both SigV4 and the Alibaba signatures want: A-Z a-z 0-9 - _ . ~ stay,
 * every other byte is %XY with uppercase hex (space is %20, never +).
 * With keep_slash, '/' also stays (URI paths).  Returns 0 or the
 * kc_buf_put error.
 */
KC_MUST_USE int kms_pct_encode(const char *s, size_t len, bool keep_slash,
                               struct kc_buf *out);

/*
 * kms_pct_decode - decode %XY escapes (and nothing else: '+' stays '+')
 * of s into out.  Returns 0, KC_EINVAL for a bad escape, or a kc_buf
 * error.
 */
KC_MUST_USE int kms_pct_decode(const char *s, size_t len, struct kc_buf *out);

/* kms_hex - lowercase hex of n bytes into out (2n+1 bytes with NUL). */
void kms_hex(const uint8_t *p, size_t n, char *out);

/* kms_sha256 - SHA-256 of n bytes. */
void kms_sha256(const void *p, size_t n, uint8_t out[KMS_SHA256_LEN]);

/* kms_sha256_hex - lowercase hex SHA-256 of n bytes (65 bytes with NUL). */
void kms_sha256_hex(const void *p, size_t n, char out[2 * KMS_SHA256_LEN + 1]);

/*
 * kms_hmac - HMAC with SHA-256 (sha1 false) or SHA-1 (sha1 true) into
 * out (32 or 20 bytes).  Returns 0 or KC_EINVAL when the library fails.
 */
KC_MUST_USE int kms_hmac(bool sha1, const void *key, size_t key_len,
                         const void *msg, size_t msg_len, uint8_t *out);

/* kms_buf_puts - append a NUL-terminated string (without the NUL). */
KC_MUST_USE int kms_buf_puts(struct kc_buf *b, const char *s);

/* kms_buf_cstr - append a NUL so b->data reads as a C string; the NUL is
 * not counted in b->len. */
KC_MUST_USE int kms_buf_cstr(struct kc_buf *b);

#endif /* KC_KMS_UTIL_H */
