/*
 * metrics.h - request outcomes, latencies and provider error codes per
 * key alias, rendered in the Prometheus text exposition format.
 */
#ifndef KC_METRICS_H
#define KC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"

struct agent;
struct keyslot;

#define METRICS_NBUCKETS 17 /* latency buckets, +Inf excluded */
#define METRICS_NCODES   32 /* KC_E* codes tracked per op */
#define METRICS_NPCODES  16 /* distinct provider error codes per alias */

enum metrics_op {
    METRICS_OP_ENCRYPT = 0,
    METRICS_OP_DECRYPT = 1,
    METRICS_NOPS,
};

struct metrics_hist {
    uint64_t buckets[METRICS_NBUCKETS]; /* non-cumulative counts */
    uint64_t count;
    uint64_t sum_ns;
};

struct metrics_key {
    uint64_t ok[METRICS_NOPS];
    uint64_t err[METRICS_NOPS][METRICS_NCODES]; /* by -code */
    struct metrics_hist latency[METRICS_NOPS];
    struct {
        char code[64];
        uint64_t n;
    } perr[METRICS_NPCODES];      /* provider errors by backend code */
    uint64_t perr_other;          /* codes past the table */
    uint64_t refreshes;           /* refresh-ahead fetches started */
    uint64_t grace_uses[METRICS_NOPS]; /* keys used past TTL (outage) */
};

/* metrics_now_ns - CLOCK_MONOTONIC in nanoseconds. */
uint64_t metrics_now_ns(void);

/* metrics_note_request - one finished request for slot (code 0 = ok). */
void metrics_note_request(struct keyslot *slot, enum metrics_op op, int code,
                          uint64_t duration_ns);

/* metrics_note_provider_error - count a backend error code for slot. */
void metrics_note_provider_error(struct keyslot *slot, const char *code);

/*
 * metrics_render - the whole exposition text appended to out.
 * Returns 0 or KC_ENOMEM.
 */
KC_MUST_USE int metrics_render(struct agent *a, struct kc_buf *out);

#endif /* KC_METRICS_H */
