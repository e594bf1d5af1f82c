/*
 * provider.h - the interface every key provider implements: make a data
 * key, wrap an existing one, unwrap one.  The cache and the server see
 * only this vtable, so a remote KMS provider plugs in without touching
 * them.
 *
 * Calls may finish at once or later: an operation returns 0 when it has
 * completed synchronously (done is then NOT called), PROVIDER_PENDING when
 * it will call done(arg, status, perr) later from the event loop (never
 * from inside the call itself), or a negative KC_E* code when it failed at
 * once (perr, when the caller passed one, then says why).  Output buffers
 * passed in must stay valid until completion.  A provider counts each
 * request that reached its backend (retries included) in
 * counters->provider_calls and each failed one in provider_errors.
 * Providers never log key bytes, credentials or plaintext.
 */
#ifndef KC_PROVIDER_H
#define KC_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esdk.h"

#define PROVIDER_PENDING 1

struct key_config;
struct key_counters;
struct provider;
struct event_base;

/*
 * What a provider says about a failure, for the client and the operator:
 * the backend's own error code (e.g. "ThrottlingException",
 * "Forbidden.KeyNotFound"), its message and its request id, all
 * NUL-terminated, empty when unknown.  Never holds secrets.
 */
struct provider_error {
    int http_status;
    char code[64];
    char message[256];
    char request_id[96];
};

typedef void (*provider_done_fn)(void *arg, int status,
                                 const struct provider_error *perr);

struct provider_ops {
    const char *name;

    /*
     * Fresh random data key of dk_len bytes into dk_out (locked memory),
     * wrapped for the encryption context ec (whose canonical
     * serialization is ec_ser: the raw-AES AAD); the EDK is appended to
     * edks.  KMS providers pass ec to the KMS as its EncryptionContext.
     */
    int (*generate)(struct provider *p, const struct esdk_ec *ec,
                    const uint8_t *ec_ser, size_t ec_len, uint8_t *dk_out,
                    size_t dk_len, struct esdk_edk_list *edks,
                    struct provider_error *perr, provider_done_fn done,
                    void *arg);

    /* Wrap an existing data key for ec; EDK appended to edks. */
    int (*wrap)(struct provider *p, const struct esdk_ec *ec,
                const uint8_t *ec_ser, size_t ec_len, const uint8_t *dk,
                size_t dk_len, struct esdk_edk_list *edks,
                struct provider_error *perr, provider_done_fn done,
                void *arg);

    /* True when edk was made by this provider and key (cheap, no I/O). */
    bool (*edk_matches)(const struct provider *p, const struct esdk_edk *edk);

    /* Unwrap edk into dk_out.  KC_EAUTH when it does not authenticate. */
    int (*unwrap)(struct provider *p, const struct esdk_edk *edk,
                  const struct esdk_ec *ec, const uint8_t *ec_ser,
                  size_t ec_len, uint8_t *dk_out, size_t dk_len,
                  struct provider_error *perr, provider_done_fn done,
                  void *arg);

    void (*free)(struct provider *p);
};

struct provider {
    const struct provider_ops *ops;
    const struct key_config *key;  /* retained: the alias's config */
    struct key_counters *counters; /* retained: the alias's counters */
    struct event_base *base;       /* retained: the agent's loop */
};

/*
 * provider_new - build the provider named in key->provider.  On failure
 * err holds a one-line reason.  Returns 0 with *out owned by the caller
 * (provider_free), KC_ECONFIG, KC_EKEYFILE, KC_ENOMEM.
 */
KC_MUST_USE int provider_new(const struct key_config *key,
                             struct key_counters *counters,
                             struct event_base *base, struct provider **out,
                             char *err, size_t errlen);

/* provider_free - wipe and free; NULL is a no-op. */
void provider_free(struct provider *p);

/*
 * provider_same_key - true when a and b wrap with the same key: for local
 * providers the master key bytes (so a key file rotated in place counts
 * as a change), for KMS providers the provider, key id, region and
 * endpoint.  Used by reload to decide which cached data keys survive.
 */
bool provider_same_key(const struct provider *a, const struct provider *b);

/* The local provider: a 32-byte master key in a 0600 file. */
KC_MUST_USE int provider_local_new(const struct key_config *key,
                                   struct provider **out, char *err,
                                   size_t errlen);

/*
 * provider_local_keygen - create path (O_EXCL, mode 0600) holding 32
 * random bytes.  Returns 0, KC_EKEYFILE (exists), KC_ESYS.
 */
KC_MUST_USE int provider_local_keygen(const char *path, char *err,
                                      size_t errlen);

#endif /* KC_PROVIDER_H */
