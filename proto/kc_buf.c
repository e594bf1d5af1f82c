/*
 * kc_buf.c - bounded self-wiping buffer and bounds-checked reader.
 */
#include "kc_buf.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

void
kc_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0) {
        sodium_memzero(p, n);
    }
}

void
kc_free_wipe(void *p, size_t n)
{
    if (p == NULL) {
        return;
    }
    kc_wipe(p, n);
    free(p);
}

void
kc_buf_init(struct kc_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max == 0 ? SIZE_MAX : max;
}

void
kc_buf_clear(struct kc_buf *b)
{
    kc_free_wipe(b->data, b->cap);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int
kc_buf_grow(struct kc_buf *b, size_t n)
{
    size_t need, ncap;
    uint8_t *p;

    if (n > b->max || b->len > b->max - n) {
        return KC_ETOOBIG;
    }
    need = b->len + n;
    if (need <= b->cap) {
        return 0;
    }
    ncap = b->cap < 64 ? 64 : b->cap;
    while (ncap < need) {
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    }
    if (ncap > b->max) {
        ncap = b->max;
    }
    /* Never realloc: the old block may hold secrets and must be wiped. */
    if ((p = malloc(ncap)) == NULL) {
        return KC_ENOMEM;
    }
    if (b->len > 0) {
        memcpy(p, b->data, b->len);
    }
    kc_free_wipe(b->data, b->cap);
    b->data = p;
    b->cap = ncap;
    return 0;
}

int
kc_buf_put_u16(struct kc_buf *b, uint16_t v)
{
    uint8_t t[2];

    kc_store_u16(t, v);
    return kc_buf_put(b, t, sizeof(t));
}

int
kc_buf_put_u32(struct kc_buf *b, uint32_t v)
{
    uint8_t t[4];

    kc_store_u32(t, v);
    return kc_buf_put(b, t, sizeof(t));
}

int
kc_buf_put_u64(struct kc_buf *b, uint64_t v)
{
    uint8_t t[8];

    kc_store_u64(t, v);
    return kc_buf_put(b, t, sizeof(t));
}

void
kc_buf_steal(struct kc_buf *b, uint8_t **out, size_t *len)
{
    *out = b->data;
    *len = b->len;
    /* Trailing capacity past len may hold old bytes: wipe it now. */
    if (b->data != NULL && b->cap > b->len) {
        kc_wipe(b->data + b->len, b->cap - b->len);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void
kc_store_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

void
kc_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void
kc_store_u64(uint8_t *p, uint64_t v)
{
    kc_store_u32(p, (uint32_t)(v >> 32));
    kc_store_u32(p + 4, (uint32_t)v);
}

uint16_t
kc_load_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

uint32_t
kc_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

uint64_t
kc_load_u64(const uint8_t *p)
{
    return (uint64_t)kc_load_u32(p) << 32 | kc_load_u32(p + 4);
}

void
kc_rd_init(struct kc_rd *r, const uint8_t *p, size_t len, int err)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->err = err;
}

int
kc_rd_u16(struct kc_rd *r, uint16_t *v)
{
    const uint8_t *p;
    int rc;

    if ((rc = kc_rd_bytes(r, 2, &p)) != 0) {
        return rc;
    }
    *v = kc_load_u16(p);
    return 0;
}

int
kc_rd_u32(struct kc_rd *r, uint32_t *v)
{
    const uint8_t *p;
    int rc;

    if ((rc = kc_rd_bytes(r, 4, &p)) != 0) {
        return rc;
    }
    *v = kc_load_u32(p);
    return 0;
}

int
kc_rd_u64(struct kc_rd *r, uint64_t *v)
{
    const uint8_t *p;
    int rc;

    if ((rc = kc_rd_bytes(r, 8, &p)) != 0) {
        return rc;
    }
    *v = kc_load_u64(p);
    return 0;
}
