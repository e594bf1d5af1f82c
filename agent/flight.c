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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "log.h"
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
 * Put a finished flight's entry into the cache.  A fresh encryption key
 * also seeds a decryption entry for its first EDK, so reading back what
 * was just written costs no provider call.
 */
static struct cache_entry *
flight_commit(struct flight *f)
{
    struct cache *c = f->a->cache;
    struct cache_entry *e = f->e, *d;
    uint8_t id[CACHE_ID_LEN];

    f->e = NULL;
    if (e->kind == CACHE_ENC && e->edks.n > 0 &&
        cache_entry_new(CACHE_DEC, f->slot, e->dk_len, &d) == 0) {
        memcpy(d->dk, e->dk, e->dk_len);
        cache_id_dec(c, f->slot->cfg->alias, &e->edks.v[0], f->ec_ser.data,
                     f->ec_ser.len, id);
        cache_insert(c, d, id, f->slot->cfg->decrypt_ttl_ms);
    }
    audit_key_event(f->slot->cfg->alias,
                    e->kind == CACHE_ENC ? "generated" : "unwrapped",
                    f->slot->provider->ops->name);
    cache_insert(c, e, f->id, f->ttl_ms);
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

    flight_unlink(f);
    if (status == 0) {
        flight_commit(f);
    } else {
        audit_key_event(f->slot->cfg->alias, "provider_error",
                        f->perr.code[0] != '\0' ? f->perr.code
                                                : kc_errname(status));
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
fail_provider(struct req *rq, int status, const struct provider_error *pe)
{
    int code = status == KC_EAUTH ? KC_ENODATAKEY : KC_EPROVIDER;
    const char *what = status == KC_EAUTH ? "rejected" : "failed";

    if (pe == NULL || (pe->code[0] == '\0' && pe->message[0] == '\0')) {
        return req_fail(rq, code, "key %s: provider %s the data key: %s",
                        rq->slot != NULL ? rq->slot->cfg->alias : "?", what,
                        kc_strerror(status));
    }
    return req_fail(rq, code,
                    "key provider %s: %s (http %d, code %s, request id %s): "
                    "%s", what, kc_errname(status), pe->http_status,
                    pe->code[0] ? pe->code : "-",
                    pe->request_id[0] ? pe->request_id : "-", pe->message);
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
        f->next = rq->a->flights;
        if (f->next != NULL) {
            f->next->prev = f;
        }
        rq->a->flights = f;
        rq->wait_on = f;
        return REQ_PENDING;
    }
    if (r != 0) {
        r = fail_provider(rq, r, &f->perr);
        flight_free(f);
        return r;
    }
    *out = flight_commit(f);
    flight_free(f);
    return 0;
}

int
flight_enc_entry(struct req *rq, struct keyslot *slot,
                 const struct esdk_ec *ec, const uint8_t *ec_ser,
                 size_t ec_len, size_t pt_len, struct cache_entry **out)
{
    const struct key_config *k = slot->cfg;
    struct cache *c = rq->a->cache;
    const struct req_failure *fl;
    struct cache_entry *e;
    struct flight *f;
    uint8_t id[CACHE_ID_LEN];
    int r;

    cache_id_enc(c, k->alias, ec_ser, ec_len, id);
    e = cache_lookup(c, id);
    /* A used key that this message would push past max_bytes rotates.
     * An unused one always serves one message, even one larger than
     * max_bytes on its own, and is then retired: so every flight serves
     * at least one waiter and no request can starve. */
    if (e != NULL && e->messages > 0 && e->bytes + pt_len > k->max_bytes) {
        log_info("key %s: data key would pass max_bytes; rotating",
                 k->alias);
        cache_retire(c, e);
        e = NULL;
    }
    if (e != NULL) {
        slot->n.cache_hits++;
        *out = e;
        return 0;
    }
    if ((fl = req_failure_find(rq, id)) != NULL) {
        return fail_provider(rq, fl->status, &fl->perr);
    }
    slot->n.cache_misses++;
    if ((f = flight_find(rq->a, id)) != NULL) {
        rq->wait_on = f;
        return REQ_PENDING;
    }
    if ((r = flight_new(rq->a, slot, id, ec, ec_ser, ec_len, &f)) != 0 ||
        (r = cache_entry_new(CACHE_ENC, slot, 32, &f->e)) != 0) {
        flight_free(f);
        return req_fail(rq, r, "out of memory for a new data key");
    }
    f->stage = STAGE_GENERATE;
    f->ttl_ms = k->ttl_ms;
    return flight_start(rq, f, out);
}

int
flight_dec_key(struct req *rq, struct keyslot *slot,
               const struct esdk_header *h, const struct esdk_edk *edk,
               const uint8_t **dk)
{
    struct cache *c = rq->a->cache;
    const struct req_failure *fl;
    struct cache_entry *e;
    struct flight *f;
    uint8_t id[CACHE_ID_LEN];
    int r;

    cache_id_dec(c, slot->cfg->alias, edk, h->ec_canonical.data,
                 h->ec_canonical.len, id);
    e = cache_lookup(c, id);
    if (e != NULL && e->dk_len == h->suite->key_len) {
        slot->n.cache_hits++;
        *dk = e->dk;
        return 0;
    }
    if ((fl = req_failure_find(rq, id)) != NULL) {
        return fail_provider(rq, fl->status, &fl->perr);
    }
    slot->n.cache_misses++;
    if ((f = flight_find(rq->a, id)) != NULL) {
        rq->wait_on = f;
        return REQ_PENDING;
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
    if ((r = flight_start(rq, f, &e)) != 0) {
        return r;
    }
    *dk = e->dk;
    return 0;
}
