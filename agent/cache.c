/*
 * cache.c - hash table + LRU list of data-key entries.
 */
#include "cache.h"

#include <sodium.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "keymem.h"
#include "objpool.h"

_Static_assert(offsetof(struct cache_entry, messages) == CACHE_LINE_BYTES,
               "a lookup's fields fill exactly the first cache line");
_Static_assert(offsetof(struct cache_entry, dec_id) <= 2 * CACHE_LINE_BYTES,
               "a hit's fields fit in the first two cache lines");
_Static_assert(sizeof(struct cache_entry) + 128 <= CACHE_ENTRY_BYTES,
               "room for a typical header template");
_Static_assert(OBJPOOL_ALIGN % CACHE_LINE_BYTES == 0,
               "pooled entries start on a cache line");

/*
 * Every entry, of every cache, comes from one pool (the agent is
 * single-threaded), except under AddressSanitizer: there entries are
 * ordinary heap blocks, so ASan's quarantine reports a use after free and
 * LeakSanitizer an entry never freed.  A pool that hands a freed object
 * straight back out would hide both.
 */
#ifdef OBJPOOL_ASAN
static void *
entry_alloc(void)
{
    return aligned_alloc(OBJPOOL_ALIGN, CACHE_ENTRY_BYTES);
}

static void
entry_release(void *e)
{
    free(e);
}
#else
static struct objpool entry_pool = OBJPOOL_INIT(CACHE_ENTRY_BYTES);

static void *
entry_alloc(void)
{
    return objpool_get(&entry_pool);
}

static void
entry_release(void *e)
{
    objpool_put(&entry_pool, e);
}
#endif

/*
 * A hash bucket: its chain, and the key slot of the chain's first entry,
 * so that cache_prefetch_entry can ask for the key with the entry
 * (an entry's dk never changes while it is in the table).
 */
struct bucket {
    struct cache_entry *head;
    const uint8_t *head_dk;
};

struct cache {
    struct bucket *buckets;
    size_t nbuckets; /* power of two */
    struct cache_entry *lru_head; /* most recently used */
    struct cache_entry *lru_tail; /* least recently used */
    cache_clock_fn clock;
    uint8_t hash_key[crypto_generichash_KEYBYTES];
    struct cache_totals t;
};

uint64_t
cache_clock_monotonic(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int
cache_new(size_t capacity, cache_clock_fn clock, struct cache **out)
{
    struct cache *c;
    size_t nb = 16;

    if (capacity == 0) {
        return KC_EINVAL;
    }
    /* Twice as many buckets as entries: a hit walks 1.25 entries on
     * average, each one a likely cache miss with many keys, and finds
     * its entry first in the chain (what cache_prefetch_entry fetches)
     * four times in five. */
    while (nb / 2 < capacity && nb < ((size_t)1 << 30)) {
        nb <<= 1;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return KC_ENOMEM;
    }
    if ((c->buckets = objpool_table_new(nb * sizeof(*c->buckets))) == NULL) {
        free(c);
        return KC_ENOMEM;
    }
    c->nbuckets = nb;
    c->clock = clock != NULL ? clock : cache_clock_monotonic;
    c->t.capacity = capacity;
    randombytes_buf(c->hash_key, sizeof(c->hash_key));
    *out = c;
    return 0;
}

uint64_t
cache_now(const struct cache *c)
{
    return c->clock();
}

/*
 * Ids are BLAKE2b-256 over the per-process random key followed by the
 * parts, each prefixed with its length so no two inputs hash alike by
 * shifting bytes between neighbouring fields.  A fixed-length secret
 * prefix is enough to make BLAKE2b a PRF (it has no length extension),
 * and unlike BLAKE2b's keyed mode, which spends a whole 128-byte block on
 * the key, an encryption id of a short context takes one compression.
 */
static void
id_begin(const struct cache *c, crypto_generichash_state *st)
{
    crypto_generichash_init(st, NULL, 0, CACHE_ID_LEN);
    crypto_generichash_update(st, c->hash_key, sizeof(c->hash_key));
}

static void
hash_part(crypto_generichash_state *st, const void *p, size_t n)
{
    uint8_t len[4];

    /* Every part is far below 4 GiB: contexts and EDK fields are at most
     * 65535 bytes in the message format, aliases shorter still. */
    kc_store_u32(len, (uint32_t)n);
    crypto_generichash_update(st, len, sizeof(len));
    crypto_generichash_update(st, p, n);
}

void
cache_id_enc(const struct cache *c, const char *alias, const uint8_t *ec_ser,
             size_t ec_len, uint8_t id[CACHE_ID_LEN])
{
    crypto_generichash_state st;

    id_begin(c, &st);
    hash_part(&st, "enc", 3);
    hash_part(&st, alias, strlen(alias));
    hash_part(&st, ec_ser, ec_len);
    crypto_generichash_final(&st, id, CACHE_ID_LEN);
}

void
cache_id_dec(const struct cache *c, const char *alias,
             const struct esdk_edk *edk, const uint8_t *ec_ser,
             size_t ec_len, uint8_t id[CACHE_ID_LEN])
{
    crypto_generichash_state st;

    id_begin(c, &st);
    hash_part(&st, "dec", 3);
    hash_part(&st, alias, strlen(alias));
    hash_part(&st, edk->provider_id, edk->provider_id_len);
    hash_part(&st, edk->provider_info, edk->provider_info_len);
    hash_part(&st, edk->ciphertext, edk->ciphertext_len);
    hash_part(&st, ec_ser, ec_len);
    crypto_generichash_final(&st, id, CACHE_ID_LEN);
}

void
cache_id_successor(const struct cache *c, const uint8_t id[CACHE_ID_LEN],
                   uint8_t out[CACHE_ID_LEN])
{
    crypto_generichash_state st;

    id_begin(c, &st);
    hash_part(&st, "next", 4);
    hash_part(&st, id, CACHE_ID_LEN);
    crypto_generichash_final(&st, out, CACHE_ID_LEN);
}

static size_t
bucket_of(const struct cache *c, const uint8_t id[CACHE_ID_LEN])
{
    return (size_t)kc_load_u64(id) & (c->nbuckets - 1);
}

static void
lru_unlink(struct cache *c, struct cache_entry *e)
{
    if (e->lprev != NULL) {
        e->lprev->lnext = e->lnext;
    } else {
        c->lru_head = e->lnext;
    }
    if (e->lnext != NULL) {
        e->lnext->lprev = e->lprev;
    } else {
        c->lru_tail = e->lprev;
    }
    e->lprev = e->lnext = NULL;
}

static void
lru_push_front(struct cache *c, struct cache_entry *e)
{
    e->lprev = NULL;
    e->lnext = c->lru_head;
    if (c->lru_head != NULL) {
        c->lru_head->lprev = e;
    }
    c->lru_head = e;
    if (c->lru_tail == NULL) {
        c->lru_tail = e;
    }
}

static void
table_unlink(struct cache *c, struct cache_entry *e)
{
    struct bucket *b = &c->buckets[bucket_of(c, e->id)];
    struct cache_entry **pp = &b->head;

    while (*pp != NULL && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp == e) {
        *pp = e->hnext;
    }
    e->hnext = NULL;
    b->head_dk = b->head != NULL ? b->head->dk : NULL;
}

static void
table_link(struct cache *c, struct cache_entry *e)
{
    struct bucket *b = &c->buckets[bucket_of(c, e->id)];

    e->hnext = b->head;
    b->head = e;
    b->head_dk = e->dk;
}

int
cache_entry_new(enum cache_kind kind, struct keyslot *slot, size_t dk_len,
                struct cache_entry **out)
{
    struct cache_entry *e;

    if ((e = entry_alloc()) == NULL) {
        return KC_ENOMEM;
    }
    memset(e, 0, CACHE_ENTRY_BYTES);
    if ((e->dk = keymem_alloc(dk_len)) == NULL) {
        entry_release(e);
        return KC_ENOMEM;
    }
    e->kind = kind;
    e->slot = slot;
    e->dk_len = dk_len;
    esdk_edk_list_init(&e->edks);
    *out = e;
    return 0;
}

static void
tmpl_drop(struct cache_entry *e)
{
    if ((void *)e->tmpl != (void *)e->tmpl_room) {
        esdk_tmpl_free(e->tmpl);
    }
    e->tmpl = NULL;
}

int
cache_entry_build_tmpl(struct cache_entry *e, uint16_t suite,
                       const struct esdk_ec *ec, uint32_t frame_len)
{
    int r;

    r = esdk_tmpl_new_in(suite, ec, &e->edks, frame_len, e->tmpl_room,
                         CACHE_ENTRY_BYTES - sizeof(*e), &e->tmpl);
    if (r == 0) {
        esdk_edk_list_clear(&e->edks);
    }
    return r;
}

void
cache_entry_free(struct cache_entry *e)
{
    if (e == NULL) {
        return;
    }
    keymem_free(e->dk); /* wipes */
    esdk_edk_list_clear(&e->edks);
    tmpl_drop(e);
    sodium_memzero(e, CACHE_ENTRY_BYTES);
    entry_release(e);
}

void
cache_remove(struct cache *c, struct cache_entry *e)
{
    if (e->in_table) {
        table_unlink(c, e);
        lru_unlink(c, e);
        c->t.entries--;
        if (e->slot != NULL) {
            e->slot->entries--;
        }
    }
    cache_entry_free(e);
}

/* An audit line for an entry leaving the cache for a reason. */
static void
note(const struct cache_entry *e, const char *event)
{
    if (e->slot != NULL) {
        audit_key_event(e->slot->cfg->alias, event,
                        e->kind == CACHE_ENC ? "encryption key"
                                             : "decryption key");
    }
}

/*
 * Ids are compared with plain memcmp: they are keyed hashes, so how long
 * a comparison takes tells an observer nothing about a key or a context.
 */
static struct cache_entry *
find(const struct cache *c, const uint8_t id[CACHE_ID_LEN])
{
    struct cache_entry *e = c->buckets[bucket_of(c, id)].head;

    while (e != NULL) {
        /* A hit reads the second line too: start both misses at once. */
        __builtin_prefetch((const char *)e + CACHE_LINE_BYTES);
        if (memcmp(e->id, id, CACHE_ID_LEN) == 0) {
            break;
        }
        e = e->hnext;
    }
    return e;
}

void
cache_prefetch_bucket(const struct cache *c, const uint8_t id[CACHE_ID_LEN])
{
    __builtin_prefetch(&c->buckets[bucket_of(c, id)]);
}

void
cache_prefetch_entry(const struct cache *c, const uint8_t id[CACHE_ID_LEN])
{
    const struct bucket *b = &c->buckets[bucket_of(c, id)];
    const char *e = (const char *)b->head;
    size_t off;

    if (e == NULL) {
        return;
    }
    /* The lookup's two lines, the key, and where an inline template
     * lives (a template held apart is fetched after the lookup). */
    __builtin_prefetch(e);
    __builtin_prefetch(e + CACHE_LINE_BYTES);
    __builtin_prefetch(b->head_dk);
    for (off = offsetof(struct cache_entry, tmpl_room) &
               ~(size_t)(CACHE_LINE_BYTES - 1);
         off < CACHE_ENTRY_BYTES; off += CACHE_LINE_BYTES) {
        __builtin_prefetch(e + off);
    }
}

/*
 * An encryption entry that stops encrypting: it moves to its decryption
 * id, where it expires like any decryption entry (at dec_expires_ms, or
 * later within the alias's decrypt_grace while a provider is down).  It
 * is removed instead if it never encrypted a message (nothing to
 * decrypt) or that id is taken.  Its header template and counters go.
 */
static void
stop_encrypting(struct cache *c, struct cache_entry *e)
{
    if (e->kind != CACHE_ENC || e->dec_expires_ms == 0 || e->messages == 0 ||
        find(c, e->dec_id) != NULL) {
        cache_remove(c, e);
        return;
    }
    table_unlink(c, e);
    e->kind = CACHE_DEC;
    memcpy(e->id, e->dec_id, CACHE_ID_LEN);
    e->expires_ms = e->dec_expires_ms;
    e->dec_expires_ms = 0;
    e->messages = e->bytes = 0;
    e->refreshing = false;
    e->grace_logged = 0;
    tmpl_drop(e);
    esdk_edk_list_clear(&e->edks);
    table_link(c, e);
}

void
cache_retire(struct cache *c, struct cache_entry *e)
{
    c->t.retired++;
    note(e, "cap_reached");
    stop_encrypting(c, e);
}

void
cache_supersede(struct cache *c, struct cache_entry *e)
{
    stop_encrypting(c, e);
}

struct cache_entry *
cache_lookup_grace(struct cache *c, const uint8_t id[CACHE_ID_LEN],
                   uint64_t grace_ms, bool *stale)
{
    struct cache_entry *e = find(c, id);
    uint64_t now;

    *stale = false;
    if (e == NULL) {
        return NULL;
    }
    now = c->clock();
    if (now >= e->expires_ms) {
        if (now - e->expires_ms < grace_ms) {
            *stale = true;
            return e;
        }
        c->t.expirations++;
        note(e, "expired");
        stop_encrypting(c, e);
        return NULL;
    }
    lru_unlink(c, e);
    lru_push_front(c, e);
    return e;
}

struct cache_entry *
cache_lookup_dec(struct cache *c, const uint8_t dec_id[CACHE_ID_LEN],
                 const char *alias, const uint8_t *ec_ser, size_t ec_len,
                 uint64_t grace_ms, bool *stale)
{
    uint8_t enc_id[CACHE_ID_LEN];
    struct cache_entry *e;
    uint64_t now;

    if ((e = cache_lookup_grace(c, dec_id, grace_ms, stale)) != NULL) {
        return e;
    }
    cache_id_enc(c, alias, ec_ser, ec_len, enc_id);
    /* Still encrypting?  Its own TTL does not matter here: that one
     * bounds encryption, dec_expires_ms bounds decryption. */
    e = find(c, enc_id);
    if (e == NULL || e->kind != CACHE_ENC || e->dec_expires_ms == 0 ||
        memcmp(e->dec_id, dec_id, CACHE_ID_LEN) != 0) {
        return NULL;
    }
    now = c->clock();
    if (now >= e->dec_expires_ms) {
        if (now - e->dec_expires_ms >= grace_ms) {
            return NULL;
        }
        *stale = true;
        return e;
    }
    lru_unlink(c, e);
    lru_push_front(c, e);
    return e;
}

struct cache_entry *
cache_lookup(struct cache *c, const uint8_t id[CACHE_ID_LEN])
{
    bool stale;

    return cache_lookup_grace(c, id, 0, &stale);
}

void
cache_rekey(struct cache *c, struct cache_entry *e,
            const uint8_t id[CACHE_ID_LEN])
{
    table_unlink(c, e);
    memcpy(e->id, id, CACHE_ID_LEN);
    table_link(c, e);
}

bool
cache_full_with_victim(const struct cache *c, const struct cache_entry *e)
{
    return c->t.entries >= c->t.capacity && c->lru_tail == e;
}

void
cache_insert(struct cache *c, struct cache_entry *e,
             const uint8_t id[CACHE_ID_LEN], uint64_t ttl_ms)
{
    struct cache_entry *old;

    /* Replace, never duplicate, an id.  A replaced encryption key still
     * decrypts what it wrote. */
    if ((old = find(c, id)) != NULL) {
        stop_encrypting(c, old);
    }
    while (c->t.entries >= c->t.capacity && c->lru_tail != NULL) {
        c->t.evictions++;
        note(c->lru_tail, "evicted");
        cache_remove(c, c->lru_tail);
    }
    memcpy(e->id, id, CACHE_ID_LEN);
    e->created_ms = c->clock();
    e->expires_ms = e->created_ms + ttl_ms;
    table_link(c, e);
    lru_push_front(c, e);
    e->in_table = true;
    c->t.entries++;
    if (e->slot != NULL) {
        e->slot->entries++;
    }
}

void
cache_foreach(const struct cache *c,
              void (*fn)(const struct cache_entry *e, void *arg), void *arg)
{
    const struct cache_entry *e;

    for (e = c->lru_head; e != NULL; e = e->lnext) {
        fn(e, arg);
    }
}

void
cache_totals_get(const struct cache *c, struct cache_totals *t)
{
    *t = c->t;
}

void
cache_free(struct cache *c)
{
    if (c == NULL) {
        return;
    }
    while (c->lru_head != NULL) {
        cache_remove(c, c->lru_head);
    }
    objpool_table_free(c->buckets, c->nbuckets * sizeof(*c->buckets));
    sodium_memzero(c->hash_key, sizeof(c->hash_key));
    free(c);
}
