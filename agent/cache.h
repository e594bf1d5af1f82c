/*
 * cache.h - data keys the agent holds, keyed by a 32-byte id.
 *
 * Two kinds of entry share one table, one LRU list and one capacity:
 * - encryption entries: id = H("enc", alias, canonical context); hold a
 *   data key, its encrypted data keys (EDKs) for the message header, and
 *   usage counters checked against the alias's max_messages/max_bytes;
 * - decryption entries: id = H("dec", alias, EDK, canonical context);
 *   hold a data key unwrapped from that EDK, or one that was an
 *   encryption key until it retired (see dec_id below).
 * H is keyed BLAKE2b with a per-process random key, so a client cannot
 * aim many ids at one hash bucket.
 *
 * Plaintext data keys live only in keymem slots (locked, non-dumpable)
 * and are wiped when an entry is removed, evicted or expires.  Time comes
 * from a clock function on CLOCK_MONOTONIC (tests pass their own), so
 * wall-clock jumps never extend or cut a TTL.
 *
 * Not thread-safe (the agent is single-threaded).
 */
#ifndef KC_CACHE_H
#define KC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esdk.h"
#include "keyring.h"

#define CACHE_ID_LEN 32

struct cache;

enum cache_kind {
    CACHE_ENC = 1,
    CACHE_DEC = 2,
};

struct cache_entry {
    /*
     * Laid out for a lookup and an encrypt with the entry cold in the
     * CPU cache.  Entries are 64-byte aligned (objpool.h): the
     * first cache line holds what a lookup compares and what an encrypt
     * prefetches next (the id, chain link, key and template pointers,
     * TTL); the second the counters and links a hit updates; the rest is
     * for decrypts and housekeeping.  A lookup fetches the first two
     * lines together.
     */
    uint8_t id[CACHE_ID_LEN];
    struct cache_entry *hnext;  /* hash chain, owned by the cache */
    uint8_t *dk;                /* keymem slot, dk_len bytes */
    struct esdk_tmpl *tmpl;     /* encryption entries, suite 0x0478: the
                                 * header serialized once (esdk.h) */
    uint64_t expires_ms;
    /* second cache line */
    uint64_t messages;          /* messages encrypted with dk */
    uint64_t bytes;             /* plaintext bytes encrypted with dk */
    uint64_t created_ms;
    struct cache_entry *lprev;  /* LRU list, owned by the cache */
    struct cache_entry *lnext;
    struct keyslot *slot;       /* retained: the alias it belongs to */
    size_t dk_len;
    enum cache_kind kind;
    bool refreshing;            /* a successor is being fetched */
    bool in_table;
    uint8_t grace_logged;       /* bit 1 << metrics op: used past its
                                 * TTL for that op; logged once each */
    /*
     * Encryption entries: the id this data key has as a decryption key
     * for the messages it wrote, and when that use ends (dec_expires_ms,
     * 0: none).  Decrypts find the key here while it still encrypts; when
     * it stops (usage cap, TTL, successor) the entry moves to dec_id and
     * lives on until dec_expires_ms.  One entry per data key, never two
     * copies.
     */
    uint8_t dec_id[CACHE_ID_LEN];
    uint64_t dec_expires_ms;
    struct esdk_edk_list edks;  /* encryption entries: header EDKs, until
                                 * tmpl holds them */
    /* The rest of CACHE_ENTRY_BYTES: tmpl, when it fits here. */
    uint64_t tmpl_room[];
};

/*
 * Bytes per entry, from a huge-page object pool (objpool.h).  The header
 * template is built inside the entry when it fits: a 0x0478 header with
 * one local-provider EDK and a short context does (about 150 bytes), so
 * an encrypt reads contiguous memory.  Larger ones (KMS EDKs) are
 * allocated apart.
 */
#define CACHE_ENTRY_BYTES 384

/* The CPU cache line the entry layout and its prefetches assume. */
#define CACHE_LINE_BYTES 64

struct cache_totals {
    size_t entries;
    size_t capacity;
    uint64_t evictions;   /* removed to make room (LRU) */
    uint64_t expirations; /* removed because the TTL passed */
    uint64_t retired;     /* encryption entries removed at a usage cap */
};

typedef uint64_t (*cache_clock_fn)(void);

/* cache_clock_monotonic - milliseconds on CLOCK_MONOTONIC. */
uint64_t cache_clock_monotonic(void);

/*
 * cache_new - a cache of at most capacity entries using clock (NULL =
 * cache_clock_monotonic).  Returns 0 with *out (cache_free), KC_ENOMEM.
 */
KC_MUST_USE int cache_new(size_t capacity, cache_clock_fn clock,
                          struct cache **out);

/* cache_free - wipe and free every entry, then the cache. NULL: no-op. */
void cache_free(struct cache *c);

/* cache_now - the cache's clock, in milliseconds. */
uint64_t cache_now(const struct cache *c);

/* Ids for the two kinds of entry. */
void cache_id_enc(const struct cache *c, const char *alias,
                  const uint8_t *ec_ser, size_t ec_len,
                  uint8_t id[CACHE_ID_LEN]);
void cache_id_dec(const struct cache *c, const char *alias,
                  const struct esdk_edk *edk, const uint8_t *ec_ser,
                  size_t ec_len, uint8_t id[CACHE_ID_LEN]);

/*
 * cache_id_successor - the id under which the next data key for id is
 * kept while it waits to take over (refresh-ahead).
 */
void cache_id_successor(const struct cache *c, const uint8_t id[CACHE_ID_LEN],
                        uint8_t out[CACHE_ID_LEN]);

/*
 * cache_lookup_dec - the key for decryption id dec_id: a decryption
 * entry, or else the encryption entry of the same alias and canonical
 * context (ec_ser) if it wrote that EDK; the encryption id is hashed only
 * when the first lookup misses.  grace_ms and *stale as for
 * cache_lookup_grace, against the key's decryption lifetime.
 */
struct cache_entry *cache_lookup_dec(struct cache *c,
                                     const uint8_t dec_id[CACHE_ID_LEN],
                                     const char *alias,
                                     const uint8_t *ec_ser, size_t ec_len,
                                     uint64_t grace_ms, bool *stale);

/*
 * cache_supersede - an encryption entry replaced by its successor: it
 * stops encrypting and stays only as a decryption key (or goes).
 */
void cache_supersede(struct cache *c, struct cache_entry *e);

/* cache_rekey - move e (in the table) to id, keeping its TTL. */
void cache_rekey(struct cache *c, struct cache_entry *e,
                 const uint8_t id[CACHE_ID_LEN]);

/*
 * cache_lookup - the live entry with this id, or NULL.  An entry whose
 * TTL has passed is removed (wiped), or if it was encrypting kept only
 * as a decryption key (cache_retire), and NULL returned.  A hit becomes the
 * most recently used.  The pointer is borrowed: valid until the next call
 * that may remove entries.
 */
struct cache_entry *cache_lookup(struct cache *c,
                                 const uint8_t id[CACHE_ID_LEN]);

/*
 * Start fetching what a lookup of id will read, so that the caller's
 * other work overlaps the memory reads: cache_prefetch_bucket the hash
 * bucket; then, once that has had time to land, cache_prefetch_entry the
 * first entry of its chain (the two lines a lookup reads, an inline
 * header template) and that entry's data key.  Hints only: nothing
 * changes.
 */
void cache_prefetch_bucket(const struct cache *c,
                           const uint8_t id[CACHE_ID_LEN]);
void cache_prefetch_entry(const struct cache *c,
                          const uint8_t id[CACHE_ID_LEN]);

/*
 * cache_lookup_grace - like cache_lookup, but an entry up to grace_ms
 * past its TTL is kept and returned with *stale set, for use only if the
 * provider cannot supply a fresh key (outage grace).  Past the grace it
 * is removed like any expired entry.
 */
struct cache_entry *cache_lookup_grace(struct cache *c,
                                       const uint8_t id[CACHE_ID_LEN],
                                       uint64_t grace_ms, bool *stale);

/*
 * cache_entry_new - an entry outside the table with a zeroed dk_len-byte
 * key slot, for the caller to fill.  Returns 0 with *out, or KC_ENOMEM
 * (no locked memory left).  Insert it with cache_insert or drop it with
 * cache_entry_free.
 */
KC_MUST_USE int cache_entry_new(enum cache_kind kind, struct keyslot *slot,
                                size_t dk_len, struct cache_entry **out);

/* cache_entry_free - wipe and free an entry not in the table. */
void cache_entry_free(struct cache_entry *e);

/*
 * cache_entry_build_tmpl - give encryption entry e (tmpl NULL, its EDKs
 * in e->edks) the header template for messages under suite with context
 * ec and frame_len-byte frames; the EDKs then live only in the template.
 * Returns 0 or an esdk_tmpl_new error.
 */
KC_MUST_USE int cache_entry_build_tmpl(struct cache_entry *e, uint16_t suite,
                                       const struct esdk_ec *ec,
                                       uint32_t frame_len);

/*
 * cache_insert - put e (takes ownership) in the table under id with a
 * TTL of ttl_ms from now, replacing any entry with the same id and
 * evicting the least recently used entries while at capacity.
 */
void cache_insert(struct cache *c, struct cache_entry *e,
                  const uint8_t id[CACHE_ID_LEN], uint64_t ttl_ms);

/*
 * cache_full_with_victim - would inserting one more entry now evict e?
 * (A request holding e must not insert before it is done with e.)
 */
bool cache_full_with_victim(const struct cache *c,
                            const struct cache_entry *e);

/* cache_remove - take e out of the table, wipe and free it. */
void cache_remove(struct cache *c, struct cache_entry *e);

/*
 * cache_retire - an encryption entry reached a usage cap: counted as
 * retired, it stops encrypting and stays only as a decryption key while
 * its decryption lifetime lasts (otherwise it is removed).
 */
void cache_retire(struct cache *c, struct cache_entry *e);

/* cache_foreach - call fn for every entry (no removal during the walk). */
void cache_foreach(const struct cache *c,
                   void (*fn)(const struct cache_entry *e, void *arg),
                   void *arg);

/* cache_totals_get - current totals. */
void cache_totals_get(const struct cache *c, struct cache_totals *t);

#endif /* KC_CACHE_H */
