/*
 * http.h - non-blocking HTTPS for KMS providers: libcurl's multi
 * interface driven by the agent's libevent loop.  Never blocks the loop.
 *
 * TLS certificate and host verification are always on; ca_file may name
 * a CA bundle (tests use a CA made at test time).  Response bodies may
 * carry plaintext data keys, so they are collected into a wiping kc_buf
 * with a size cap, and the request body buffer is wiped after use.
 * CURLOPT_VERBOSE is never set: it would print credentials.
 *
 * Not thread-safe (the agent is single-threaded).
 */
#ifndef KC_HTTP_H
#define KC_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"

struct event_base;
struct http;
struct http_xfer;

#define HTTP_MAX_RESPONSE (64 * 1024)

struct http_request {
    const char *url;          /* https://host[:port]/path?query */
    const char *method;       /* "POST" */
    const char *const *headers; /* "Name: value" lines, borrowed */
    size_t nheaders;
    const uint8_t *body;      /* copied at start; may be NULL */
    size_t body_len;
    const char *ca_file;      /* NULL: the system bundle */
    long connect_timeout_ms;
    long timeout_ms;          /* whole transfer */
};

struct http_response {
    long status;              /* HTTP status, 0 if none was received */
    char content_type[128];   /* "" when absent */
    char request_id[96];      /* x-amz-request-id / x-acs-request-id */
    char retry_after[32];     /* Retry-After header, "" when absent */
    struct kc_buf body;       /* wiping; freed by the http layer after
                                 the callback returns */
};

/*
 * The transfer finished.  result is 0 when a complete HTTP response was
 * received (any status), else KC_ETIMEOUT, KC_ECONNECT (connect/TLS/DNS),
 * KC_ECLOSED (reset or truncated), KC_ETOOBIG (body over the cap).  resp
 * is borrowed for the call only.  The xfer is gone after the callback.
 */
typedef void (*http_done_fn)(void *arg, int result,
                             const struct http_response *resp);

/* http_new - a multi handle bound to base.  Returns 0, KC_ENOMEM. */
int http_new(struct event_base *base, struct http **out);

/* http_free - cancel every transfer (no callbacks) and free. NULL ok. */
void http_free(struct http *h);

/*
 * http_start - begin a transfer; done is always called later from the
 * loop, never from inside http_start.  Returns 0 with *out (may be NULL
 * if the caller does not want a handle), or KC_ENOMEM / KC_EINVAL.
 */
int http_start(struct http *h, const struct http_request *rq,
               http_done_fn done, void *arg, struct http_xfer **out);

/* http_cancel - abort a transfer; its callback will not run. */
void http_cancel(struct http_xfer *x);

#endif /* KC_HTTP_H */
