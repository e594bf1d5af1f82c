/*
 * request.h - one request's state while it is handled, shared by the
 * dispatcher (dispatch.c), the op handlers (handlers.c) and the key
 * fetching with single flight (flight.c).  Private to the agent.
 *
 * Handlers are restartable: when a data key must come from a provider
 * that answers later, the handler returns REQ_PENDING after joining a
 * flight; when the flight lands, the dispatcher runs the whole request
 * again from its saved body.  The second run finds the key in the cache,
 * or finds the flight's failure recorded in the request, so a handler
 * never needs to save its own progress.
 */
#ifndef KC_REQUEST_H
#define KC_REQUEST_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent.h"
#include "cache.h"
#include "provider.h"

#define REQ_PENDING 1 /* internal: the request waits on a flight */
#define REQ_MSG_MAX 400

struct flight;
struct conn;

/* A flight that finished with an error, remembered for the re-run. */
struct req_failure {
    uint8_t id[CACHE_ID_LEN];
    int status;
    struct provider_error perr;
};

/*
 * A batch's progress across runs: the packed result of every item that
 * has finished, so a re-run only runs the items still waiting.
 */
struct batch_state {
    size_t n;
    struct kc_buf *results; /* one packed result map per item */
    bool *done;
};

/* batch_state_free - wipe results and free; NULL is a no-op. */
void batch_state_free(struct batch_state *bs);

/*
 * A request that waits on a flight: its own copy of the frame body (which
 * may hold plaintext: a wiping kc_buf), whom to answer, and the failures
 * seen so far.  conn becomes NULL if the client goes away meanwhile.
 */
struct pending {
    struct agent *a;
    struct conn *conn;
    struct authz_peer peer;
    struct kc_buf body;
    struct req_failure *failures;
    size_t nfailures;
    struct batch_state *batch;   /* batch requests only */
    uint64_t start_ns;           /* arrival, for latency metrics */
    struct pending *next_waiter; /* in the flight's waiter list */
    struct pending *prev;        /* in the agent's list */
    struct pending *next;
};

struct req {
    struct agent *a;
    struct authz_peer *peer;       /* the connection's (or a copy) */
    const msgpack_object *map;
    uint64_t id;
    msgpack_packer pk;
    char msg[REQ_MSG_MAX];
    struct keyslot *slot;          /* alias concerned, for counters */
    struct pending *pend;          /* NULL on a first, synchronous run */
    struct flight *wait_on;        /* set with REQ_PENDING */
    bool is_item;                  /* a batch item: no id in results */
    uint64_t start_ns;             /* arrival, for latency metrics */
    struct batch_state *batch_new; /* made by a first run that waits */
};

/* req_safe_copy - at most 32 printable ASCII bytes of a peer string,
 * others shown as '?', for an error message. */
void req_safe_copy(char *dst, size_t dstlen, const char *s, size_t n);

/* req_fail - set the client-visible message; returns code. */
int req_fail(struct req *rq, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * req_failure_find - the recorded failure of flight id during an earlier
 * run of this request, or NULL.
 */
const struct req_failure *req_failure_find(const struct req *rq,
                                           const uint8_t id[CACHE_ID_LEN]);

/* Op handlers (handlers.c). */
int handle_hello(struct req *rq);
int handle_ping(struct req *rq);
int handle_encrypt(struct req *rq);
int handle_decrypt(struct req *rq);
int handle_stats(struct req *rq);
int handle_batch(struct req *rq);
int handle_metrics(struct req *rq);
int handle_health(struct req *rq);
int handle_reload(struct req *rq);

/* req_note - record a finished encrypt/decrypt for metrics. */
void req_note(struct req *rq, const char *op, int code);

/* The names of the ops, for hello (dispatch.c). */
size_t dispatch_op_count(void);
const char *dispatch_op_name(size_t i);

/*
 * flight_enc_entry - the encryption entry for (slot, ec) that can take
 * pt_len more bytes: from the cache, or from a provider flight (shared by
 * every request that misses on the same id).  With ms (for the suites
 * with header templates), the message is begun (esdk_msg_start) while the
 * lookup's memory reads are under way.  Returns 0 with *out (borrowed:
 * in the cache) and ms begun and finished, REQ_PENDING with rq->wait_on set, or an
 * error (message in rq).
 */
int flight_enc_entry(struct req *rq, struct keyslot *slot,
                     const struct esdk_ec *ec, const uint8_t *ec_ser,
                     size_t ec_len, size_t pt_len, struct esdk_msg_start *ms,
                     struct cache_entry **out);

/*
 * flight_dec_key - the data key for one EDK through slot: from the
 * cache or from a provider flight.  Returns 0 with *dk borrowed from the
 * cache entry, REQ_PENDING, or an error (for which the caller tries the
 * next EDK).
 */
int flight_dec_key(struct req *rq, struct keyslot *slot,
                   const struct esdk_header *h, const struct esdk_edk *edk,
                   const uint8_t **dk);

/*
 * flight_prewarm - fetch the encryption key for (slot, ec) in the
 * background (config `prewarm`); on_done hears the outcome, possibly at
 * once.  Returns 0 or an error starting it.
 */
int flight_prewarm(struct agent *a, struct keyslot *slot,
                   const struct esdk_ec *ec,
                   void (*on_done)(struct agent *, void *, int), void *arg);

/* flight_join - add a pending request to a flight's waiters. */
void flight_join(struct flight *f, struct pending *p);

/* flight_abort_all - at exit: fail every flight still in the air. */
void flight_abort_all(struct agent *a);

/* dispatch_resume - run a waiting request again (called by flights). */
void dispatch_resume(struct pending *p, const uint8_t id[CACHE_ID_LEN],
                     int status, const struct provider_error *perr);

#endif /* KC_REQUEST_H */
