/*
 * kms.h - what the two remote KMS providers (aws_kms.c, alibaba_kms.c)
 * share: credentials, the client object that is their struct provider,
 * and one KMS call with deadline, retries and backoff (kms_call.c).
 *
 * A call runs up to KMS_MAX_ATTEMPTS HTTP attempts, each signed afresh.
 * It retries only transient failures (connect errors, timeouts, resets,
 * truncated bodies, HTTP 5xx, the provider's throttling codes), waiting
 * a full-jitter exponential backoff or the server's Retry-After, and
 * never past the key's request_timeout, which bounds the whole call.
 * Every attempt is counted in provider_calls, every failed attempt in
 * provider_errors.  A call's result reaches the caller through the
 * provider_done_fn only, always from the loop.
 *
 * Not thread-safe (the agent is single-threaded).
 */
#ifndef KC_KMS_H
#define KC_KMS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "kms_util.h"
#include "keyring.h"
#include "provider.h"

#define KMS_MAX_ATTEMPTS    3
#define KMS_BACKOFF_BASE_MS 100  /* first retry waits up to this */
#define KMS_BACKOFF_CAP_MS  2000 /* no single wait longer, Retry-After aside */
#define KMS_MAX_HEADERS     16

/* ---- credentials ------------------------------------------------------ */

/*
 * Access key, secret and optional session token, in one sodium_malloc
 * block (locked, guard pages, wiped on free).  Never logged.
 */
struct kms_creds {
    char *access_key;
    char *secret;
    char *token; /* NULL when none */
    void *block;
    char source[160]; /* where they came from, for the log (no secrets) */
};

/*
 * kms_creds_load_aws / kms_creds_load_alibaba - resolve credentials for
 * key k: the key's credentials_file (profile from the config, else the
 * provider's profile variable, else "default"), else the provider's
 * environment variables, else the provider's default shared file.
 * Returns 0, or KC_ECONFIG with a reason in err (never a secret).
 */
KC_MUST_USE int kms_creds_load_aws(const struct key_config *k,
                                   struct kms_creds *c, char *err,
                                   size_t errlen);
KC_MUST_USE int kms_creds_load_alibaba(const struct key_config *k,
                                       struct kms_creds *c, char *err,
                                       size_t errlen);

/* kms_creds_clear - wipe and free; safe on a zeroed struct. */
void kms_creds_clear(struct kms_creds *c);

/* ---- one call --------------------------------------------------------- */

enum kms_op {
    KMS_OP_GENERATE,
    KMS_OP_ENCRYPT,
    KMS_OP_DECRYPT,
    KMS_OP_DESCRIBE, /* DescribeKey: resolve key_id (alibaba) */
};

struct kms_client;
struct kms_call;

/* One attempt's HTTP request as a backend builds it. */
struct kms_wire {
    struct kc_buf url;                  /* C string */
    struct kc_buf body;                 /* may hold key bytes: wiped */
    struct kc_buf hdr[KMS_MAX_HEADERS]; /* "Name: value" C strings */
    size_t nhdr;
};

struct kms_backend {
    const char *name; /* provider id in EDKs too: "aws-kms" */

    /* Sign and lay out the next attempt of c into w (initialized). */
    int (*build)(struct kms_client *k, const struct kms_call *c,
                 struct kms_wire *w);

    /* Error code says "slow down": retry with backoff. */
    bool (*is_throttle)(const char *code);

    /* Error code says the ciphertext does not open under this key
     * or context (KC_EAUTH: the reader may try another EDK). */
    bool (*is_bad_ciphertext)(const char *code);

    /* Error body: fill perr's code, message and request id. */
    void (*parse_error)(json_t *root, struct provider_error *perr);

    /* Success body: take the data key and/or the EDK.  Returns 0,
     * KC_EPROVIDER (with c->err.message) for a malformed answer, or
     * KC_EAUTH (with c->err.code and message) when a Decrypt answer
     * names another key than c->expect_key. */
    int (*parse_ok)(struct kms_client *k, struct kms_call *c, json_t *root);
};

/*
 * kms_backend_aws / kms_backend_alibaba - the two backends, for code that
 * reads KMS answers outside a call (the response fuzz target).
 */
const struct kms_backend *kms_backend_aws(void);
const struct kms_backend *kms_backend_alibaba(void);

/*
 * The provider object of both KMS providers.  It owns the HTTP multi
 * handle, the credentials and every call in the air.
 */
struct kms_client {
    struct provider p; /* first: we cast between the two */
    const struct kms_backend *be;
    struct http *http;
    struct kms_creds creds;
    char *url;         /* "https://host[:port]/" */
    char *host;        /* "host[:port]" as sent in Host */
    char resolved[256]; /* key id/ARN the KMS reported for key_id */
    bool by_alias;      /* key_id does not name one key: see the providers */
    bool resolving;     /* a DescribeKey for key_id is in the air */
    struct provider_error resolve_err; /* that DescribeKey's error */
    struct kms_call *calls;
};

struct kms_call {
    struct kms_client *k;
    enum kms_op op;
    const char *action;        /* "GenerateDataKey", "Encrypt", "Decrypt" */
    json_t *ec;                /* the encryption context, owned */
    char *key_id;              /* KeyId to send, or NULL */
    char *expect_key;          /* decrypt: key the answer must name, or NULL */
    bool parked;               /* created, not sent: see kms_call_release */
    bool releasing;            /* kms_call_release is settling it */
    struct kc_buf blob;        /* decrypt: the EDK ciphertext */
    struct kc_buf pt_b64;      /* encrypt: base64 of the data key, C string */
    size_t dk_len;
    uint8_t *dk_out;           /* generate/decrypt: borrowed until done */
    struct esdk_edk_list *edks; /* generate/encrypt: borrowed until done */
    struct provider_error *perr; /* borrowed, may be NULL */
    struct provider_error err; /* the last attempt's error */
    provider_done_fn done;
    void *arg;
    int attempt;               /* attempts started */
    uint64_t deadline_ms;      /* monotonic */
    struct event *timer;       /* backoff */
    struct http_xfer *xfer;
    struct kms_call *prev;
    struct kms_call *next;
};

/*
 * kms_client_new - a client with the shared parts set for key
 * (retained): provider ops and counters, endpoint (key->endpoint, else
 * default_url), HTTP layer, jansson's wiping allocator.  The caller then
 * loads (*out)->creds and frees with kms_client_free on failure.
 * Returns 0, KC_ECONFIG (bad endpoint; reason in err), KC_ENOMEM.
 */
KC_MUST_USE int kms_client_new(const struct provider_ops *ops,
                               const struct kms_backend *be,
                               const struct key_config *key,
                               struct key_counters *counters,
                               struct event_base *base,
                               const char *default_url,
                               struct kms_client **out, char *err,
                               size_t errlen);

/* kms_client_free - cancel every call, parked ones too (no callbacks),
 * free k.  NULL is a no-op. */
void kms_client_free(struct kms_client *k);

/* kms_provider_free - the provider_ops free of every KMS provider. */
void kms_provider_free(struct provider *p);

/*
 * kms_provider_generate / kms_provider_wrap - the provider_ops generate
 * and wrap of every KMS provider: GenerateDataKey and Encrypt under the
 * configured key_id (the backend lays out the request).
 */
int kms_provider_generate(struct provider *p, const struct esdk_ec *ec,
                          const uint8_t *ec_ser, size_t ec_len,
                          uint8_t *dk_out, size_t dk_len,
                          struct esdk_edk_list *edks,
                          struct provider_error *perr, provider_done_fn done,
                          void *arg);
int kms_provider_wrap(struct provider *p, const struct esdk_ec *ec,
                      const uint8_t *ec_ser, size_t ec_len, const uint8_t *dk,
                      size_t dk_len, struct esdk_edk_list *edks,
                      struct provider_error *perr, provider_done_fn done,
                      void *arg);

/* What one call is to do (kms_call_start_ex); unused fields zero. */
struct kms_call_args {
    enum kms_op op;
    const char *key_id;     /* KeyId to send, or NULL */
    const char *expect_key; /* decrypt: the key the answer must name
                             * (else KC_EAUTH), or NULL */
    const struct esdk_ec *ec;
    const uint8_t *blob;    /* decrypt: the EDK ciphertext */
    size_t blob_len;
    const uint8_t *dk;      /* encrypt: the data key */
    uint8_t *dk_out;        /* generate/decrypt: borrowed until done */
    size_t dk_len;
    struct esdk_edk_list *edks; /* generate/encrypt: borrowed until done */
    bool park;              /* create the call but send nothing until
                             * kms_call_release (needs expect_key) */
};

/*
 * kms_call_start_ex - run one KMS operation for a provider entry point.
 * ec is copied; key_id, expect_key, blob and dk are copied as needed.
 * Returns PROVIDER_PENDING (done will be called from the loop), or a
 * negative KC_E* when it could not start (done is then never called).
 * A parked call's deadline runs from now, parked time included.
 */
int kms_call_start_ex(struct kms_client *k, const struct kms_call_args *a,
                      struct provider_error *perr, provider_done_fn done,
                      void *arg);

/* kms_call_start - kms_call_start_ex without expect_key or park. */
int kms_call_start(struct kms_client *k, enum kms_op op, const char *key_id,
                   const struct esdk_ec *ec, const uint8_t *blob,
                   size_t blob_len, const uint8_t *dk, uint8_t *dk_out,
                   size_t dk_len, struct esdk_edk_list *edks,
                   struct provider_error *perr, provider_done_fn done,
                   void *arg);

/*
 * kms_call_release - settle every call of k parked so far.  With key
 * set (status 0): send those whose expect_key is key, finish the others
 * with KC_EAUTH (they are not under that key; no request is made).
 * With key NULL: finish them all with status (< 0) and *perr.  Calls
 * done callbacks: only from the loop, never inside a provider entry
 * point.  Calls parked by those callbacks are left parked.
 */
void kms_call_release(struct kms_client *k, const char *key, int status,
                      const struct provider_error *perr);

/* ---- helpers for the backends ------------------------------------------ */

/* kms_wire_header - append "name: value" to w.  0 or KC_E*. */
KC_MUST_USE int kms_wire_header(struct kms_wire *w, const char *name,
                                const char *value);

/* kms_ec_json - ec as compact JSON with sorted keys; free with
 * kms_json_free.  NULL on out of memory. */
char *kms_ec_json(const json_t *ec);

/* kms_json_free - free a string jansson allocated (wiping it). */
void kms_json_free(void *p);

/* kms_b64_decode_exact - base64 s into out, which must come out exactly
 * len bytes.  Returns 0 or KC_EPROVIDER; out is wiped on failure. */
KC_MUST_USE int kms_b64_decode_exact(const char *s, uint8_t *out,
                                     size_t len);

/* kms_b64_decode - base64 s appended to out.  0 or KC_EPROVIDER. */
KC_MUST_USE int kms_b64_decode(const char *s, struct kc_buf *out);

/* kms_b64_encode - base64 of n bytes into out as a C string. */
KC_MUST_USE int kms_b64_encode(const uint8_t *p, size_t n,
                               struct kc_buf *out);

/* kms_copy_str - bounded copy of a possibly NULL string. */
void kms_copy_str(char *dst, size_t dstlen, const char *src);

/* kms_random_hex - n random bytes as 2n hex chars into out (2n+1). */
void kms_random_hex(char *out, size_t n);

/* kms_utc - now as strftime(fmt) in UTC into out. */
void kms_utc(const char *fmt, char *out, size_t outlen);

/* Constructors, called by provider_new (provider_local.c). */
KC_MUST_USE int aws_kms_new(const struct key_config *key,
                            struct key_counters *counters,
                            struct event_base *base, struct provider **out,
                            char *err, size_t errlen);
KC_MUST_USE int alibaba_kms_new(const struct key_config *key,
                                struct key_counters *counters,
                                struct event_base *base,
                                struct provider **out, char *err,
                                size_t errlen);

#endif /* KC_KMS_H */
