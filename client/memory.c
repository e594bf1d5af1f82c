/*
 * memory.c - the library's returned-buffer allocator (kc_free) and the
 * Base64 helpers.
 *
 * Every buffer handed to the application may hold plaintext, so it is
 * allocated with a small header recording its size; kc_free reads the
 * size back and wipes the whole block before releasing it.  The caller
 * never has to remember a length to free correctly.
 */
#include <sodium.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kc_buf.h"
#include "keycache.h"

/* Header in front of every block; padded so the payload keeps malloc's
 * alignment guarantee. */
#define KCMEM_MAGIC 0x6b636d65u /* "kcme" */
#define KCMEM_HDR   alignof(max_align_t)

struct kcmem_hdr {
    size_t size;
    uint32_t magic;
};

_Static_assert(sizeof(struct kcmem_hdr) <= KCMEM_HDR,
               "kcmem header must fit in the alignment padding");

void *
kcmem_alloc(size_t n)
{
    struct kcmem_hdr h;
    uint8_t *base;

    if (n > SIZE_MAX - KCMEM_HDR) {
        return NULL;
    }
    if ((base = malloc(KCMEM_HDR + n)) == NULL) {
        return NULL;
    }
    h.size = n;
    h.magic = KCMEM_MAGIC;
    memcpy(base, &h, sizeof(h));
    return base + KCMEM_HDR;
}

void *
kcmem_dup(const void *p, size_t n, int nul)
{
    uint8_t *q;

    if (nul && n == SIZE_MAX) {
        return NULL;
    }
    if ((q = kcmem_alloc(n + (nul ? 1 : 0))) == NULL) {
        return NULL;
    }
    if (n > 0) {
        memcpy(q, p, n);
    }
    if (nul) {
        q[n] = '\0';
    }
    return q;
}

void
kc_free(void *p)
{
    struct kcmem_hdr h;
    uint8_t *base;

    if (p == NULL) {
        return;
    }
    base = (uint8_t *)p - KCMEM_HDR;
    memcpy(&h, base, sizeof(h));
    if (h.magic != KCMEM_MAGIC) {
        /* Not ours (or freed twice): continuing would corrupt the heap
         * or wipe a wrong length.  Programmer error, so abort. */
        abort();
    }
    kc_free_wipe(base, KCMEM_HDR + h.size);
}

int
kc_base64_encode(const uint8_t *p, size_t len, char **out)
{
    size_t olen;
    char *s;

    if (out == NULL || (p == NULL && len > 0)) {
        return KC_EINVAL;
    }
    *out = NULL;
    /* 4 output bytes per 3 input bytes, plus padding and the NUL. */
    if (len > (SIZE_MAX / 4 - 1) * 3) {
        return KC_ENOMEM;
    }
    olen = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    if ((s = kcmem_alloc(olen)) == NULL) {
        return KC_ENOMEM;
    }
    sodium_bin2base64(s, olen, len > 0 ? p : (const uint8_t *)"", len,
                      sodium_base64_VARIANT_ORIGINAL);
    *out = s;
    return 0;
}

int
kc_base64_decode(const char *s, size_t s_len, uint8_t **out, size_t *out_len)
{
    uint8_t *bin = NULL;
    size_t bin_len = 0, max;
    int r;

    if (out == NULL || out_len == NULL || (s == NULL && s_len > 0)) {
        return KC_EINVAL;
    }
    *out = NULL;
    *out_len = 0;
    if (s_len % 4 != 0) {
        return KC_EINVAL;
    }
    max = s_len / 4 * 3;
    if ((bin = kcmem_alloc(max)) == NULL) {
        return KC_ENOMEM;
    }
    if (s_len > 0) {
        /* No ignore set and no end pointer: any byte outside the
         * alphabet, missing padding or non-zero trailing bits fail. */
        if (sodium_base642bin(bin, max, s, s_len, NULL, &bin_len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0) {
            r = KC_EINVAL;
            goto out;
        }
    }
    *out = bin;
    *out_len = bin_len;
    bin = NULL;
    r = 0;
out:
    kc_free(bin);
    return r;
}
