/*
 * metrics.c - counters and the Prometheus text exposition (format
 * version 0.0.4): names keycache_*, counters end in _total, durations
 * are in seconds and sizes in bytes.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "keymem.h"

/* Upper bounds of the latency buckets, in seconds. */
static const double bucket_le[METRICS_NBUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
};

static const char *const op_names[METRICS_NOPS] = {"encrypt", "decrypt"};

uint64_t
metrics_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
metrics_note_request(struct keyslot *slot, enum metrics_op op, int code,
                     uint64_t duration_ns)
{
    struct metrics_hist *h;
    double secs = (double)duration_ns / 1e9;
    size_t i;

    if (slot == NULL || op >= METRICS_NOPS) {
        return;
    }
    if (code == 0) {
        slot->m.ok[op]++;
    } else if (-code > 0 && -code < METRICS_NCODES) {
        slot->m.err[op][-code]++;
    }
    h = &slot->m.latency[op];
    for (i = 0; i < METRICS_NBUCKETS && secs > bucket_le[i]; i++) {
    }
    if (i < METRICS_NBUCKETS) {
        h->buckets[i]++;
    }
    h->count++;
    h->sum_ns += duration_ns;
}

void
metrics_note_provider_error(struct keyslot *slot, const char *code)
{
    size_t i;

    if (code == NULL || *code == '\0') {
        code = "unknown";
    }
    for (i = 0; i < METRICS_NPCODES; i++) {
        if (slot->m.perr[i].code[0] == '\0') {
            snprintf(slot->m.perr[i].code, sizeof(slot->m.perr[i].code),
                     "%s", code);
        }
        if (strcmp(slot->m.perr[i].code, code) == 0) {
            slot->m.perr[i].n++;
            return;
        }
    }
    slot->m.perr_other++;
}

/* printf into out; a line longer than 512 bytes is a bug, cut. */
static int
put(struct kc_buf *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
put(struct kc_buf *out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return KC_EINVAL;
    }
    return kc_buf_put(out, line, (size_t)n < sizeof(line) ? (size_t)n
                                                          : sizeof(line) - 1);
}

/* Label value escaping per the exposition format: \ " and newline. */
static void
label_escape(char *dst, size_t len, const char *src)
{
    size_t o = 0;

    for (; *src != '\0' && o + 3 < len; src++) {
        if (*src == '\\' || *src == '"') {
            dst[o++] = '\\';
            dst[o++] = *src;
        } else if (*src == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}

static int
head(struct kc_buf *out, const char *name, const char *type,
     const char *help)
{
    return put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int
render_requests(struct agent *a, struct kc_buf *out)
{
    size_t i, op, c;
    int r = head(out, "keycache_requests_total", "counter",
                 "Encrypt and decrypt requests by key alias, op and result.");

    for (i = 0; r == 0 && i < a->keys->n; i++) {
        const struct keyslot *s = &a->keys->slots[i];

        for (op = 0; r == 0 && op < METRICS_NOPS; op++) {
            r = put(out, "keycache_requests_total{key=\"%s\",op=\"%s\","
                    "result=\"ok\"} %llu\n", s->cfg->alias, op_names[op],
                    (unsigned long long)s->m.ok[op]);
            for (c = 1; r == 0 && c < METRICS_NCODES; c++) {
                if (s->m.err[op][c] == 0) {
                    continue;
                }
                r = put(out, "keycache_requests_total{key=\"%s\",op=\"%s\","
                        "result=\"%s\"} %llu\n", s->cfg->alias,
                        op_names[op], kc_errname(-(int)c),
                        (unsigned long long)s->m.err[op][c]);
            }
        }
    }
    return r;
}

static int
render_latency(struct agent *a, struct kc_buf *out)
{
    size_t i, op, b;
    int r = head(out, "keycache_request_duration_seconds", "histogram",
                 "Time from a request's arrival to its reply.");

    for (i = 0; r == 0 && i < a->keys->n; i++) {
        const struct keyslot *s = &a->keys->slots[i];

        for (op = 0; r == 0 && op < METRICS_NOPS; op++) {
            const struct metrics_hist *h = &s->m.latency[op];
            uint64_t cum = 0;

            for (b = 0; r == 0 && b < METRICS_NBUCKETS; b++) {
                cum += h->buckets[b];
                r = put(out, "keycache_request_duration_seconds_bucket{"
                        "key=\"%s\",op=\"%s\",le=\"%g\"} %llu\n",
                        s->cfg->alias, op_names[op], bucket_le[b],
                        (unsigned long long)cum);
            }
            if (r == 0) {
                r = put(out, "keycache_request_duration_seconds_bucket{"
                        "key=\"%s\",op=\"%s\",le=\"+Inf\"} %llu\n"
                        "keycache_request_duration_seconds_sum{key=\"%s\","
                        "op=\"%s\"} %.9f\n"
                        "keycache_request_duration_seconds_count{key=\"%s\","
                        "op=\"%s\"} %llu\n",
                        s->cfg->alias, op_names[op],
                        (unsigned long long)h->count, s->cfg->alias,
                        op_names[op], (double)h->sum_ns / 1e9, s->cfg->alias,
                        op_names[op], (unsigned long long)h->count);
            }
        }
    }
    return r;
}

/* One counter or gauge per alias from a field of the slot. */
static int
render_per_key(struct agent *a, struct kc_buf *out, const char *name,
               const char *type, const char *help,
               uint64_t (*get)(const struct keyslot *s))
{
    size_t i;
    int r = head(out, name, type, help);

    for (i = 0; r == 0 && i < a->keys->n; i++) {
        r = put(out, "%s{key=\"%s\"} %llu\n", name,
                a->keys->slots[i].cfg->alias,
                (unsigned long long)get(&a->keys->slots[i]));
    }
    return r;
}

static uint64_t get_hits(const struct keyslot *s) { return s->n.cache_hits; }
static uint64_t get_misses(const struct keyslot *s) { return s->n.cache_misses; }
static uint64_t get_pcalls(const struct keyslot *s) { return s->n.provider_calls; }
static uint64_t get_entries(const struct keyslot *s) { return s->entries; }
static uint64_t get_refresh(const struct keyslot *s) { return s->m.refreshes; }

static uint64_t
get_locked(const struct keyslot *s)
{
    return (uint64_t)s->entries * KEYMEM_SLOT_SIZE;
}

static int
render_provider_errors(struct agent *a, struct kc_buf *out)
{
    char esc[160];
    size_t i, j;
    int r = head(out, "keycache_provider_errors_total", "counter",
                 "Failed key-provider requests by backend error code.");

    for (i = 0; r == 0 && i < a->keys->n; i++) {
        const struct keyslot *s = &a->keys->slots[i];

        for (j = 0; r == 0 && j < METRICS_NPCODES; j++) {
            if (s->m.perr[j].code[0] == '\0') {
                break;
            }
            label_escape(esc, sizeof(esc), s->m.perr[j].code);
            r = put(out, "keycache_provider_errors_total{key=\"%s\","
                    "code=\"%s\"} %llu\n", s->cfg->alias, esc,
                    (unsigned long long)s->m.perr[j].n);
        }
        if (r == 0 && s->m.perr_other > 0) {
            r = put(out, "keycache_provider_errors_total{key=\"%s\","
                    "code=\"other\"} %llu\n", s->cfg->alias,
                    (unsigned long long)s->m.perr_other);
        }
    }
    return r;
}

static int
render_grace(struct agent *a, struct kc_buf *out)
{
    size_t i, op;
    int r = head(out, "keycache_grace_uses_total", "counter",
                 "Data keys used past their TTL because the provider was "
                 "unreachable (outage grace).");

    for (i = 0; r == 0 && i < a->keys->n; i++) {
        for (op = 0; r == 0 && op < METRICS_NOPS; op++) {
            r = put(out, "keycache_grace_uses_total{key=\"%s\",op=\"%s\"} "
                    "%llu\n", a->keys->slots[i].cfg->alias, op_names[op],
                    (unsigned long long)a->keys->slots[i].m.grace_uses[op]);
        }
    }
    return r;
}

struct age_walk {
    struct agent *a;
    uint64_t now_ms;
    uint64_t *oldest_ms; /* per slot */
};

static void
age_visit(const struct cache_entry *e, void *arg)
{
    struct age_walk *w = arg;
    size_t i;

    if (e->kind != CACHE_ENC || e->slot == NULL) {
        return;
    }
    i = (size_t)(e->slot - w->a->keys->slots);
    if (i < w->a->keys->n && w->now_ms - e->created_ms > w->oldest_ms[i]) {
        w->oldest_ms[i] = w->now_ms - e->created_ms;
    }
}

static int
render_key_age(struct agent *a, struct kc_buf *out)
{
    struct age_walk w;
    size_t i;
    int r;

    w.a = a;
    w.now_ms = cache_now(a->cache);
    if ((w.oldest_ms = calloc(a->keys->n + 1, sizeof(uint64_t))) == NULL) {
        return KC_ENOMEM;
    }
    cache_foreach(a->cache, age_visit, &w);
    r = head(out, "keycache_data_key_age_seconds", "gauge",
             "Age of the oldest encryption data key in use per alias.");
    for (i = 0; r == 0 && i < a->keys->n; i++) {
        r = put(out, "keycache_data_key_age_seconds{key=\"%s\"} %.3f\n",
                a->keys->slots[i].cfg->alias, (double)w.oldest_ms[i] / 1e3);
    }
    free(w.oldest_ms);
    return r;
}

static int
render_agent(struct agent *a, struct kc_buf *out)
{
    struct cache_totals t;
    int r;

    cache_totals_get(a->cache, &t);
    r = head(out, "keycache_connections", "gauge", "Open client connections.");
    r = r ? r : put(out, "keycache_connections %zu\n", a->nconns);
    r = r ? r : head(out, "keycache_connections_accepted_total", "counter",
                     "Client connections accepted since start.");
    r = r ? r : put(out, "keycache_connections_accepted_total %llu\n",
                    (unsigned long long)a->n.connections);
    r = r ? r : head(out, "keycache_inflight_requests", "gauge",
                     "Requests waiting on a key provider.");
    r = r ? r : put(out, "keycache_inflight_requests %zu\n", a->npending);
    r = r ? r : head(out, "keycache_frames_total", "counter",
                     "Request frames received since start.");
    r = r ? r : put(out, "keycache_frames_total %llu\n",
                    (unsigned long long)a->n.requests);
    r = r ? r : head(out, "keycache_uptime_seconds", "gauge",
                     "Seconds since the agent started.");
    r = r ? r : put(out, "keycache_uptime_seconds %.3f\n",
                    (double)(cache_clock_monotonic() - a->started_ms) / 1e3);
    r = r ? r : head(out, "keycache_cache_capacity", "gauge",
                     "Most data keys the cache holds.");
    r = r ? r : put(out, "keycache_cache_capacity %zu\n", t.capacity);
    r = r ? r : head(out, "keycache_cache_evictions_total", "counter",
                     "Entries evicted at capacity (least recently used).");
    r = r ? r : put(out, "keycache_cache_evictions_total %llu\n",
                    (unsigned long long)t.evictions);
    r = r ? r : head(out, "keycache_locked_memory_bytes", "gauge",
                     "Locked memory mapped for keys.");
    r = r ? r : put(out, "keycache_locked_memory_bytes %zu\n",
                    keymem_locked_bytes());
    r = r ? r : head(out, "keycache_build_info", "gauge",
                     "Build information; the value is always 1.");
    r = r ? r : put(out, "keycache_build_info{version=\"%s\"} 1\n",
                    KC_VERSION);
    return r;
}

int
metrics_render(struct agent *a, struct kc_buf *out)
{
    int r;

    if ((r = render_requests(a, out)) != 0 ||
        (r = render_latency(a, out)) != 0 ||
        (r = render_per_key(a, out, "keycache_cache_hits_total", "counter",
                            "Requests whose data key was cached.",
                            get_hits)) != 0 ||
        (r = render_per_key(a, out, "keycache_cache_misses_total", "counter",
                            "Requests whose data key was not cached.",
                            get_misses)) != 0 ||
        (r = render_per_key(a, out, "keycache_provider_calls_total",
                            "counter", "Requests that reached the key "
                            "provider, retries included.", get_pcalls)) != 0 ||
        (r = render_provider_errors(a, out)) != 0 ||
        (r = render_per_key(a, out, "keycache_cache_entries", "gauge",
                            "Cached data keys per alias.", get_entries)) != 0 ||
        (r = render_per_key(a, out, "keycache_locked_bytes", "gauge",
                            "Locked bytes holding this alias's data keys.",
                            get_locked)) != 0 ||
        (r = render_per_key(a, out, "keycache_refreshes_total", "counter",
                            "Data keys fetched ahead of expiry.",
                            get_refresh)) != 0 ||
        (r = render_grace(a, out)) != 0 ||
        (r = render_key_age(a, out)) != 0) {
        return r;
    }
    return render_agent(a, out);
}
