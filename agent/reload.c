/*
 * reload.c - live configuration reload.
 *
 * The new config and keyring are built and checked completely before
 * anything changes, so a bad file never disturbs the running agent.
 * The swap is immediate.  Provider calls still in the air hold their
 * old keyring (and its config) alive: it is retired, and freed on a
 * later loop turn once its last flight has landed, never from inside a
 * provider callback.  What such a flight fetches is cached only if the
 * reload left its alias's key and message format as they were.
 */
#include "reload.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "warmup.h"

struct staged {
    struct agent_config *cfg;
    struct keyring *keys;
    struct authz_policy stats_policy;
};

/*
 * Cached data keys of an alias stay valid across a reload when the same
 * key, from the same key file, wraps them (provider_same_key: for local
 * keys, the key bytes) and the messages they head are written alike
 * (suite, frame length: an encryption entry keeps a header template).
 */
struct keyslot *
reload_slot_successor(struct keyring *kr, const struct keyslot *o)
{
    const char *alias = o->cfg->alias;
    struct keyslot *n = keyring_find(kr, alias, strlen(alias));

    if (n != NULL && provider_same_key(o->provider, n->provider) &&
        config_str_same(o->cfg->key_file, n->cfg->key_file) &&
        o->cfg->suite == n->cfg->suite &&
        o->cfg->frame_len == n->cfg->frame_len) {
        return n;
    }
    return NULL;
}

struct remap {
    struct agent *a;
    struct keyring *nk;
    struct cache_entry **drop;
    size_t ndrop;
    size_t cap;
};

static void
remap_visit(const struct cache_entry *ce, void *arg)
{
    struct remap *m = arg;
    struct cache_entry *e = (struct cache_entry *)ce;
    struct keyslot *ns = reload_slot_successor(m->nk, e->slot);

    if (ns != NULL) {
        e->slot->entries--;
        ns->entries++;
        e->slot = ns;
        return;
    }
    if (m->ndrop < m->cap) {
        m->drop[m->ndrop++] = e;
    }
}

static void
carry_counters(struct keyring *old, struct keyring *nk)
{
    size_t i;

    for (i = 0; i < nk->n; i++) {
        const char *alias = nk->slots[i].cfg->alias;
        struct keyslot *os = keyring_find(old, alias, strlen(alias));

        if (os != NULL) {
            nk->slots[i].n = os->n;
            nk->slots[i].m = os->m;
        }
    }
}

/* Free every retired keyring no flight uses any more. */
static void
retired_free_idle(struct agent *a)
{
    struct keyring **pp = &a->retired, *kr;

    while ((kr = *pp) != NULL) {
        if (kr->nflights > 0) {
            pp = &kr->next_retired;
            continue;
        }
        *pp = kr->next_retired;
        config_free(kr->cfg);
        kr->cfg = NULL;
        keyring_free(kr);
    }
}

static void
retired_later(evutil_socket_t fd, short what, void *arg)
{
    retired_free_idle(arg);
}

void
reload_retired_idle(struct agent *a)
{
    struct timeval now = {0, 0};

    /* Called as a flight ends, with its provider still on the stack:
     * free on the next loop turn. */
    if (a->base == NULL ||
        event_base_once(a->base, -1, EV_TIMEOUT, retired_later, a,
                        &now) != 0) {
        return; /* freed at exit by reload_discard instead */
    }
}

static void
apply(struct agent *a, struct staged *st)
{
    struct cache_totals t;
    struct remap m;
    struct keyring *old_keys = a->keys;
    struct agent_config *old_cfg = a->cfg_owned;
    size_t i;

    cache_totals_get(a->cache, &t);
    memset(&m, 0, sizeof(m));
    m.a = a;
    m.nk = st->keys;
    m.cap = t.entries;
    m.drop = calloc(m.cap + 1, sizeof(*m.drop));
    carry_counters(old_keys, st->keys);
    cache_foreach(a->cache, remap_visit, &m);
    for (i = 0; i < m.ndrop; i++) {
        cache_remove(a->cache, m.drop[i]); /* wipes */
    }
    free(m.drop);

    warmup_stop(a);
    a->keys = st->keys;
    a->keys_gen++; /* alias positions changed: audit grants afresh */
    a->cfg = st->cfg;
    a->cfg_owned = st->cfg;
    authz_policy_clear(&a->stats_policy);
    a->stats_policy = st->stats_policy;
    agent_limits_from_config(&a->limits, st->cfg);
    log_init(st->cfg->log_level, st->cfg->log_json);
    /* Retire the old keyring with its config; free it once idle. */
    old_keys->cfg = old_cfg;
    old_keys->next_retired = a->retired;
    a->retired = old_keys;
    retired_free_idle(a);
    log_info("reloaded: %zu key aliases; %zu cached keys wiped for removed "
             "or changed aliases", a->keys->n, m.ndrop);
    if (warmup_start(a, NULL) != 0) {
        log_warn("reload: cannot start pre-warm");
    }
}

/* Settings that need a restart: say so instead of ignoring silently. */
static void
warn_static(const struct agent_config *o, const struct agent_config *n)
{
    if (!config_str_same(o->socket_path, n->socket_path) ||
        o->socket_mode != n->socket_mode ||
        !config_str_same(o->socket_group, n->socket_group)) {
        log_warn("reload: socket settings changed; they apply at restart");
    }
    if (o->capacity != n->capacity) {
        log_warn("reload: capacity changed; it applies at restart");
    }
    if (o->max_frame != n->max_frame) {
        log_warn("reload: max_frame changed; it applies at restart");
    }
    if (!config_str_same(o->metrics_listen, n->metrics_listen)) {
        log_warn("reload: metrics_listen changed; it applies at restart");
    }
}

static void
staged_free(struct staged *st)
{
    if (st == NULL) {
        return;
    }
    keyring_free(st->keys);
    config_free(st->cfg);
    authz_policy_clear(&st->stats_policy);
    free(st);
}

int
reload_request(struct agent *a, char *err, size_t errlen)
{
    struct staged *st;
    int r;

    if ((st = calloc(1, sizeof(*st))) == NULL) {
        return KC_ENOMEM;
    }
    if ((r = config_load(a->config_path, &st->cfg, err, errlen)) != 0 ||
        (r = warmup_parse_check(st->cfg, err, errlen)) != 0 ||
        (r = keyring_new(st->cfg, a->base, &st->keys, err, errlen)) != 0 ||
        (r = authz_policy_parse(st->cfg->allow_stats, &st->stats_policy,
                                err, errlen)) != 0) {
        log_error("reload failed; keeping the running config: %s", err);
        staged_free(st);
        return r;
    }
    /* The wire limit cannot change under open connections. */
    st->cfg->max_frame = a->cfg->max_frame;
    warn_static(a->cfg, st->cfg);
    apply(a, st);
    free(st); /* its parts now belong to the agent */
    return 0;
}

void
reload_discard(struct agent *a)
{
    struct keyring *kr;

    while ((kr = a->retired) != NULL) { /* at exit: flights are gone */
        a->retired = kr->next_retired;
        config_free(kr->cfg);
        keyring_free(kr);
    }
}
