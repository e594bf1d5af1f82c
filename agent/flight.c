/*
 * flight.c - getting data keys: from the cache, or from the provider
 * with single flight.
 *
 * A flight is one provider operation (generate and extra wraps for an
 * encryption entry, or one unwrap for a decryption entry) that every
 * request missing on the same cache id shares: the first request starts
 * it, later ones join its waiter list, and when it lands its entry goes
 * into the cache and every waiter is run again.  A failed flight caches
 * nothing; each waiter sees its error.  N concurrent misses therefore
 * cost one provider call, not N.
 */
#include <event2/event.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "log.h"
#include "reload.h"
#include "metrics.h"
#include "request.h"

enum flight_stage {
    STAGE_GENERATE,
    STAGE_WRAP,   /* also_wrap_with keys, one at a time */
    STAGE_UNWRAP,
    STAGE_DONE,
};

struct flight {
    uint8_t id[CACHE_ID_LEN];
    struct agent *a;
    enum flight_stage stage;
    struct keyslot *slot;
    struct cache_entry *e;      /* being filled; owned until inserted */
    struct esdk_ec ec;          /* owned copies the provider may read */
    struct kc_buf ec_ser;       /*   until it calls back */
    struct esdk_edk_list edk;   /* unwrap: the one EDK */
    size_t wrap_next;           /* next extra key to wrap with */
    uint64_t ttl_ms;
    struct provider_error perr;
    struct pending *waiters;
    struct keyring *kr;         /* the keyring slot belongs to */
    /* background flights (pre-warm, refresh-ahead): told when done */
    void (*on_done)(struct agent *a, void *arg, int status);
    void *on_done_arg;
    struct flight *prev;
    struct flight *next;
};

static int flight_run(struct flight *f);

static void
flight_free(struct flight *f)
{
    if (f == NULL) {
        return;
    }
    if (f->kr != NULL) {
        f->kr->nflights--;
        if (f->kr != f->a->keys && f->kr->nflights == 0) {
            reload_retired_idle(f->a);
        }
    }
    cache_entry_free(f->e);
    esdk_ec_clear(&f->ec);
    kc_buf_clear(&f->ec_ser);
    esdk_edk_list_clear(&f->edk);
    free(f);
}

static int
flight_new(struct agent *a, struct keyslot *slot, const uint8_t *id,
           const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len,
           struct flight **out)
{
    struct flight *f;
    size_t i;
    int r;

    if ((f = calloc(1, sizeof(*f))) == NULL) {
        return KC_ENOMEM;
    }
    memcpy(f->id, id, CACHE_ID_LEN);
    f->a = a;
    f->slot = slot;
    f->kr = a->keys;
    a->keys->nflights++;
    esdk_ec_init(&f->ec);
    kc_buf_init(&f->ec_ser, 0);
    esdk_edk_list_init(&f->edk);
    for (i = 0; i < ec->n; i++) {
        const struct esdk_ec_pair *pr = &ec->pairs[i];

        if ((r = esdk_ec_add(&f->ec, pr->key, pr->key_len, pr->val,
                             pr->val_len)) != 0) {
            flight_free(f);
            return r;
        }
    }
    if ((r = kc_buf_put(&f->ec_ser, ec_ser, ec_len)) != 0) {
        flight_free(f);
        return r;
    }
    *out = f;
    return 0;
}

/* A failed provider call: counted by backend code and audited. */
static void
note_provider_failure(struct keyslot *slot, int status,
                      const struct provider_error *perr)
{
    const char *code = perr != NULL && perr->code[0] != '\0'
                           ? perr->code
                           : kc_errname(status);

    metrics_note_provider_error(slot, code);
    audit_key_event(slot->cfg->alias, "provider_error", code);
}

/* Provider callback: the current stage finished. */
static void
flight_step_done(void *arg, int status, const struct provider_error *perr);

static void
flight_finish(struct flight *f, int status);

static int
stage_generate(struct flight *f)
{
    struct provider *p = f->slot->provider;

    f->stage = STAGE_WRAP;
    return p->ops->generate(p, &f->ec, f->ec_ser.data, f->ec_ser.len,
                            f->e->dk, f->e->dk_len, &f->e->edks, &f->perr,
                            flight_step_done, f);
}

static int
stage_wrap(struct flight *f)
{
    struct keyslot *x;
    struct provider *p;

    if (f->wrap_next >= f->slot->nextra) {
        f->stage = STAGE_DONE;
        return 0;
    }
    x = f->slot->extra[f->wrap_next++];
    p = x->provider;
    return p->ops->wrap(p, &f->ec, f->ec_ser.data, f->ec_ser.len, f->e->dk,
                        f->e->dk_len, &f->e->edks, &f->perr,
                        flight_step_done, f);
}

static int
stage_unwrap(struct flight *f)
{
    struct provider *p = f->slot->provider;

    f->stage = STAGE_DONE;
    return p->ops->unwrap(p, &f->edk.v[0], &f->ec, f->ec_ser.data,
                          f->ec_ser.len, f->e->dk, f->e->dk_len, &f->perr,
                          flight_step_done, f);
}

/*
 * Advance through the stages while they complete at once.  Returns 0
 * when done, REQ_PENDING when a provider will call back, or an error.
 */
static int
flight_run(struct flight *f)
{
    int r = 0;

    while (r == 0 && f->stage != STAGE_DONE) {
        switch (f->stage) {
        case STAGE_GENERATE:
            r = stage_generate(f);
            break;
        case STAGE_WRAP:
            r = stage_wrap(f);
            break;
        case STAGE_UNWRAP:
            r = stage_unwrap(f);
            break;
        case STAGE_DONE:
            break;
        }
    }
    return r == PROVIDER_PENDING ? REQ_PENDING : r;
}

/*
 * A TTL shortened by a random part of up to jitter (a fraction), so keys
 * fetched together do not all expire, and hit the provider, together.
 */
static uint64_t
jittered(uint64_t ttl_ms, double jitter)
{
    uint64_t span = (uint64_t)((double)ttl_ms * jitter);

    if (span == 0) {
        return ttl_ms;
    }
    return ttl_ms - (uint64_t)randombytes_uniform(
                        (uint32_t)(span > UINT32_MAX ? UINT32_MAX : span));
}

/*
 * Put a finished flight's entry into the cache.  A fresh encryption key
 * also learns its decryption id (for its first EDK), so reading back what
 * was just written finds it and costs no provider call (cache.h).
 */
static struct cache_entry *
flight_commit(struct flight *f)
{
    struct cache *c = f->a->cache;
    struct cache_entry *e = f->e;

    f->e = NULL;
    audit_key_event(f->slot->cfg->alias,
                    e->kind == CACHE_ENC ? "generated" : "unwrapped",
                    f->slot->provider->ops->name);
    cache_insert(c, e, f->id, jittered(f->ttl_ms, f->slot->cfg->ttl_jitter));
    if (e->kind == CACHE_ENC && e->edks.n > 0) {
        cache_id_dec(c, f->slot->cfg->alias, &e->edks.v[0], f->ec_ser.data,
                     f->ec_ser.len, e->dec_id);
        e->dec_expires_ms = e->created_ms + f->slot->cfg->decrypt_ttl_ms;
    }
    return e;
}

static void
flight_unlink(struct flight *f)
{
    if (f->prev != NULL) {
        f->prev->next = f->next;
    } else if (f->a->flights == f) {
        f->a->flights = f->next;
    }
    if (f->next != NULL) {
        f->next->prev = f->prev;
    }
    f->prev = f->next = NULL;
}

static void
flight_finish(struct flight *f, int status)
{
    struct pending *p, *next;
    struct keyslot *ns = NULL;

    flight_unlink(f);
    if (status == 0) {
        /* After a reload that left the alias as it was, the key is cached
         * under the alias's new slot as if it had landed just before, so
         * a stream of reloads cannot starve the requests waiting on it. */
        ns = f->kr == f->a->keys ? f->slot
                                 : reload_slot_successor(f->a->keys, f->slot);
    }
    if (ns != NULL) {
        f->e->slot = ns;
        flight_commit(f);
    } else if (status == 0) {
        /* The alias was removed or its key or format changed: the key is
         * not cached; the waiters run again under the new config. */
        log_info("key %s: data key fetched before a reload that changed "
                 "the alias; not cached", f->slot->cfg->alias);
    } else {
        note_provider_failure(f->slot, status, &f->perr);
        log_warn("key %s: provider %s failed: %s%s%s%s%s",
                 f->slot->cfg->alias, f->slot->provider->ops->name,
                 kc_errname(status), f->perr.code[0] ? " " : "", f->perr.code,
                 f->perr.request_id[0] ? " request id " : "",
                 f->perr.request_id);
    }
    for (p = f->waiters; p != NULL; p = next) {
        next = p->next_waiter;
        p->next_waiter = NULL;
        dispatch_resume(p, f->id, status, &f->perr);
    }
    if (f->on_done != NULL) {
        f->on_done(f->a, f->on_done_arg, status);
    }
    flight_free(f);
}

static void
flight_step_done(void *arg, int status, const struct provider_error *perr)
{
    struct flight *f = arg;
    int r;

    if (perr != NULL && perr != &f->perr) {
        f->perr = *perr;
    }
    if (status != 0) {
        flight_finish(f, status);
        return;
    }
    if ((r = flight_run(f)) != REQ_PENDING) {
        flight_finish(f, r);
    }
}

void
flight_join(struct flight *f, struct pending *p)
{
    p->next_waiter = f->waiters;
    f->waiters = p;
}

void
flight_abort_all(struct agent *a)
{
    struct flight *f;

    /* Providers are freed after this; their callbacks must not run. */
    while ((f = a->flights) != NULL) {
        flight_unlink(f);
        flight_free(f);
    }
}

static struct flight *
flight_find(struct agent *a, const uint8_t id[CACHE_ID_LEN])
{
    struct flight *f;

    for (f = a->flights; f != NULL; f = f->next) {
        if (memcmp(f->id, id, CACHE_ID_LEN) == 0) {
            return f;
        }
    }
    return NULL;
}

/*
 * Explain a provider failure to the client, with the backend's ids.  A
 * data key that does not authenticate under our key is KC_ENODATAKEY
 * (this key cannot open that message); anything else is KC_EPROVIDER.
 */
static int
fail_provider(struct req *rq, const struct keyslot *slot, int status,
              const struct provider_error *pe)
{
    int code = status == KC_EAUTH ? KC_ENODATAKEY : KC_EPROVIDER;
    const char *what = status == KC_EAUTH ? "rejected" : "failed";

    if (pe == NULL || (pe->code[0] == '\0' && pe->message[0] == '\0')) {
        return req_fail(rq, code, "key %s: provider %s the data key: %s",
                        slot->cfg->alias, what,
                        kc_strerror(status));
    }
    return req_fail(rq, code,
                    "key %s: provider %s: %s (http %d, code %s, request id "
                    "%s): %s", slot->cfg->alias, what, kc_errname(status),
                    pe->http_status,
                    pe->code[0] ? pe->code : "-",
                    pe->request_id[0] ? pe->request_id : "-", pe->message);
}

/* Put f on the agent's list of flights in the air. */
static void
flight_link(struct agent *a, struct flight *f)
{
    f->prev = NULL;
    f->next = a->flights;
    if (f->next != NULL) {
        f->next->prev = f;
    }
    a->flights = f;
}

#define MISS_START 2 /* flight_miss: no flight to join; start one */

/*
 * After a cache miss on id: report the failure an earlier run of this
 * request saw, or join the flight already fetching id.  Returns an
 * error, REQ_PENDING, or MISS_START.
 */
static int
flight_miss(struct req *rq, struct keyslot *slot,
            const struct req_failure *fl, const uint8_t id[CACHE_ID_LEN])
{
    struct flight *f;

    if (fl != NULL) {
        return fail_provider(rq, slot, fl->status, &fl->perr);
    }
    if (rq->pend == NULL) {
        slot->n.cache_misses++; /* once per request, not per re-run */
    }
    if ((f = flight_find(rq->a, id)) != NULL) {
        rq->wait_on = f;
        return REQ_PENDING;
    }
    return MISS_START;
}

/*
 * Start a flight for id, or run it to completion at once.  Returns 0
 * with the committed entry in *out, REQ_PENDING (rq waits on it), or an
 * error.
 */
static int
flight_start(struct req *rq, struct flight *f, struct cache_entry **out)
{
    int r = flight_run(f);

    if (r == REQ_PENDING) {
        flight_link(rq->a, f);
        rq->wait_on = f;
        return REQ_PENDING;
    }
    if (r != 0) {
        note_provider_failure(f->slot, r, &f->perr);
        r = fail_provider(rq, f->slot, r, &f->perr);
        flight_free(f);
        return r;
    }
    *out = flight_commit(f);
    flight_free(f);
    return 0;
}

/* A provider failure that outage grace may bridge: not a rejection. */
static bool
is_outage(int status)
{
    return status != KC_EAUTH && status != KC_EDENIED &&
           status != KC_ENODATAKEY;
}

/* Use an entry past its TTL because the provider is down: counted and
 * logged (once per entry). */
static void
note_grace(struct keyslot *slot, struct cache_entry *e, enum metrics_op op)
{
    slot->m.grace_uses[op]++;
    if ((e->grace_logged & (1u << op)) == 0) {
        e->grace_logged |= (uint8_t)(1u << op);
        log_warn("key %s: provider unavailable; using a %s data key past "
                 "its TTL (outage grace)", slot->cfg->alias,
                 op == METRICS_OP_ENCRYPT ? "encryption" : "decryption");
        audit_key_event(slot->cfg->alias, "grace_use",
                        op == METRICS_OP_ENCRYPT ? "encrypt" : "decrypt");
    }
}

/*
 * A provider call failed at once (no re-run will follow): bridge with
 * the key still within its outage grace, if there is one (and, when
 * key_len is not 0, of that length).  A decryption passes its message's
 * canonical context too (dec_ec, for cache_lookup_dec).  Returns the key,
 * counted, or NULL.
 */
static struct cache_entry *
grace_bridge(struct cache *c, struct keyslot *slot,
             const uint8_t id[CACHE_ID_LEN], const struct kc_buf *dec_ec,
             uint64_t grace_ms, size_t key_len, enum metrics_op op)
{
    struct cache_entry *e;
    bool stale;

    e = dec_ec != NULL
            ? cache_lookup_dec(c, id, slot->cfg->alias, dec_ec->data,
                               dec_ec->len, grace_ms, &stale)
            : cache_lookup_grace(c, id, grace_ms, &stale);
    if (e == NULL || !stale || (key_len != 0 && e->dk_len != key_len)) {
        return NULL;
    }
    note_grace(slot, e, op);
    return e;
}

/*
 * Start a flight that no request waits on (pre-warm, refresh-ahead).
 * on_done, if given, hears the outcome.  Returns 0 (started, or already
 * in the air, or done at once) or an error starting it.
 */
static int
flight_background(struct agent *a, struct keyslot *slot,
                  const uint8_t id[CACHE_ID_LEN], const struct esdk_ec *ec,
                  const uint8_t *ec_ser, size_t ec_len,
                  void (*on_done)(struct agent *, void *, int), void *arg)
{
    struct flight *f = NULL;
    int r;

    if ((f = flight_find(a, id)) != NULL) {
        /* Already in the air (a client's miss): hear its outcome. */
        if (on_done != NULL && f->on_done == NULL) {
            f->on_done = on_done;
            f->on_done_arg = arg;
            return 0;
        }
        return on_done != NULL ? KC_EBUSY : 0;
    }
    if ((r = flight_new(a, slot, id, ec, ec_ser, ec_len, &f)) != 0 ||
        (r = cache_entry_new(CACHE_ENC, slot, 32, &f->e)) != 0) {
        flight_free(f);
        return r;
    }
    f->stage = STAGE_GENERATE;
    f->ttl_ms = slot->cfg->ttl_ms;
    f->on_done = on_done;
    f->on_done_arg = arg;
    r = flight_run(f);
    if (r == REQ_PENDING) {
        flight_link(a, f);
        return 0;
    }
    if (r == 0) {
        flight_commit(f);
    } else {
        note_provider_failure(slot, r, &f->perr);
    }
    flight_free(f);
    if (on_done != NULL) {
        on_done(a, arg, r);
    }
    return 0;
}

/*
 * Refresh-ahead: once a key in use is refresh_ahead of the way through
 * its TTL, fetch its successor in the background under the successor id.
 * The current key keeps serving until its TTL or a cap ends it (caps
 * stay exact); then the successor takes over without a provider call,
 * so steady traffic never waits on the provider.
 */
static void
maybe_refresh(struct req *rq, struct keyslot *slot, struct cache_entry *e,
              const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len)
{
    double f = slot->cfg->refresh_ahead;
    uint8_t next[CACHE_ID_LEN];
    uint64_t now, life;

    if (f <= 0 || e->refreshing) {
        return;
    }
    now = cache_now(rq->a->cache);
    life = e->expires_ms - e->created_ms;
    if ((double)(now - e->created_ms) < f * (double)life) {
        return;
    }
    /* No room for a successor but e's own (capacity 1): fetching one
     * would evict e, under the caller when the provider answers at once. */
    if (cache_full_with_victim(rq->a->cache, e)) {
        return;
    }
    e->refreshing = true;
    cache_id_successor(rq->a->cache, e->id, next);
    if (cache_lookup(rq->a->cache, next) != NULL) {
        return;
    }
    slot->m.refreshes++;
    log_debug("key %s: fetching the next data key ahead of expiry",
              slot->cfg->alias);
    (void)flight_background(rq->a, slot, next, ec, ec_ser, ec_len, NULL,
                            NULL);
}

/*
 * The successor fetched ahead for id, promoted to id, or NULL.  A stale
 * current entry under id is dropped first.
 */
static struct cache_entry *
take_successor(struct cache *c, const uint8_t id[CACHE_ID_LEN],
               struct cache_entry *stale_current)
{
    uint8_t next[CACHE_ID_LEN];
    struct cache_entry *s;

    cache_id_successor(c, id, next);
    if ((s = cache_lookup(c, next)) == NULL) {
        return NULL;
    }
    if (stale_current != NULL) {
        cache_supersede(c, stale_current);
    }
    cache_rekey(c, s, id);
    return s;
}

/*
 * With many keys cached, an entry's data key and header template are
 * usually not in the CPU cache.  The key is read once the message's
 * randomness is drawn, the template's EDK bytes only after the key
 * derivation: asking for both now overlaps those memory reads with the
 * work in between.
 */
static void
prefetch_for_encrypt(const struct cache_entry *e)
{
    const char *t = (const char *)e->tmpl;
    int i;

    __builtin_prefetch(e->dk);
    /* Four lines hold a typical header's bytes. */
    for (i = 0; t != NULL && i < 4; i++) {
        __builtin_prefetch(t + CACHE_LINE_BYTES * i);
    }
}

/*
 * With many keys cached, the bucket, the entry and its key are likely
 * cold.  Each half of the message's start (esdk_msg_start) covers one
 * round of memory reads, so the lookup that follows finds them at hand.
 */
static int
begin_while_fetching(struct req *rq, const struct cache *c,
                     const uint8_t id[CACHE_ID_LEN], uint16_t suite,
                     struct esdk_msg_start *ms)
{
    int r;

    cache_prefetch_bucket(c, id);
    if ((r = esdk_msg_start_begin(suite, ms)) != 0) {
        return req_fail(rq, r, "cannot draw a message ID: %s",
                        kc_strerror(r));
    }
    cache_prefetch_entry(c, id);
    esdk_msg_start_finish(ms);
    return 0;
}

int
flight_enc_entry(struct req *rq, struct keyslot *slot,
                 const struct esdk_ec *ec, const uint8_t *ec_ser,
                 size_t ec_len, size_t pt_len, struct esdk_msg_start *ms,
                 struct cache_entry **out)
{
    const struct key_config *k = slot->cfg;
    struct cache *c = rq->a->cache;
    const struct req_failure *fl;
    struct cache_entry *e;
    struct flight *f = NULL;
    uint8_t id[CACHE_ID_LEN];
    bool stale;
    int r;

    cache_id_enc(c, k->alias, ec_ser, ec_len, id);
    if (ms != NULL &&
        (r = begin_while_fetching(rq, c, id, k->suite, ms)) != 0) {
        return r;
    }
    e = cache_lookup_grace(c, id, k->encrypt_grace_ms, &stale);
    /* A used key that this message would push past max_bytes rotates.
     * An unused one always serves one message, even one larger than
     * max_bytes on its own, and is then retired: so every flight serves
     * at least one waiter and no request can starve. */
    if (e != NULL && e->messages > 0 && e->bytes + pt_len > k->max_bytes) {
        log_debug("key %s: data key would pass max_bytes; rotating",
                  k->alias);
        cache_retire(c, e);
        e = NULL;
    }
    fl = req_failure_find(rq, id);
    if (e != NULL && stale && fl != NULL && is_outage(fl->status)) {
        note_grace(slot, e, METRICS_OP_ENCRYPT);
        *out = e;
        return 0;
    }
    if (e == NULL || stale) {
        struct cache_entry *s = take_successor(c, id, e);

        if (s != NULL) {
            e = s;
            stale = false;
        }
    }
    if (e != NULL && !stale) {
        slot->n.cache_hits++;
        prefetch_for_encrypt(e);
        maybe_refresh(rq, slot, e, ec, ec_ser, ec_len);
        *out = e;
        return 0;
    }
    if ((r = flight_miss(rq, slot, fl, id)) != MISS_START) {
        return r;
    }
    {
        /* A successor already on its way: wait for it, not a new key. */
        uint8_t next[CACHE_ID_LEN];

        cache_id_successor(c, id, next);
        if ((f = flight_find(rq->a, next)) != NULL) {
            rq->wait_on = f;
            return REQ_PENDING;
        }
    }
    if ((r = flight_new(rq->a, slot, id, ec, ec_ser, ec_len, &f)) != 0 ||
        (r = cache_entry_new(CACHE_ENC, slot, 32, &f->e)) != 0) {
        flight_free(f);
        return req_fail(rq, r, "out of memory for a new data key");
    }
    f->stage = STAGE_GENERATE;
    f->ttl_ms = k->ttl_ms;
    r = flight_start(rq, f, out);
    if (r != 0 && r != REQ_PENDING && e != NULL && stale &&
        (e = grace_bridge(c, slot, id, NULL, k->encrypt_grace_ms, 0,
                          METRICS_OP_ENCRYPT)) != NULL) {
        *out = e;
        return 0;
    }
    return r;
}

/*
 * flight_prewarm - fetch the encryption key for (slot, ec) at start;
 * on_done hears the outcome (at once for a synchronous provider).
 */
int
flight_prewarm(struct agent *a, struct keyslot *slot,
               const struct esdk_ec *ec,
               void (*on_done)(struct agent *, void *, int), void *arg)
{
    struct kc_buf ec_ser;
    uint8_t id[CACHE_ID_LEN];
    int r;

    kc_buf_init(&ec_ser, 0);
    if ((r = esdk_ec_serialize(ec, &ec_ser)) == 0) {
        cache_id_enc(a->cache, slot->cfg->alias, ec_ser.data, ec_ser.len,
                     id);
        if (cache_lookup(a->cache, id) != NULL) {
            kc_buf_clear(&ec_ser);
            on_done(a, arg, 0); /* already cached: nothing to fetch */
            return 0;
        }
        r = flight_background(a, slot, id, ec, ec_ser.data, ec_ser.len,
                              on_done, arg);
    }
    kc_buf_clear(&ec_ser);
    return r;
}

int
flight_dec_key(struct req *rq, struct keyslot *slot,
               const struct esdk_header *h, const struct esdk_edk *edk,
               const uint8_t **dk)
{
    struct cache *c = rq->a->cache;
    const struct req_failure *fl;
    struct cache_entry *e;
    struct flight *f = NULL;
    uint8_t id[CACHE_ID_LEN];
    bool stale;
    int r;

    cache_id_dec(c, slot->cfg->alias, edk, h->ec_canonical.data,
                 h->ec_canonical.len, id);
    e = cache_lookup_dec(c, id, slot->cfg->alias, h->ec_canonical.data,
                         h->ec_canonical.len, slot->cfg->decrypt_grace_ms,
                         &stale);
    if (e != NULL && e->dk_len != h->suite->key_len) {
        e = NULL;
    }
    fl = req_failure_find(rq, id);
    if (e != NULL && (!stale || (fl != NULL && is_outage(fl->status)))) {
        if (stale) {
            note_grace(slot, e, METRICS_OP_DECRYPT);
        } else {
            slot->n.cache_hits++;
        }
        *dk = e->dk;
        return 0;
    }
    if ((r = flight_miss(rq, slot, fl, id)) != MISS_START) {
        return r;
    }
    if ((r = flight_new(rq->a, slot, id, &h->ec, h->ec_canonical.data,
                        h->ec_canonical.len, &f)) != 0 ||
        (r = cache_entry_new(CACHE_DEC, slot, h->suite->key_len, &f->e)) !=
            0 ||
        (r = esdk_edk_list_add(&f->edk, edk->provider_id,
                               edk->provider_id_len, edk->provider_info,
                               edk->provider_info_len, edk->ciphertext,
                               edk->ciphertext_len)) != 0) {
        flight_free(f);
        return req_fail(rq, r, "out of memory for a data key");
    }
    f->stage = STAGE_UNWRAP;
    f->ttl_ms = slot->cfg->decrypt_ttl_ms;
    r = flight_start(rq, f, &e);
    if (r != 0 && r != REQ_PENDING && stale &&
        (e = grace_bridge(c, slot, id, &h->ec_canonical,
                          slot->cfg->decrypt_grace_ms,
                          h->suite->key_len, METRICS_OP_DECRYPT)) != NULL) {
        *dk = e->dk;
        return 0;
    }
    if (r != 0) {
        return r;
    }
    *dk = e->dk;
    return 0;
}
