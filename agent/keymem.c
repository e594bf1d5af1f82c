/*
 * keymem.c - slab allocator over sodium_malloc'd locked memory.
 *
 * Both operations stay cheap however many keys are cached: slabs with a
 * free slot sit on their own list, so keymem_alloc takes its head (O(1));
 * keymem_free finds a slot's slab by binary search over the slabs sorted
 * by address (O(log slabs): 49 slabs hold 100 000 keys).
 */
#include "keymem.h"

#include <errno.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define SLAB_BYTES (64 * 1024)
#define SLAB_SLOTS (SLAB_BYTES / KEYMEM_SLOT_SIZE)

struct slab {
    uint8_t *mem;                /* sodium_malloc(SLAB_BYTES) */
    uint32_t free_head;          /* index of first free slot, or NONE */
    uint32_t used;
    uint32_t next_free[SLAB_SLOTS];
    struct slab *next;
    struct slab *next_avail; /* on the list of slabs with a free slot */
    bool on_avail;
};

#define SLOT_NONE UINT32_MAX

static struct slab *slabs;
static size_t slab_count;
static size_t slots_used;
static struct slab *avail;     /* slabs with at least one free slot */
static struct slab **by_addr;  /* every slab, sorted by mem */
static size_t by_addr_cap;

static void
avail_push(struct slab *s)
{
    s->next_avail = avail;
    avail = s;
    s->on_avail = true;
}

/* Insert s into by_addr, keeping it sorted.  false when out of memory. */
static bool
by_addr_insert(struct slab *s)
{
    struct slab **n;
    size_t i;

    if (slab_count + 1 > by_addr_cap) {
        i = by_addr_cap == 0 ? 16 : by_addr_cap * 2;
        if ((n = realloc(by_addr, i * sizeof(*n))) == NULL) {
            return false;
        }
        by_addr = n;
        by_addr_cap = i;
    }
    for (i = slab_count; i > 0 && by_addr[i - 1]->mem > s->mem; i--) {
        by_addr[i] = by_addr[i - 1];
    }
    by_addr[i] = s;
    return true;
}

/* The slab holding p, or NULL. */
static struct slab *
by_addr_find(const uint8_t *p)
{
    size_t lo = 0, hi = slab_count, mid;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (p < by_addr[mid]->mem) {
            hi = mid;
        } else if (p >= by_addr[mid]->mem + SLAB_BYTES) {
            lo = mid + 1;
        } else {
            return by_addr[mid];
        }
    }
    return NULL;
}

static struct slab *
slab_new(void)
{
    struct slab *s;
    uint32_t i;

    if ((s = calloc(1, sizeof(*s))) == NULL) {
        return NULL;
    }
    if ((s->mem = sodium_malloc(SLAB_BYTES)) == NULL) {
        free(s);
        return NULL;
    }
    /* sodium_malloc ignores a failed mlock; insist on it here. */
    if (sodium_mlock(s->mem, SLAB_BYTES) != 0) {
        sodium_free(s->mem);
        free(s);
        return NULL;
    }
    if (!by_addr_insert(s)) {
        sodium_free(s->mem);
        free(s);
        return NULL;
    }
    sodium_memzero(s->mem, SLAB_BYTES);
    for (i = 0; i < SLAB_SLOTS; i++) {
        s->next_free[i] = i + 1 < SLAB_SLOTS ? i + 1 : SLOT_NONE;
    }
    s->free_head = 0;
    s->next = slabs;
    slabs = s;
    slab_count++;
    avail_push(s);
    return s;
}

int
keymem_init(size_t slot_count, char *err, size_t errlen)
{
    struct rlimit rl;
    size_t need;

    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return KC_ESYS;
    }
    /* Slabs plus sodium_malloc's canary/guard overhead, rounded up. */
    need = ((slot_count + SLAB_SLOTS - 1) / SLAB_SLOTS + 1) *
           (SLAB_BYTES + 4096);
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) {
        snprintf(err, errlen, "getrlimit(RLIMIT_MEMLOCK): %s",
                 strerror(errno));
        return KC_ESYS;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need &&
        rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need
                          ? need
                          : rl.rlim_max;
        (void)setrlimit(RLIMIT_MEMLOCK, &rl);
        (void)getrlimit(RLIMIT_MEMLOCK, &rl);
    }
    if (slabs == NULL && slab_new() == NULL) {
        snprintf(err, errlen,
                 "cannot lock memory for keys (RLIMIT_MEMLOCK is %llu "
                 "bytes): raise it (ulimit -l, LimitMEMLOCK=) or run with "
                 "CAP_IPC_LOCK",
                 rl.rlim_cur == RLIM_INFINITY
                     ? 0ULL
                     : (unsigned long long)rl.rlim_cur);
        return KC_ESYS;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        /* Root (CAP_IPC_LOCK) may lock past the limit; others cannot. */
        if (geteuid() != 0) {
            snprintf(err, errlen,
                     "RLIMIT_MEMLOCK is %llu bytes but capacity needs about "
                     "%zu: raise it (ulimit -l, LimitMEMLOCK=) or lower "
                     "[agent] capacity",
                     (unsigned long long)rl.rlim_cur, need);
            return KC_ESYS;
        }
    }
    return 0;
}

uint8_t *
keymem_alloc(size_t n)
{
    struct slab *s;
    uint32_t i;

    if (n == 0 || n > KEYMEM_SLOT_SIZE) {
        return NULL;
    }
    if ((s = avail) == NULL && (s = slab_new()) == NULL) {
        return NULL;
    }
    i = s->free_head;
    s->free_head = s->next_free[i];
    if (s->free_head == SLOT_NONE) { /* now full: off the list */
        avail = s->next_avail;
        s->next_avail = NULL;
        s->on_avail = false;
    }
    s->used++;
    slots_used++;
    return s->mem + (size_t)i * KEYMEM_SLOT_SIZE;
}

void
keymem_free(uint8_t *p)
{
    struct slab *s;
    size_t off;
    uint32_t i;

    if (p == NULL) {
        return;
    }
    if ((s = by_addr_find(p)) == NULL) {
        abort(); /* not ours: a broken invariant, never input-driven */
    }
    off = (size_t)(p - s->mem);
    i = (uint32_t)(off / KEYMEM_SLOT_SIZE);
    sodium_memzero(p, KEYMEM_SLOT_SIZE);
    s->next_free[i] = s->free_head;
    s->free_head = i;
    s->used--;
    slots_used--;
    if (!s->on_avail) {
        avail_push(s);
    }
}

size_t
keymem_locked_bytes(void)
{
    return slab_count * SLAB_BYTES;
}

size_t
keymem_slots_used(void)
{
    return slots_used;
}

void
keymem_shutdown(void)
{
    struct slab *s, *next;

    for (s = slabs; s != NULL; s = next) {
        next = s->next;
        sodium_free(s->mem); /* wipes, unlocks, unmaps */
        free(s);
    }
    slabs = NULL;
    slab_count = 0;
    slots_used = 0;
    avail = NULL;
    free(by_addr);
    by_addr = NULL;
    by_addr_cap = 0;
}
