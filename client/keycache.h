/*
 * keycache.h - client library for keycache-agent.
 *
 * The agent holds data keys; this library only frames requests and reads
 * replies over the agent's Unix socket (see proto/PROTOCOL.md).  It does
 * no cryptography and never sees a key.
 *
 * Conventions:
 * - Functions returning int give 0 on success or a negative KC_E* code;
 *   kc_strerror() turns a code into text, kc_client_last_error() gives the
 *   agent's message for the last failed call on a client.
 * - Arguments are borrowed (not kept after the call) unless said.
 * - Every buffer the library returns is freed with kc_free(), which wipes
 *   it first (results may be plaintext).
 *
 * Thread safety: a struct kc_client is NOT thread-safe; use one per
 * thread, or serialize calls with your own lock.  Different clients may
 * be used from different threads concurrently.  kc_strerror, kc_errname,
 * kc_base64_* and kc_free are thread-safe.
 *
 * Timeouts: each call, including a reconnect it needs, completes or
 * fails with KC_ETIMEOUT within the client's timeout_ms.
 *
 * Fork: a client notices when it is used in a different process than the
 * one that connected it (getpid() changed) and reconnects on its own
 * socket before the next request, so parent and child never share one
 * connection silently; in-flight state is not inherited.
 */
#ifndef KEYCACHE_H
#define KEYCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KC_API      __attribute__((visibility("default")))
#define KC_MUST_USE __attribute__((warn_unused_result))
#else
#define KC_API
#define KC_MUST_USE
#endif

#ifndef KC_ERR_H
/* The error codes are the agent's; keep in step with proto/kc_err.h. */
#include "kc_err.h"
#endif

#define KC_VERSION_STRING "0.1.0"
#define KC_DEFAULT_SOCKET "/run/keycache/agent.sock"

struct kc_client;

/* One encryption-context pair; strings are UTF-8 and NUL-terminated. */
struct kc_context_pair {
    const char *key;
    const char *value;
};

/*
 * kc_client_new - connect to the agent.
 * socket_path: NULL means $KEYCACHE_SOCKET, then KC_DEFAULT_SOCKET.
 * timeout_ms: limit for each call, connect and hello included
 *   (0 = 30000).
 * Performs the hello exchange.  Returns 0 with *out owned by the caller
 * (kc_client_free), or KC_EINVAL (path too long for a Unix socket,
 * negative timeout), KC_ECONNECT (no socket, nobody listening, no
 * permission), KC_ETIMEOUT, KC_EVERSION, KC_EBUSY (agent refused the
 * connection), KC_ECLOSED, KC_ENOMEM.  On failure *out is NULL and the
 * reason text is lost; use kc_client_open + kc_client_connect to keep it.
 */
KC_API KC_MUST_USE int kc_client_new(const char *socket_path, int timeout_ms,
                                     struct kc_client **out);

/*
 * kc_client_open - like kc_client_new but does not connect yet: the
 * connection (and hello) happen on the first call that needs one, or on
 * kc_client_connect.  Useful when the app may start before the agent, and
 * to read kc_client_last_error after a failed connect.
 * Returns 0 with *out owned by the caller (kc_client_free), KC_EINVAL
 * (path too long, negative timeout), KC_ENOMEM.
 */
KC_API KC_MUST_USE int kc_client_open(const char *socket_path, int timeout_ms,
                                      struct kc_client **out);

/*
 * kc_client_connect - connect and say hello now if c is not connected
 * (a no-op when it is).  Returns 0, KC_ECONNECT, KC_ETIMEOUT,
 * KC_EVERSION, KC_ECLOSED, KC_ENOMEM; kc_client_last_error says why.
 *
 * After any failure that leaves the stream in an unknown state
 * (KC_ETIMEOUT, KC_ECLOSED, KC_EPROTO, ...) the client drops its
 * connection and the next call reconnects.  Calls are never retried by
 * the library: a request that timed out may still have been served.
 */
KC_API KC_MUST_USE int kc_client_connect(struct kc_client *c);

/* kc_client_free - close and free; NULL is a no-op. */
KC_API void kc_client_free(struct kc_client *c);

/*
 * kc_client_last_error - the agent's (or library's) message for the last
 * failed call on c; borrowed, valid until the next call on c.  Never NULL.
 */
KC_API const char *kc_client_last_error(const struct kc_client *c);

/*
 * kc_client_agent - the agent's self-description from hello (e.g.
 * "keycache-agent 0.1.0"), or "" when not connected.  Borrowed, valid
 * until the next call on c.  Never NULL.
 */
KC_API const char *kc_client_agent(const struct kc_client *c);

/*
 * kc_client_socket_path - the socket path c uses (after the
 * KEYCACHE_SOCKET / default fallback).  Borrowed, lives as long as c.
 */
KC_API const char *kc_client_socket_path(const struct kc_client *c);

/*
 * kc_client_set_spin - how long a blocking call (and kc_client_wait)
 * polls the socket without sleeping before it sleeps until the reply,
 * in microseconds: 0 to 1000, 0 = never.  Default 50, or 0 when the
 * process may run on one CPU only.  Waking a sleeping thread costs tens
 * of microseconds on a virtual machine, more than a cached answer takes,
 * so the short spin roughly halves the latency of a request at depth 1;
 * it costs at most that much CPU time of the waiting thread per call, and
 * never extends the call's timeout.  Set 0 where CPU time is scarcer than
 * latency (e.g. a tight CPU quota).  Returns 0 or KC_EINVAL.
 */
KC_API KC_MUST_USE int kc_client_set_spin(struct kc_client *c, int spin_us);

/* kc_ping - round trip.  Returns 0 or an error code. */
KC_API KC_MUST_USE int kc_ping(struct kc_client *c);

/*
 * kc_encrypt - encrypt pt under key alias with the given context
 * (ctx may be NULL when nctx is 0).  On success *ct is a message the
 * caller frees with kc_free; *ct_len its length.
 * Returns 0, or KC_ENOKEY, KC_EDENIED, KC_ECONTEXT, KC_ETOOBIG,
 * KC_EPROVIDER, KC_ETIMEOUT, KC_ECLOSED, ...
 */
KC_API KC_MUST_USE int kc_encrypt(struct kc_client *c, const char *alias,
                                  const struct kc_context_pair *ctx,
                                  size_t nctx, const uint8_t *pt,
                                  size_t pt_len, uint8_t **ct,
                                  size_t *ct_len);

/*
 * kc_decrypt - decrypt a message.  ctx, when given, lists pairs the
 * message's context must contain (else KC_ECONTEXT).  On success *pt is
 * freed with kc_free (it wipes), *pt_len its length.
 * Returns 0, or KC_EAUTH, KC_EFORMAT, KC_ENODATAKEY, KC_ECONTEXT,
 * KC_EUNSUPPORTED, KC_EDENIED, ...
 */
KC_API KC_MUST_USE int kc_decrypt(struct kc_client *c, const uint8_t *ct,
                                  size_t ct_len,
                                  const struct kc_context_pair *ctx,
                                  size_t nctx, uint8_t **pt, size_t *pt_len);

/*
 * kc_stats_json - the agent's stats as a JSON object text
 * ({"keys": {...}, "cache": {...}, "agent": {...}}), NUL-terminated.
 * Free with kc_free.
 */
KC_API KC_MUST_USE int kc_stats_json(struct kc_client *c, char **json);

/* ---- many requests on one connection ------------------------------------
 *
 * Pipelining: kc_submit_* queue a request on the client's connection and
 * return at once with its id; any number may be in flight.  Completions
 * are collected in any order with kc_client_next (non-blocking) or
 * kc_client_wait (blocking).  Batches (the agent's `batch` op) carry many
 * encrypt/decrypt items in one frame with one result per item.
 *
 * From your own event loop: watch kc_client_fd(c) for the events
 * kc_client_events(c) asks for (POLLIN, plus POLLOUT while queued bytes
 * remain unsent); when it is ready (or after submitting), call
 * kc_client_step(c), which never blocks, then drain kc_client_next.  The
 * fd changes when the client reconnects: read it again after each step.
 * Submitted bytes are only buffered by kc_submit_*; kc_client_step,
 * kc_client_wait and any blocking call send them.
 *
 * Connecting (and the hello exchange) happens synchronously in the first
 * submit, bounded by timeout_ms; call kc_client_connect at start-up to
 * keep it out of your loop.  Each submitted request times out on its own
 * after timeout_ms (completion status KC_ETIMEOUT; a late reply is then
 * ignored).  If the connection fails, every request in flight completes
 * with the error (KC_ECLOSED, KC_EPROTO, ...); nothing is retried.
 * After fork, the child's copies complete with KC_ECLOSED.  The blocking
 * calls may be mixed in: they keep submitted requests' replies.
 */

enum kc_op {
    KC_OP_PING = 0,
    KC_OP_ENCRYPT = 1,
    KC_OP_DECRYPT = 2,
    KC_OP_BATCH = 3,
};

/* One item of a batch; pointers are borrowed for the submit call only. */
struct kc_batch_item {
    enum kc_op op;                     /* KC_OP_ENCRYPT or KC_OP_DECRYPT */
    const char *alias;                 /* encrypt: the key alias */
    const struct kc_context_pair *ctx; /* encrypt: context; decrypt: */
    size_t nctx;                       /*   pairs it must contain */
    const uint8_t *data;               /* plaintext or ciphertext */
    size_t len;
};

/* One item's result. */
struct kc_item_result {
    int status;    /* 0 or a KC_E* code for this item alone */
    uint8_t *data; /* ciphertext or plaintext (kc_free); NULL on failure */
    size_t len;
};

/* A finished request; release with kc_completion_clear. */
struct kc_completion {
    uint64_t id;       /* as returned by kc_submit_* */
    void *user;        /* as given to kc_submit_* */
    enum kc_op op;
    int status;        /* 0, or why the request (or whole batch) failed */
    char *message;     /* the agent's text when status != 0, else NULL */
    uint8_t *data;     /* encrypt: ciphertext, decrypt: plaintext */
    size_t len;
    struct kc_item_result *items; /* batch: nitems results, item order */
    size_t nitems;
};

/*
 * kc_submit_encrypt / kc_submit_decrypt / kc_submit_ping - queue one
 * request (arguments as for the blocking calls; copied, so they may be
 * freed on return).  Returns 0 with *id (may be NULL), or KC_EINVAL,
 * KC_ETOOBIG (over the agent's frame limit), KC_EBUSY (64 MiB of unsent
 * requests: step first), KC_ENOMEM, or a connect error.
 */
KC_API KC_MUST_USE int kc_submit_encrypt(struct kc_client *c,
                                         const char *alias,
                                         const struct kc_context_pair *ctx,
                                         size_t nctx, const uint8_t *pt,
                                         size_t pt_len, void *user,
                                         uint64_t *id);
KC_API KC_MUST_USE int kc_submit_decrypt(struct kc_client *c,
                                         const uint8_t *ct, size_t ct_len,
                                         const struct kc_context_pair *ctx,
                                         size_t nctx, void *user,
                                         uint64_t *id);
KC_API KC_MUST_USE int kc_submit_ping(struct kc_client *c, void *user,
                                      uint64_t *id);

/*
 * kc_submit_batch - queue one batch of n items (1..1024; see PROTOCOL.md
 * "batch").  Its completion has status 0 and one kc_item_result per item
 * (each with its own status), or a batch-level error.  Same returns as
 * kc_submit_encrypt.
 */
KC_API KC_MUST_USE int kc_submit_batch(struct kc_client *c,
                                       const struct kc_batch_item *items,
                                       size_t n, void *user, uint64_t *id);

/* kc_client_fd - the connection's socket, or -1 when not connected. */
KC_API int kc_client_fd(const struct kc_client *c);

/* kc_client_events - poll(2) events to wait for: POLLIN while requests
 * are in flight, | POLLOUT while queued bytes are unsent; 0 when idle. */
KC_API short kc_client_events(const struct kc_client *c);

/*
 * kc_client_step - without blocking: send what the socket takes, read
 * what has arrived, turn replies into completions, expire requests past
 * their timeout.  Returns the number of completions ready to collect
 * (>= 0), or a connection error (the requests in flight have then been
 * completed with it, and the next submit reconnects).
 */
KC_API int kc_client_step(struct kc_client *c);

/*
 * kc_client_next - take the oldest ready completion into *out (owned by
 * the caller: kc_completion_clear).  Returns 1 when it did, 0 when none
 * is ready.  Never blocks, never does I/O.
 */
KC_API int kc_client_next(struct kc_client *c, struct kc_completion *out);

/*
 * kc_client_wait - kc_client_next, stepping and waiting up to timeout_ms
 * (-1: until every request has its completion) for one.  Returns 0 with
 * *out, KC_ETIMEOUT, or KC_EINVAL when nothing is in flight or ready.
 */
KC_API KC_MUST_USE int kc_client_wait(struct kc_client *c,
                                      struct kc_completion *out,
                                      int timeout_ms);

/* kc_client_in_flight - submitted requests without a completion yet. */
KC_API size_t kc_client_in_flight(const struct kc_client *c);

/* kc_completion_clear - wipe and free what *cp holds; NULL is a no-op. */
KC_API void kc_completion_clear(struct kc_completion *cp);

/*
 * kc_batch - blocking batch: results (n entries, caller's array) get one
 * result per item.  Returns 0 when the batch was answered (check each
 * item's status), or a batch-level error.  Release the results with
 * kc_item_results_clear.
 */
KC_API KC_MUST_USE int kc_batch(struct kc_client *c,
                                const struct kc_batch_item *items, size_t n,
                                struct kc_item_result *results);

/* kc_item_results_clear - wipe and free every result's data. */
KC_API void kc_item_results_clear(struct kc_item_result *results, size_t n);

#define KC_BATCH_MAX 1024

/*
 * kc_call_json - send an op that takes no fields (e.g. "health",
 * "metrics", "reload") and return the whole reply map as JSON text
 * ({"id": N, "ok": true, ...}), freed with kc_free.  Returns 0 or the
 * agent's error code (its message via kc_client_last_error).
 */
KC_API KC_MUST_USE int kc_call_json(struct kc_client *c, const char *op,
                                    char **json);

/*
 * kc_free - wipe and free a buffer returned by this library (the library
 * records each buffer's size, so none is passed).  NULL is a no-op.
 */
KC_API void kc_free(void *p);

/*
 * kc_base64_encode - standard Base64 with padding, NUL-terminated; free
 * with kc_free.  Returns 0 or KC_ENOMEM.
 */
KC_API KC_MUST_USE int kc_base64_encode(const uint8_t *p, size_t len,
                                        char **out);

/*
 * kc_base64_decode - decode standard Base64 (padding required, no
 * whitespace).  Returns 0 with *out freed by kc_free, or KC_EINVAL.
 */
KC_API KC_MUST_USE int kc_base64_decode(const char *s, size_t s_len,
                                        uint8_t **out, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* KEYCACHE_H */
