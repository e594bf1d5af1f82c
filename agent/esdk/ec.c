/*
 * ec.c - encryption contexts (FORMATS.md section 3) and encrypted data
 * key lists.
 *
 * Context values are not key material, but they are customer data that
 * must never be logged, so they are wiped on free like everything else.
 */
#include "esdk_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, <= U+10FFFF. */
static bool
utf8_is_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, k, len;
    uint32_t cp, min;

    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if ((s[i] & 0xE0) == 0xC0) {
            len = 2;
            cp = s[i] & 0x1Fu;
            min = 0x80;
        } else if ((s[i] & 0xF0) == 0xE0) {
            len = 3;
            cp = s[i] & 0x0Fu;
            min = 0x800;
        } else if ((s[i] & 0xF8) == 0xF0) {
            len = 4;
            cp = s[i] & 0x07u;
            min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len) {
            return false;
        }
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += len;
    }
    return true;
}

/* malloc(n) copy of p; a 1-byte block for n == 0 so NULL means ENOMEM. */
static uint8_t *
dup_bytes(const void *p, size_t n)
{
    uint8_t *q;

    if ((q = malloc(n == 0 ? 1 : n)) == NULL) {
        return NULL;
    }
    if (n > 0) {
        memcpy(q, p, n);
    }
    return q;
}

void
esdk_ec_init(struct esdk_ec *ec)
{
    ec->pairs = NULL;
    ec->n = 0;
    ec->borrowed = false;
}

void
esdk_ec_init_borrowed(struct esdk_ec *ec)
{
    esdk_ec_init(ec);
    ec->borrowed = true;
}

void
esdk_ec_clear(struct esdk_ec *ec)
{
    bool borrowed = ec->borrowed;
    size_t i;

    for (i = 0; i < ec->n && !borrowed; i++) {
        kc_free_wipe(ec->pairs[i].key, ec->pairs[i].key_len);
        kc_free_wipe(ec->pairs[i].val, ec->pairs[i].val_len);
    }
    free(ec->pairs);
    esdk_ec_init(ec);
    ec->borrowed = borrowed;
}

int
esdk_ec_append(struct esdk_ec *ec, const void *key, size_t key_len,
               const void *val, size_t val_len)
{
    struct esdk_ec_pair *np, *pr;

    if (key_len > ESDK_U16_MAX || val_len > ESDK_U16_MAX ||
        ec->n >= ESDK_U16_MAX) {
        return KC_ETOOBIG;
    }
    if (!utf8_is_valid(key, key_len) || !utf8_is_valid(val, val_len)) {
        return KC_ECONTEXT;
    }
    /* Grow by doubling; the array holds pointers and lengths only. */
    if ((ec->n & (ec->n - 1)) == 0) {
        np = realloc(ec->pairs, (ec->n == 0 ? 1 : ec->n * 2) * sizeof(*np));
        if (np == NULL) {
            return KC_ENOMEM;
        }
        ec->pairs = np;
    }
    pr = &ec->pairs[ec->n];
    if (ec->borrowed) {
        /* Never written through: see esdk_ec_init_borrowed. */
        pr->key = (uint8_t *)(uintptr_t)key;
        pr->val = (uint8_t *)(uintptr_t)val;
        pr->key_len = key_len;
        pr->val_len = val_len;
        ec->n++;
        return 0;
    }
    pr->key = dup_bytes(key, key_len);
    pr->val = dup_bytes(val, val_len);
    if (pr->key == NULL || pr->val == NULL) {
        kc_free_wipe(pr->key, key_len);
        kc_free_wipe(pr->val, val_len);
        return KC_ENOMEM;
    }
    pr->key_len = key_len;
    pr->val_len = val_len;
    ec->n++;
    return 0;
}

int
esdk_ec_add(struct esdk_ec *ec, const void *key, size_t key_len,
            const void *val, size_t val_len)
{
    if (key_len == 0) {
        return KC_ECONTEXT;
    }
    if (esdk_ec_get(ec, key, key_len) != NULL) {
        return KC_ECONTEXT;
    }
    return esdk_ec_append(ec, key, key_len, val, val_len);
}

const struct esdk_ec_pair *
esdk_ec_get(const struct esdk_ec *ec, const void *key, size_t key_len)
{
    size_t i;

    for (i = 0; i < ec->n; i++) {
        if (ec->pairs[i].key_len == key_len &&
            (key_len == 0 || memcmp(ec->pairs[i].key, key, key_len) == 0)) {
            return &ec->pairs[i];
        }
    }
    return NULL;
}

int
esdk_ec_check_caller(const struct esdk_ec *ec)
{
    size_t plen = strlen(ESDK_RESERVED_PREFIX), i;

    for (i = 0; i < ec->n; i++) {
        if (ec->pairs[i].key_len >= plen &&
            memcmp(ec->pairs[i].key, ESDK_RESERVED_PREFIX, plen) == 0) {
            return KC_ECONTEXT;
        }
    }
    return 0;
}

bool
esdk_ec_contains(const struct esdk_ec *have, const struct esdk_ec *want)
{
    const struct esdk_ec_pair *h;
    size_t i;

    for (i = 0; i < want->n; i++) {
        h = esdk_ec_get(have, want->pairs[i].key, want->pairs[i].key_len);
        if (h == NULL || h->val_len != want->pairs[i].val_len ||
            (h->val_len > 0 &&
             memcmp(h->val, want->pairs[i].val, h->val_len) != 0)) {
            return false;
        }
    }
    return true;
}

/* Byte-wise key order; a proper prefix sorts first. */
static int
pair_cmp(const void *a, const void *b)
{
    const struct esdk_ec_pair *x = *(const struct esdk_ec_pair *const *)a;
    const struct esdk_ec_pair *y = *(const struct esdk_ec_pair *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = n == 0 ? 0 : memcmp(x->key, y->key, n);

    if (c != 0) {
        return c;
    }
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len ? 1 : 0;
}

size_t
esdk_ec_serialized_len(const struct esdk_ec *ec)
{
    size_t total = 2, i;

    if (ec->n == 0) {
        return 0;
    }
    if (ec->n > ESDK_U16_MAX) {
        return SIZE_MAX;
    }
    for (i = 0; i < ec->n; i++) {
        total += 4 + ec->pairs[i].key_len + ec->pairs[i].val_len;
    }
    return total > ESDK_U16_MAX ? SIZE_MAX : total;
}

static uint8_t *
put_field(uint8_t *p, const uint8_t *b, size_t n)
{
    kc_store_u16(p, (uint16_t)n);
    if (n > 0) {
        memcpy(p + 2, b, n);
    }
    return p + 2 + n;
}

int
esdk_ec_serialize_to(const struct esdk_ec *ec, uint8_t *dst, size_t cap,
                     size_t *len)
{
    const struct esdk_ec_pair *few[8], **v = few;
    size_t total = esdk_ec_serialized_len(ec), i;
    uint8_t *p = dst;
    int r = 0;

    *len = 0;
    if (total == 0) {
        return 0;
    }
    if (total == SIZE_MAX || total > cap) {
        return KC_ETOOBIG;
    }
    /* Sort pointers to the pairs; a typical context needs no heap. */
    if (ec->n > sizeof(few) / sizeof(few[0]) &&
        (v = malloc(ec->n * sizeof(*v))) == NULL) {
        return KC_ENOMEM;
    }
    for (i = 0; i < ec->n; i++) {
        v[i] = &ec->pairs[i];
    }
    qsort(v, ec->n, sizeof(*v), pair_cmp);
    for (i = 1; i < ec->n; i++) {
        if (pair_cmp(&v[i - 1], &v[i]) == 0) {
            r = KC_ECONTEXT;
            goto out;
        }
    }
    kc_store_u16(p, (uint16_t)ec->n);
    p += 2;
    for (i = 0; i < ec->n; i++) {
        p = put_field(p, v[i]->key, v[i]->key_len);
        p = put_field(p, v[i]->val, v[i]->val_len);
    }
    *len = total;
out:
    if (v != few) {
        free(v);
    }
    return r;
}

int
esdk_ec_serialize(const struct esdk_ec *ec, struct kc_buf *out)
{
    size_t total = esdk_ec_serialized_len(ec), n;
    int r;

    if (total == 0) {
        return 0;
    }
    if (total == SIZE_MAX) {
        return KC_ETOOBIG;
    }
    if ((r = kc_buf_reserve(out, total)) != 0) {
        return r;
    }
    if ((r = esdk_ec_serialize_to(ec, out->data + out->len, total, &n)) ==
        0) {
        out->len += n;
    }
    return r;
}

/* ---- EDK lists -------------------------------------------------------- */

void
esdk_edk_list_init(struct esdk_edk_list *l)
{
    l->v = NULL;
    l->n = 0;
}

static void
edk_free(struct esdk_edk *e)
{
    free(e->provider_id);
    free(e->provider_info);
    free(e->ciphertext);
    memset(e, 0, sizeof(*e));
}

void
esdk_edk_list_clear(struct esdk_edk_list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        edk_free(&l->v[i]);
    }
    free(l->v);
    esdk_edk_list_init(l);
}

int
esdk_edk_list_add(struct esdk_edk_list *l, const void *pid, size_t pid_len,
                  const void *info, size_t info_len, const void *ct,
                  size_t ct_len)
{
    struct esdk_edk *nv, *e;

    if (pid_len > ESDK_U16_MAX || info_len > ESDK_U16_MAX ||
        ct_len > ESDK_U16_MAX || l->n >= ESDK_U16_MAX) {
        return KC_ETOOBIG;
    }
    if ((l->n & (l->n - 1)) == 0) {
        nv = realloc(l->v, (l->n == 0 ? 1 : l->n * 2) * sizeof(*nv));
        if (nv == NULL) {
            return KC_ENOMEM;
        }
        l->v = nv;
    }
    e = &l->v[l->n];
    e->provider_id = dup_bytes(pid, pid_len);
    e->provider_info = dup_bytes(info, info_len);
    e->ciphertext = dup_bytes(ct, ct_len);
    if (e->provider_id == NULL || e->provider_info == NULL ||
        e->ciphertext == NULL) {
        edk_free(e);
        return KC_ENOMEM;
    }
    e->provider_id_len = pid_len;
    e->provider_info_len = info_len;
    e->ciphertext_len = ct_len;
    l->n++;
    return 0;
}

int
esdk_edk_list_copy(struct esdk_edk_list *dst, const struct esdk_edk_list *src)
{
    const struct esdk_edk *e;
    size_t i;
    int r;

    for (i = 0; i < src->n; i++) {
        e = &src->v[i];
        if ((r = esdk_edk_list_add(dst, e->provider_id, e->provider_id_len,
                                   e->provider_info, e->provider_info_len,
                                   e->ciphertext, e->ciphertext_len)) != 0) {
            return r;
        }
    }
    return 0;
}
