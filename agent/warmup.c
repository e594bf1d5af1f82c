/*
 * warmup.c - pre-warm the cache and track readiness.
 *
 * prewarm syntax, per [key.ALIAS]: contexts separated by '|', each a
 * comma-separated list of key=value pairs, or '-' for the empty context:
 *     prewarm = table=users,column=email | -
 * (Not ';': the INI reader takes " ;" as the start of a comment.)
 */
#include "warmup.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "request.h"

#define WARMUP_RETRY_S 5

struct warm_item {
    struct keyslot *slot;
    struct esdk_ec ec;
    bool done;
};

struct warmup {
    struct warm_item *items;
    size_t n;
    struct event *retry;
    void (*on_ready)(struct agent *);
};

static struct warmup *wu; /* one agent per process */

/* Parse one context ("k=v,k=v" or "-") of len bytes into ec. */
static int
parse_context(const char *s, size_t len, struct esdk_ec *ec)
{
    size_t i = 0;

    while (i < len && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    while (len > i && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    if (len - i == 1 && s[i] == '-') {
        return 0;
    }
    while (i < len) {
        size_t end = i, eq;

        while (end < len && s[end] != ',') {
            end++;
        }
        for (eq = i; eq < end && s[eq] != '='; eq++) {
        }
        while (i < eq && s[i] == ' ') {
            i++;
        }
        if (eq == end || eq == i ||
            esdk_ec_add(ec, s + i, eq - i, s + eq + 1, end - eq - 1) != 0) {
            return KC_ECONFIG;
        }
        i = end + 1;
    }
    return ec->n > 0 ? esdk_ec_check_caller(ec) : KC_ECONFIG;
}

/* Call fn for every context of text; stops at the first error. */
static int
each_context(const char *text, int (*fn)(const char *, size_t, void *),
             void *arg)
{
    const char *p = text;
    int r;

    while (*p != '\0') {
        size_t len = strcspn(p, "|");

        if ((r = fn(p, len, arg)) != 0) {
            return r;
        }
        p += len;
        p += *p == '|';
    }
    return 0;
}

/* Serialized contexts seen so far for one alias, to refuse repeats. */
struct seen_list {
    struct kc_buf v[64];
    size_t n;
};

static int
check_one(const char *s, size_t len, void *arg)
{
    struct seen_list *seen = arg;
    struct kc_buf ser;
    struct esdk_ec ec;
    size_t i;
    int r;

    esdk_ec_init(&ec);
    kc_buf_init(&ser, 0);
    if ((r = parse_context(s, len, &ec)) == 0 &&
        (r = esdk_ec_serialize(&ec, &ser)) == 0) {
        for (i = 0; i < seen->n; i++) {
            if (seen->v[i].len == ser.len &&
                (ser.len == 0 ||
                 memcmp(seen->v[i].data, ser.data, ser.len) == 0)) {
                r = KC_ECONFIG; /* the same context twice */
            }
        }
        if (r == 0 && seen->n < sizeof(seen->v) / sizeof(seen->v[0])) {
            seen->v[seen->n++] = ser;
            kc_buf_init(&ser, 0);
        } else if (r == 0) {
            r = KC_ECONFIG; /* more than 64 contexts for one alias */
        }
    }
    kc_buf_clear(&ser);
    esdk_ec_clear(&ec);
    return r;
}

int
warmup_parse_check(const struct agent_config *cfg, char *err, size_t errlen)
{
    const struct key_config *k;

    for (k = cfg->keys; k != NULL; k = k->next) {
        struct seen_list seen;
        size_t i;
        int r;

        if (k->prewarm == NULL) {
            continue;
        }
        seen.n = 0;
        r = each_context(k->prewarm, check_one, &seen);
        for (i = 0; i < seen.n; i++) {
            kc_buf_clear(&seen.v[i]);
        }
        if (r != 0) {
            snprintf(err, errlen,
                     "[key.%s] prewarm: expected at most 64 distinct "
                     "contexts like 'k=v,k=v | k=v' or '-' (keys unique, "
                     "not aws-crypto-)", k->alias);
            return KC_ECONFIG;
        }
    }
    return 0;
}

struct add_arg {
    struct warmup *w;
    struct keyslot *slot;
};

static int
add_one(const char *s, size_t len, void *arg)
{
    struct add_arg *aa = arg;
    struct warm_item *it, *nv;

    nv = realloc(aa->w->items, (aa->w->n + 1) * sizeof(*nv));
    if (nv == NULL) {
        return KC_ENOMEM;
    }
    aa->w->items = nv;
    it = &nv[aa->w->n];
    memset(it, 0, sizeof(*it));
    esdk_ec_init(&it->ec);
    it->slot = aa->slot;
    aa->w->n++;
    return parse_context(s, len, &it->ec);
}

static void
warm_check_ready(struct agent *a)
{
    size_t i, pending = 0;

    for (i = 0; i < wu->n; i++) {
        pending += !wu->items[i].done;
    }
    a->warmup_pending = pending;
    if (pending == 0 && !a->ready) {
        a->ready = true;
        log_info("ready: %zu pre-warm keys fetched", wu->n);
        if (wu->on_ready != NULL) {
            wu->on_ready(a);
        }
    }
}

/*
 * A flight's argument names the item as generation and index, never as
 * a pointer: a reload restarts pre-warm, and an older flight landing
 * afterwards must find nothing rather than freed memory.
 */
static unsigned int wu_gen;

static void *
item_tag(size_t i)
{
    return (void *)(((uintptr_t)wu_gen << 20) | (uintptr_t)i);
}

static struct warm_item *
item_of(void *tag)
{
    uintptr_t t = (uintptr_t)tag;
    size_t i = (size_t)(t & 0xfffff);

    if (wu == NULL || (t >> 20) != wu_gen || i >= wu->n) {
        return NULL;
    }
    return &wu->items[i];
}

static void
warm_done(struct agent *a, void *tag, int status)
{
    struct warm_item *it = item_of(tag);

    if (it == NULL || it->done) {
        return;
    }
    if (status == 0) {
        it->done = true;
    } else {
        a->warmup_failed++;
        log_warn("key %s: pre-warm fetch failed: %s; retrying in %d s",
                 it->slot->cfg->alias, kc_errname(status), WARMUP_RETRY_S);
    }
    warm_check_ready(a);
    if (!it->done && wu->retry != NULL) {
        struct timeval tv = {WARMUP_RETRY_S, 0};

        evtimer_add(wu->retry, &tv);
    }
}

static void
warm_fetch_all(struct agent *a)
{
    struct timeval tv = {WARMUP_RETRY_S, 0};
    size_t i;

    for (i = 0; wu != NULL && i < wu->n; i++) {
        if (wu->items[i].done) {
            continue;
        }
        if (flight_prewarm(a, wu->items[i].slot, &wu->items[i].ec, warm_done,
                           item_tag(i)) != 0) {
            log_warn("key %s: cannot start pre-warm fetch; retrying in %d s",
                     wu->items[i].slot->cfg->alias, WARMUP_RETRY_S);
            if (wu->retry != NULL) {
                evtimer_add(wu->retry, &tv);
            }
        }
    }
}

static void
warm_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    warm_fetch_all(arg);
}

int
warmup_start(struct agent *a, void (*on_ready)(struct agent *))
{
    struct add_arg aa;
    size_t i;
    int r;

    if ((wu = calloc(1, sizeof(*wu))) == NULL) {
        return KC_ENOMEM;
    }
    wu_gen++;
    wu->on_ready = on_ready;
    aa.w = wu;
    for (i = 0; i < a->keys->n; i++) {
        aa.slot = &a->keys->slots[i];
        if (aa.slot->cfg->prewarm != NULL &&
            (r = each_context(aa.slot->cfg->prewarm, add_one, &aa)) != 0) {
            return r == KC_ENOMEM ? r : KC_ECONFIG;
        }
    }
    if (a->base != NULL &&
        (wu->retry = evtimer_new(a->base, warm_retry_cb, a)) == NULL) {
        return KC_ENOMEM;
    }
    a->warmup_pending = wu->n;
    warm_fetch_all(a);
    warm_check_ready(a);
    return 0;
}

void
warmup_stop(struct agent *a)
{
    size_t i;

    if (wu == NULL) {
        return;
    }
    if (wu->retry != NULL) {
        event_free(wu->retry);
    }
    for (i = 0; i < wu->n; i++) {
        esdk_ec_clear(&wu->items[i].ec);
    }
    free(wu->items);
    free(wu);
    wu = NULL;
}
