/*
 * kc_buf.h - the bounded, self-wiping byte buffer used for all protocol
 * and message bytes, and a bounds-checked reader over borrowed bytes.
 *
 * A kc_buf may hold secrets (plaintext, ciphertext, key bytes), so every
 * path that frees or shrinks its storage wipes it first.  It never grows
 * past its max, so a peer cannot make us allocate more than a limit we set.
 *
 * Not thread-safe; one owner at a time.
 */
#ifndef KC_BUF_H
#define KC_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kc_err.h"

#if defined(__GNUC__)
#define KC_MUST_USE __attribute__((warn_unused_result))
#else
#define KC_MUST_USE
#endif

struct kc_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* hard ceiling on len; 0 means SIZE_MAX */
};

/* kc_buf_init - empty buffer that may grow to max bytes (0 = no limit). */
void kc_buf_init(struct kc_buf *b, size_t max);

/* kc_buf_clear - wipe and free the storage; b is empty and reusable. */
void kc_buf_clear(struct kc_buf *b);

/* kc_wipe - wipe n bytes in a way the compiler may not elide. */
void kc_wipe(void *p, size_t n);

/* kc_buf_grow - kc_buf_reserve's slow path (kc_buf.c). */
KC_MUST_USE int kc_buf_grow(struct kc_buf *b, size_t n);

/*
 * kc_buf_reserve - make room for n more bytes.
 * Returns 0, -KC_ETOOBIG past max, KC_ENOMEM.  On growth the old storage
 * is wiped before it is freed.  The check that there is room already is
 * inline: it runs for every field of every message packed.
 */
KC_MUST_USE static inline int
kc_buf_reserve(struct kc_buf *b, size_t n)
{
    if (n <= b->cap - b->len && b->len <= b->max && n <= b->max - b->len) {
        return 0;
    }
    return kc_buf_grow(b, n);
}

/* kc_buf_truncate - drop the bytes past len, wiping them (a no-op when
 * b holds no more than len). */
static inline void
kc_buf_truncate(struct kc_buf *b, size_t len)
{
    if (b->len > len) {
        kc_wipe(b->data + len, b->len - len);
        b->len = len;
    }
}

/* kc_buf_put* - append; same returns as kc_buf_reserve. */
KC_MUST_USE static inline int
kc_buf_put(struct kc_buf *b, const void *p, size_t n)
{
    int r;

    if (n == 0) {
        return 0;
    }
    if ((r = kc_buf_reserve(b, n)) != 0) {
        return r;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

KC_MUST_USE static inline int
kc_buf_put_u8(struct kc_buf *b, uint8_t v)
{
    return kc_buf_put(b, &v, 1);
}

KC_MUST_USE int kc_buf_put_u16(struct kc_buf *b, uint16_t v);
KC_MUST_USE int kc_buf_put_u32(struct kc_buf *b, uint32_t v);
KC_MUST_USE int kc_buf_put_u64(struct kc_buf *b, uint64_t v);

/*
 * kc_buf_steal - hand the bytes to the caller, leaving b empty.
 * The caller owns *out and must release it with kc_free_wipe(*out, len).
 */
void kc_buf_steal(struct kc_buf *b, uint8_t **out, size_t *len);

/* kc_free_wipe - wipe n bytes at p, then free(p).  NULL is a no-op. */
void kc_free_wipe(void *p, size_t n);


/* Big-endian load/store helpers. */
void kc_store_u16(uint8_t *p, uint16_t v);
void kc_store_u32(uint8_t *p, uint32_t v);
void kc_store_u64(uint8_t *p, uint64_t v);
uint16_t kc_load_u16(const uint8_t *p);
uint32_t kc_load_u32(const uint8_t *p);
uint64_t kc_load_u64(const uint8_t *p);

/*
 * struct kc_rd - cursor over borrowed bytes.  Every getter returns
 * -KC_EFORMAT (via the err code given to kc_rd_init) when fewer bytes
 * remain than asked for, and then leaves the cursor unchanged.
 */
struct kc_rd {
    const uint8_t *p;
    size_t len;
    size_t off;
    int err; /* code returned on a short read, e.g. KC_EFORMAT */
};

void kc_rd_init(struct kc_rd *r, const uint8_t *p, size_t len, int err);

static inline size_t
kc_rd_left(const struct kc_rd *r)
{
    return r->len - r->off;
}

/* kc_rd_bytes - borrow n bytes (pointer into the input; not copied). */
KC_MUST_USE static inline int
kc_rd_bytes(struct kc_rd *r, size_t n, const uint8_t **out)
{
    if (n > kc_rd_left(r)) {
        *out = NULL;
        return r->err;
    }
    *out = r->p + r->off;
    r->off += n;
    return 0;
}

KC_MUST_USE static inline int
kc_rd_u8(struct kc_rd *r, uint8_t *v)
{
    if (kc_rd_left(r) < 1) {
        *v = 0;
        return r->err;
    }
    *v = r->p[r->off++];
    return 0;
}

KC_MUST_USE int kc_rd_u16(struct kc_rd *r, uint16_t *v);
KC_MUST_USE int kc_rd_u32(struct kc_rd *r, uint32_t *v);
KC_MUST_USE int kc_rd_u64(struct kc_rd *r, uint64_t *v);
#endif /* KC_BUF_H */
