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
