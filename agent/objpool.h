/*
 * objpool.h - fixed-size objects packed into 2 MiB chunks that the kernel
 * may back with transparent huge pages.
 *
 * The cache touches one entry per request, at random among up to
 * hundreds of thousands.  From malloc those entries sit on 4 KiB pages
 * scattered through the heap, so a lookup pays a TLB miss (a page walk,
 * nested under a hypervisor) on top of the cache miss.  A pool hands out
 * objects from 2 MiB-aligned chunks advised MADV_HUGEPAGE: one TLB entry
 * covers thousands of entries.  Objects are 64-byte aligned and carry no
 * allocator header, so an entry starts on a cache line and none is shared
 * with a neighbour's bookkeeping.
 *
 * Where the kernel grants huge pages a chunk is resident (2 MiB) from its
 * first object; on small pages, page by page as objects are first handed
 * out.  A chunk whose last object is returned is unmapped (one empty
 * chunk is kept to absorb churn).  Chunks are excluded from core dumps.
 * Objects are not zeroed or wiped here: the owner does both.
 *
 * Not thread-safe (the agent is single-threaded).
 */
#ifndef KC_OBJPOOL_H
#define KC_OBJPOOL_H

#include <stddef.h>

#define OBJPOOL_CHUNK_BYTES ((size_t)2 << 20)

/* OBJPOOL_ASAN: defined when built with AddressSanitizer. */
#if defined(__SANITIZE_ADDRESS__)
#define OBJPOOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OBJPOOL_ASAN 1
#endif
#endif
#define OBJPOOL_ALIGN 64

struct objpool_chunk;

struct objpool {
    size_t size;                  /* bytes per object, OBJPOOL_ALIGN multiple */
    struct objpool_chunk *avail;  /* chunks with a free object */
    struct objpool_chunk *spare;  /* one empty chunk kept mapped, or NULL */
    size_t chunks;                /* mapped, spare included */
};

/* OBJPOOL_ROUND_UP(n, a) - n rounded up to a multiple of a (a power of
 * two). */
#define OBJPOOL_ROUND_UP(n, a) (((n) + (a) - 1) & ~(size_t)((a) - 1))

/* OBJPOOL_INIT(size) - a static initializer; size is rounded up to
 * OBJPOOL_ALIGN and must leave room for a chunk header. */
#define OBJPOOL_INIT(sz) { OBJPOOL_ROUND_UP(sz, OBJPOOL_ALIGN), NULL, NULL, 0 }

/* objpool_get - an object of p->size bytes, 64-byte aligned, contents
 * undefined; NULL when out of memory. */
void *objpool_get(struct objpool *p);

/* objpool_put - return an object from objpool_get (the caller wiped it if
 * it held anything).  NULL is a no-op. */
void objpool_put(struct objpool *p, void *obj);

/* objpool_mapped_bytes - bytes of chunk address space mapped (resident
 * only where touched). */
size_t objpool_mapped_bytes(const struct objpool *p);

/*
 * objpool_table_new - a zeroed array of n bytes; from 2 MiB-aligned,
 * huge-page-advised mappings when n is at least OBJPOOL_CHUNK_BYTES (for
 * hash tables indexed at random), else calloc.  NULL when out of memory.
 * Free with objpool_table_free(t, n).
 */
void *objpool_table_new(size_t n);
void objpool_table_free(void *t, size_t n);

#endif /* KC_OBJPOOL_H */
