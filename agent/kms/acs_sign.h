/*
 * acs_sign.h - Alibaba Cloud API request signatures, both schemes KMS
 * accepts:
 *
 *  - V3 "ACS3-HMAC-SHA256": an Authorization header over a canonical
 *    request (method, path, sorted query, host/content-type/x-acs-*
 *    headers, payload hash); what current Alibaba SDKs send.
 *  - RPC v1 ("SignatureVersion 1.0", HMAC-SHA1): a Signature parameter
 *    over the sorted, percent-encoded parameters; the older scheme.
 *
 * Rules and known answers: ../shared/KMS-APIS.md section 1.3/1.4 and
 * ../shared/vectors/alibaba-signature.  Thread-safe; no I/O; HMAC keys
 * are wiped before return.
 */
#ifndef KC_ACS_SIGN_H
#define KC_ACS_SIGN_H

#include <stddef.h>

#include "kc_buf.h"
#include "kms_util.h"

#define ACS_MAX_PARAMS  32
#define ACS_MAX_HEADERS 32

/*
 * acs_canonical_query - params (borrowed) percent-encoded as name=value,
 * sorted by encoded name, joined with '&', appended to out.  This is
 * both the V3 canonical query and the v1 canonicalized query string, and
 * a valid URL query.  Returns 0, KC_EINVAL (too many), or a kc_buf error.
 */
KC_MUST_USE int acs_canonical_query(const struct kms_kv *params, size_t n,
                                    struct kc_buf *out);

/*
 * acs_v1_signature - RPC v1: base64(HMAC-SHA1(secret + "&", method + "&"
 * + "%2F" + "&" + enc(canonical query))) into sig (29 bytes with NUL).
 * params must not contain Signature.  sts, when not NULL, receives the
 * string to sign.  Returns 0, KC_EINVAL, or a kc_buf error.
 */
KC_MUST_USE int acs_v1_signature(const char *method,
                                 const struct kms_kv *params, size_t n,
                                 const char *secret, struct kc_buf *sts,
                                 char sig[29]);

struct acs_v3_input {
    const char *method;           /* "POST" */
    const char *path;             /* "/" */
    const struct kms_kv *params;  /* query parameters (raw values) */
    size_t nparams;
    const struct kms_kv *headers; /* every header to sign */
    size_t nheaders;
    const char *payload_hash;     /* lowercase hex SHA-256 of the body */
    const char *access_key;
    const char *secret;
};

/*
 * acs_v3_sign - ACS3-HMAC-SHA256.  Appends the Authorization value to
 * authz as a C string; creq (may be NULL) receives the canonical request;
 * sig the lowercase hex signature.  Headers whose names differ only in
 * case are merged, their values sorted and joined with ','.  Returns 0,
 * KC_EINVAL, or a kc_buf error.
 */
KC_MUST_USE int acs_v3_sign(const struct acs_v3_input *in, struct kc_buf *creq,
                            char sig[65], struct kc_buf *authz);

#endif /* KC_ACS_SIGN_H */
