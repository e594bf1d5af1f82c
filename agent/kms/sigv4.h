/*
 * sigv4.h - AWS Signature Version 4 (header form), as KMS wants it.
 *
 * The caller chooses the headers to sign and passes all of them (host,
 * x-amz-date, content-type, x-amz-target, x-amz-security-token when a
 * session token is used); sigv4_sign builds the canonical request and
 * string to sign and returns the Authorization header value.  Reference:
 * the AWS SigV4 documentation and test suite (../shared/vectors/sigv4).
 *
 * Thread-safe; no I/O.  The secret and the derived signing keys are
 * wiped before return.
 */
#ifndef KC_SIGV4_H
#define KC_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"
#include "kms_util.h"

#define SIGV4_MAX_HEADERS 32

struct sigv4_input {
    const char *method;        /* "POST" */
    const char *path;          /* "/" (already a valid URI path) */
    const char *query;         /* "a=b&c=d" as sent, or NULL */
    const struct kms_kv *headers; /* every header to sign; borrowed */
    size_t nheaders;
    const uint8_t *body;       /* may be NULL when body_len is 0 */
    size_t body_len;
    const char *access_key;
    const char *secret;
    const char *region;        /* "eu-west-1" */
    const char *service;       /* "kms" */
    const char *amz_date;      /* "YYYYMMDDTHHMMSSZ", also in headers */
};

struct sigv4_output {
    struct kc_buf creq;        /* canonical request (caller inits/clears) */
    struct kc_buf sts;         /* string to sign (caller inits/clears) */
    char signature[65];        /* lowercase hex */
};

/*
 * sigv4_sign - sign in; the Authorization value ("AWS4-HMAC-SHA256
 * Credential=..., SignedHeaders=..., Signature=...") is appended to
 * authz as a C string.  out may be NULL when the intermediate strings
 * are not wanted.  Returns 0, KC_EINVAL (too many headers, bad date,
 * bad escape in the query), KC_ENOMEM / KC_ETOOBIG from the buffers.
 */
KC_MUST_USE int sigv4_sign(const struct sigv4_input *in,
                           struct sigv4_output *out, struct kc_buf *authz);

#endif /* KC_SIGV4_H */
