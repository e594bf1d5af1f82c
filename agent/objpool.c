/*
 * objpool.c - fixed-size objects in 2 MiB chunks (see objpool.h).
 *
 * A chunk starts with its header; objects follow at fixed offsets.  Free
 * objects form a list threaded through their first bytes, and objects
 * never handed out are taken in address order (`fresh`), so on small
 * pages a chunk's memory becomes resident only as it fills (with THP the
 * first touch brings in the whole 2 MiB).  The chunk of an object is its
 * address rounded down to the chunk size.
 */
#include "objpool.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

/*
 * Under AddressSanitizer free objects and fresh chunks are poisoned, so
 * a stray access to an object not handed out is reported.  That does not
 * catch a use after free once the object is handed out again (the free
 * list is LIFO, with no quarantine), which is why the cache takes its
 * entries from the heap in sanitized builds (cache.c).
 */
#ifdef OBJPOOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct objpool_chunk {
    struct objpool_chunk *prev, *next; /* on p->avail */
    void *free;                        /* returned objects */
    uint32_t fresh;                    /* objects [fresh, n) never used */
    uint32_t n;                        /* objects in this chunk */
    uint32_t used;
    bool on_avail;
};

#define HDR_BYTES OBJPOOL_ROUND_UP(sizeof(struct objpool_chunk), OBJPOOL_ALIGN)

static struct objpool_chunk *
chunk_of(const void *obj)
{
    return (struct objpool_chunk *)((uintptr_t)obj &
                                    ~(uintptr_t)(OBJPOOL_CHUNK_BYTES - 1));
}

/* A zeroed mapping of want bytes (a multiple of OBJPOOL_CHUNK_BYTES) on a
 * boundary of OBJPOOL_CHUNK_BYTES. */
static void *
map_aligned(size_t want)
{
    size_t head, tail;
    uint8_t *m, *p;

    m = mmap(NULL, want + OBJPOOL_CHUNK_BYTES, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        return NULL;
    }
    p = (uint8_t *)OBJPOOL_ROUND_UP((uintptr_t)m, OBJPOOL_CHUNK_BYTES);
    head = (size_t)(p - m);
    tail = OBJPOOL_CHUNK_BYTES - head;
    if (head > 0) {
        munmap(m, head);
    }
    if (tail > 0) {
        munmap(p + want, tail);
    }
    UNPOISON(p, want);
    /* Both are advice: without THP (or on an old kernel) the pool still
     * works, on small pages. */
#ifdef MADV_HUGEPAGE
    (void)madvise(p, want, MADV_HUGEPAGE);
#endif
#ifdef MADV_DONTDUMP
    (void)madvise(p, want, MADV_DONTDUMP);
#endif
    return p;
}

static void
avail_push(struct objpool *p, struct objpool_chunk *c)
{
    c->prev = NULL;
    c->next = p->avail;
    if (p->avail != NULL) {
        p->avail->prev = c;
    }
    p->avail = c;
    c->on_avail = true;
}

static void
avail_unlink(struct objpool *p, struct objpool_chunk *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        p->avail = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    c->on_avail = false;
}

static struct objpool_chunk *
chunk_new(struct objpool *p)
{
    struct objpool_chunk *c;

    if (p->size < sizeof(void *) || p->size > OBJPOOL_CHUNK_BYTES - HDR_BYTES ||
        (c = map_aligned(OBJPOOL_CHUNK_BYTES)) == NULL) {
        return NULL;
    }
    c->n = (uint32_t)((OBJPOOL_CHUNK_BYTES - HDR_BYTES) / p->size);
    POISON((uint8_t *)c + HDR_BYTES, OBJPOOL_CHUNK_BYTES - HDR_BYTES);
    p->chunks++;
    avail_push(p, c);
    return c;
}

void *
objpool_get(struct objpool *p)
{
    struct objpool_chunk *c = p->avail;
    void *o;

    if (c == NULL && (c = chunk_new(p)) == NULL) {
        return NULL;
    }
    if (c == p->spare) {
        p->spare = NULL;
    }
    if ((o = c->free) != NULL) {
        UNPOISON(o, p->size);
        c->free = *(void **)o;
    } else {
        o = (uint8_t *)c + HDR_BYTES + (size_t)c->fresh++ * p->size;
        UNPOISON(o, p->size);
    }
    c->used++;
    if (c->free == NULL && c->fresh == c->n) {
        avail_unlink(p, c);
    }
    return o;
}

void
objpool_put(struct objpool *p, void *obj)
{
    struct objpool_chunk *c;

    if (obj == NULL) {
        return;
    }
    c = chunk_of(obj);
    *(void **)obj = c->free;
    c->free = obj;
    POISON(obj, p->size);
    c->used--;
    if (!c->on_avail) {
        avail_push(p, c);
    }
    if (c->used > 0) {
        return;
    }
    /* Empty: keep one such chunk for the next burst, unmap the rest. */
    if (p->spare == NULL) {
        p->spare = c;
        return;
    }
    avail_unlink(p, c);
    p->chunks--;
    /* ASan does not see munmap: a later mapping here must not inherit
     * the poison. */
    UNPOISON(c, OBJPOOL_CHUNK_BYTES);
    munmap(c, OBJPOOL_CHUNK_BYTES);
}

size_t
objpool_mapped_bytes(const struct objpool *p)
{
    return p->chunks * OBJPOOL_CHUNK_BYTES;
}

static size_t
table_bytes(size_t n)
{
    return OBJPOOL_ROUND_UP(n, OBJPOOL_CHUNK_BYTES);
}

void *
objpool_table_new(size_t n)
{
    if (n < OBJPOOL_CHUNK_BYTES) {
        return calloc(1, n);
    }
    if (table_bytes(n) < n) {
        return NULL;
    }
    return map_aligned(table_bytes(n));
}

void
objpool_table_free(void *t, size_t n)
{
    if (t == NULL) {
        return;
    }
    if (n < OBJPOOL_CHUNK_BYTES) {
        free(t);
        return;
    }
    UNPOISON(t, table_bytes(n));
    munmap(t, table_bytes(n));
}
