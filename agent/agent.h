/*
 * agent.h - the agent's run-time state, shared by server and dispatch.
 */
#ifndef KC_AGENT_H
#define KC_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "authz.h"
#include "cache.h"
#include "config.h"
#include "esdk.h"
#include "keyring.h"

struct event_base;
struct conn;
struct flight;
struct pending;

struct agent_counters {
    uint64_t requests;        /* frames dispatched */
    uint64_t connections;     /* connections accepted since start */
    uint64_t bad_requests;    /* frames refused before reaching an op */
};

struct agent {
    struct event_base *base;
    const struct agent_config *cfg;  /* the config in force */
    struct agent_config *cfg_owned;  /* owned: same as cfg */
    const char *config_path;         /* retained: for reload */
    struct keyring *retired;         /* old keyrings flights still use */
    struct keyring *keys;            /* owned */
    uint64_t keys_gen;               /* bumped when a reload swaps keys */
    struct cache *cache;             /* owned */
    struct esdk_limits limits;
    struct authz_policy stats_policy;
    uint64_t started_ms;
    struct agent_counters n;
    size_t nconns;                   /* open connections */
    bool shutting_down;
    struct flight *flights;          /* provider calls in the air */
    struct pending *pending;         /* requests waiting on them */
    size_t npending;
    bool ready;                      /* pre-warm done, socket serving */
    int (*on_serving)(struct agent *a); /* run once the loop is set up */
    size_t warmup_pending;           /* pre-warm fetches still running */
    size_t warmup_failed;
    /* A cleared msgpack zone kept for the next request to unpack into
     * (run_request); it never holds payload bytes, only objects
     * pointing into the frame. */
    struct msgpack_zone *spare_zone;
};

/*
 * agent_limits_from_config - the message reader's limits from [agent]:
 * legacy suites, max EDKs, message size (default: max_frame), body
 * frames and frame length.
 */
void agent_limits_from_config(struct esdk_limits *lim,
                              const struct agent_config *cfg);

#endif /* KC_AGENT_H */
