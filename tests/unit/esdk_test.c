/*
 * esdk_test.c - unit tests of the message-format library: encryption
 * context rules, round trips of the writer through the reader, tampering
 * (every byte flip, every truncation, signatures, commitment), limits and
 * the raw AES keyring.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/obj_mac.h>
#include <sodium.h>
#include <sys/wait.h>
#include <unistd.h>

#include "esdk.h"
#include "esdk_int.h"

#define NS   "keycache-unit"
#define NAME "unit-key"

static const uint8_t wkey[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x20, 0x21,
    0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x30, 0x31,
};

/* ---- helpers ----------------------------------------------------------- */

static void
ec_put(struct esdk_ec *ec, const char *k, const char *v)
{
    assert_int_equal(esdk_ec_add(ec, k, strlen(k), v, strlen(v)), 0);
}

/* Write a message under a fresh data key wrapped n_edks times. */
static void
make_msg(uint16_t suite, const struct esdk_ec *ec, const uint8_t *pt,
         size_t n, uint32_t fl, size_t n_edks, struct kc_buf *out,
         uint8_t *dk)
{
    struct esdk_edk_list edks;
    struct esdk_enc *enc = NULL;
    const uint8_t *aad;
    size_t aad_len, i;

    randombytes_buf(dk, 32);
    esdk_edk_list_init(&edks);
    assert_int_equal(esdk_enc_new(suite, ec, &enc), 0);
    esdk_enc_wrapping_aad(enc, &aad, &aad_len);
    for (i = 0; i < n_edks; i++) {
        assert_int_equal(rawaes_wrap(wkey, sizeof(wkey), NS, NAME, aad,
                                     aad_len, dk, 32, &edks),
                         0);
    }
    kc_buf_init(out, 0);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, fl, pt, n, out), 0);
    esdk_enc_free(enc);
    esdk_edk_list_clear(&edks);
}

/* Parse and decrypt; dk NULL means unwrap with the raw AES key. */
static int
open_msg(const uint8_t *m, size_t len, const struct esdk_limits *lim,
         const uint8_t *dk, struct kc_buf *pt)
{
    struct esdk_header *h = NULL;
    uint8_t key[32];
    size_t i;
    int r;

    if ((r = esdk_header_parse(m, len, lim, &h)) != 0) {
        kc_buf_clear(pt);
        return r;
    }
    if (dk == NULL) {
        r = KC_ENODATAKEY;
        for (i = 0; i < h->edks.n && r != 0; i++) {
            r = rawaes_unwrap(wkey, sizeof(wkey), NS, NAME, &h->edks.v[i],
                              h->ec_canonical.data, h->ec_canonical.len,
                              key, 32);
        }
        if (r == 0) {
            r = esdk_decrypt(h, m, len, key, 32, lim, pt);
        } else {
            kc_buf_clear(pt);
        }
    } else {
        r = esdk_decrypt(h, m, len, dk, 32, lim, pt);
    }
    sodium_memzero(key, sizeof(key));
    esdk_header_free(h);
    return r;
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

/* ---- encryption context -------------------------------------------- */

static void
test_ec_sort_utf8(void **state)
{
    /* Byte order: "a" < "b" < "z" < U+00E9 < U+FF21 < U+10000.  UTF-16
     * order would put U+10000 (a surrogate pair) before U+FF21. */
    static const uint8_t want[] = {
        0x00, 0x06,                                     /* 6 pairs */
        0x00, 0x01, 'a', 0x00, 0x00,                    /* "a": "" */
        0x00, 0x01, 'b', 0x00, 0x01, '2',               /* "b": "2" */
        0x00, 0x01, 'z', 0x00, 0x01, '1',               /* "z": "1" */
        0x00, 0x02, 0xC3, 0xA9, 0x00, 0x01, '3',        /* e-acute */
        0x00, 0x03, 0xEF, 0xBC, 0xA1, 0x00, 0x01, '4',  /* fullwidth A */
        0x00, 0x04, 0xF0, 0x90, 0x80, 0x80, 0x00, 0x01, '5',
    };
    struct esdk_ec ec;
    struct kc_buf b;

    (void)state;
    esdk_ec_init(&ec);
    kc_buf_init(&b, 0);
    ec_put(&ec, "\xF0\x90\x80\x80", "5");
    ec_put(&ec, "z", "1");
    ec_put(&ec, "\xEF\xBC\xA1", "4");
    ec_put(&ec, "b", "2");
    ec_put(&ec, "\xC3\xA9", "3");
    ec_put(&ec, "a", ""); /* empty value is fine */
    assert_int_equal(esdk_ec_serialize(&ec, &b), 0);
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    /* Insertion order is preserved in the struct. */
    assert_int_equal(ec.pairs[1].key[0], 'z');
    kc_buf_clear(&b);
    esdk_ec_clear(&ec);
}

/* A borrowed context keeps pointers, follows the same rules and
 * serializes byte for byte like an owned one, also past the eight pairs
 * esdk_ec_serialize sorts without the heap. */
static void
test_ec_borrowed(void **state)
{
    char keys[12][4], vals[12][4];
    struct esdk_ec own, bor;
    struct kc_buf a, b;
    int i;

    (void)state;
    esdk_ec_init(&own);
    esdk_ec_init_borrowed(&bor);
    kc_buf_init(&a, 0);
    kc_buf_init(&b, 0);
    for (i = 0; i < 12; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%02d", 11 - i);
        snprintf(vals[i], sizeof(vals[i]), "v%d", i);
        assert_int_equal(esdk_ec_add(&own, keys[i], 3, vals[i],
                                     strlen(vals[i])), 0);
        assert_int_equal(esdk_ec_add(&bor, keys[i], 3, vals[i],
                                     strlen(vals[i])), 0);
    }
    assert_ptr_equal(bor.pairs[0].key, (const uint8_t *)keys[0]);
    assert_ptr_not_equal(own.pairs[0].key, (const uint8_t *)keys[0]);
    assert_int_equal(esdk_ec_add(&bor, "k00", 3, "x", 1), KC_ECONTEXT);
    assert_int_equal(esdk_ec_add(&bor, "\xC0\x80", 2, "x", 1), KC_ECONTEXT);
    assert_int_equal(esdk_ec_serialize(&own, &a), 0);
    assert_int_equal(esdk_ec_serialize(&bor, &b), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(kc_load_u16(b.data), 12);
    assert_memory_equal(b.data + 4, "k00", 3); /* sorted */
    /* The same bytes into a caller's buffer, which must be big enough. */
    {
        uint8_t small[256];
        size_t n = 99;

        assert_int_equal(esdk_ec_serialized_len(&bor), b.len);
        assert_int_equal(esdk_ec_serialize_to(&bor, small, b.len, &n), 0);
        assert_int_equal(n, b.len);
        assert_memory_equal(small, b.data, n);
        assert_int_equal(esdk_ec_serialize_to(&bor, small, b.len - 1, &n),
                         KC_ETOOBIG);
        assert_int_equal(n, 0);
    }
    /* Clearing keeps the mode and leaves the caller's bytes alone. */
    esdk_ec_clear(&bor);
    assert_true(bor.borrowed);
    assert_memory_equal(keys[0], "k11", 4);
    assert_int_equal(esdk_ec_add(&bor, keys[1], 3, vals[1], 2), 0);
    assert_ptr_equal(bor.pairs[0].val, (const uint8_t *)vals[1]);
    kc_buf_clear(&a);
    kc_buf_clear(&b);
    esdk_ec_clear(&own);
    esdk_ec_clear(&bor);
}

static void
test_ec_rules(void **state)
{
    struct esdk_ec ec, want;
    struct kc_buf b;

    (void)state;
    esdk_ec_init(&ec);
    esdk_ec_init(&want);
    kc_buf_init(&b, 0);
    /* Empty context serializes to nothing. */
    assert_int_equal(esdk_ec_serialize(&ec, &b), 0);
    assert_int_equal(b.len, 0);
    ec_put(&ec, "table", "users");
    assert_int_equal(esdk_ec_add(&ec, "table", 5, "x", 1), KC_ECONTEXT);
    assert_int_equal(esdk_ec_add(&ec, "", 0, "x", 1), KC_ECONTEXT);
    /* Not UTF-8: overlong NUL, a surrogate, a stray continuation byte. */
    assert_int_equal(esdk_ec_add(&ec, "\xC0\x80", 2, "x", 1), KC_ECONTEXT);
    assert_int_equal(esdk_ec_add(&ec, "k", 1, "\xED\xA0\x80", 3),
                     KC_ECONTEXT);
    assert_int_equal(esdk_ec_add(&ec, "\x80", 1, "x", 1), KC_ECONTEXT);
    assert_int_equal(esdk_ec_add(&ec, "\xF4\x90\x80\x80", 4, "x", 1),
                     KC_ECONTEXT);
    assert_int_equal(ec.n, 1);
    assert_non_null(esdk_ec_get(&ec, "table", 5));
    assert_null(esdk_ec_get(&ec, "tabl", 4));
    /* contains */
    ec_put(&want, "table", "users");
    assert_true(esdk_ec_contains(&ec, &want));
    esdk_ec_clear(&want);
    ec_put(&want, "table", "user");
    assert_false(esdk_ec_contains(&ec, &want));
    /* Reserved prefix: refused from callers, fine inside the library. */
    assert_int_equal(esdk_ec_check_caller(&ec), 0);
    ec_put(&ec, "aws-crypto-public-key", "x");
    assert_int_equal(esdk_ec_check_caller(&ec), KC_ECONTEXT);
    esdk_ec_clear(&ec);
    ec_put(&ec, "aws-crypto-anything", "");
    assert_int_equal(esdk_ec_check_caller(&ec), KC_ECONTEXT);
    esdk_ec_clear(&ec);
    ec_put(&ec, "aws-crypto", ""); /* no dash: not the prefix */
    assert_int_equal(esdk_ec_check_caller(&ec), 0);
    kc_buf_clear(&b);
    esdk_ec_clear(&ec);
    esdk_ec_clear(&want);
}

static void
test_ec_limits(void **state)
{
    struct esdk_ec ec;
    struct esdk_enc *enc = NULL;
    struct kc_buf b;
    uint8_t *big;

    (void)state;
    esdk_ec_init(&ec);
    kc_buf_init(&b, 0);
    big = calloc(1, 70000);
    assert_non_null(big);
    memset(big, 'v', 70000);
    assert_int_equal(esdk_ec_add(&ec, big, 65536, "x", 1), KC_ETOOBIG);
    assert_int_equal(esdk_ec_add(&ec, "k", 1, big, 65536), KC_ETOOBIG);
    /* 65535-byte value fits a field, but not the whole serialization. */
    assert_int_equal(esdk_ec_add(&ec, "k", 1, big, 65535), 0);
    assert_int_equal(esdk_ec_serialize(&ec, &b), KC_ETOOBIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(esdk_enc_new(ESDK_SUITE_AES256_HKDF_SHA512_COMMIT, &ec,
                                  &enc),
                     KC_ETOOBIG);
    assert_null(enc);
    esdk_ec_clear(&ec);
    /* Largest that fits: 2 + 4 + 1 + 65528 = 65535 bytes. */
    assert_int_equal(esdk_ec_add(&ec, "k", 1, big, 65528), 0);
    assert_int_equal(esdk_ec_serialize(&ec, &b), 0);
    assert_int_equal(b.len, 65535);
    /* Signing suite adds the public key: no longer fits. */
    assert_int_equal(esdk_enc_new(ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384,
                                  &ec, &enc),
                     KC_ETOOBIG);
    free(big);
    kc_buf_clear(&b);
    esdk_ec_clear(&ec);
}

/* ---- round trips ------------------------------------------------------ */

static void
round_trip(uint16_t suite, size_t n, uint32_t fl)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec ec;
    struct kc_buf ct, pt;
    uint8_t dk[32], *msg;
    size_t i;

    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    ec_put(&ec, "table", "users");
    ec_put(&ec, "column", "email");
    ec_put(&ec, "\xC3\xA9t\xC3\xA9", ""); /* non-ASCII key, empty value */
    msg = malloc(n + 1);
    assert_non_null(msg);
    randombytes_buf(msg, n + 1);
    make_msg(suite, &ec, msg, n, fl, 1, &ct, dk);
    kc_buf_init(&pt, 0);
    assert_int_equal(open_msg(ct.data, ct.len, &lim, NULL, &pt), 0);
    assert_int_equal(pt.len, n);
    if (n > 0) {
        assert_memory_equal(pt.data, msg, n);
    }

    /* Header: what we asked for, with the public key only when signing. */
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    assert_int_equal(h->suite->id, suite);
    assert_int_equal(h->content_type, 2);
    assert_int_equal(h->frame_len, fl);
    assert_int_equal(h->ec.n, suite == 0x0578 ? 4 : 3);
    assert_true(esdk_ec_contains(&h->ec, &ec));
    assert_true((esdk_ec_get(&h->ec, ESDK_PUBKEY_EC_KEY, 21) != NULL) ==
                (suite == 0x0578));
    /* Stored EC is sorted, so its bytes equal the canonical form. */
    assert_memory_equal(ct.data + 1 + 2 + 32 + 2, h->ec_canonical.data,
                        h->ec_canonical.len);
    /* First frame carries the derived IV 00..01 (regular or final). */
    i = h->body_off + ((n <= fl) ? 8 : 4);
    assert_true(all_zero(ct.data + i, 11));
    assert_int_equal(ct.data[i + 11], 1);
    esdk_header_free(h);

    sodium_memzero(dk, sizeof(dk));
    kc_buf_clear(&ct);
    kc_buf_clear(&pt);
    esdk_ec_clear(&ec);
    free(msg);
}

static void
round_trips(uint16_t suite)
{
    static const uint32_t fls[] = {4096, 64};
    size_t i;
    uint32_t fl;

    for (i = 0; i < 2; i++) {
        fl = fls[i];
        round_trip(suite, 0, fl);
        round_trip(suite, 1, fl);
        round_trip(suite, fl - 1, fl);
        round_trip(suite, fl, fl);
        round_trip(suite, fl + 1, fl);
        round_trip(suite, 1 << 20, fl);
    }
    round_trip(suite, 100, 1); /* 1-byte frames */
}

static void
test_round_trip_0478(void **state)
{
    (void)state;
    round_trips(ESDK_SUITE_AES256_HKDF_SHA512_COMMIT);
}

static void
test_round_trip_0578(void **state)
{
    (void)state;
    round_trips(ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384);
}

/* An exact multiple writes a full final frame, never an empty extra one. */
static void
test_frame_layout(void **state)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec ec;
    struct kc_buf ct;
    uint8_t dk[32], pt[128] = {0};

    (void)state;
    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    make_msg(0x0478, &ec, pt, 128, 64, 1, &ct, dk);
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    /* one regular frame (4+12+64+16) + final (4+4+12+4+64+16) */
    assert_int_equal(ct.len - h->body_off, 96 + 104);
    assert_int_equal(kc_load_u32(ct.data + h->body_off), 1);
    assert_int_equal(kc_load_u32(ct.data + h->body_off + 96), UINT32_MAX);
    assert_int_equal(kc_load_u32(ct.data + h->body_off + 100), 2);
    assert_int_equal(kc_load_u32(ct.data + h->body_off + 116), 64);
    esdk_header_free(h);
    kc_buf_clear(&ct);
}

static void
test_wrong_context_and_key(void **state)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec ec, other;
    struct kc_buf ct, pt, other_ser;
    uint8_t dk[32], key[32];

    (void)state;
    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    esdk_ec_init(&other);
    kc_buf_init(&other_ser, 0);
    kc_buf_init(&pt, 0);
    ec_put(&ec, "table", "users");
    ec_put(&other, "table", "orders");
    make_msg(0x0478, &ec, (const uint8_t *)"secret", 6, 4096, 1, &ct, dk);
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    /* The caller's expected context must be contained. */
    assert_false(esdk_ec_contains(&h->ec, &other));
    /* Unwrapping under another context fails the GCM tag. */
    assert_int_equal(esdk_ec_serialize(&other, &other_ser), 0);
    memset(key, 0xAA, sizeof(key));
    assert_int_equal(rawaes_unwrap(wkey, 32, NS, NAME, &h->edks.v[0],
                                   other_ser.data, other_ser.len, key, 32),
                     KC_EAUTH);
    assert_true(all_zero(key, 32));
    /* A different data key fails the commitment. */
    dk[0] ^= 1;
    assert_int_equal(esdk_decrypt(h, ct.data, ct.len, dk, 32, &lim, &pt),
                     KC_EAUTH);
    assert_int_equal(pt.len, 0);
    /* Wrong key length is a caller error. */
    assert_int_equal(esdk_decrypt(h, ct.data, ct.len, dk, 16, &lim, &pt),
                     KC_EINVAL);
    esdk_header_free(h);
    kc_buf_clear(&ct);
    kc_buf_clear(&other_ser);
    esdk_ec_clear(&ec);
    esdk_ec_clear(&other);
}

/* ---- tampering -------------------------------------------------------- */

static void
flips_and_truncations(uint16_t suite)
{
    struct esdk_limits lim;
    struct esdk_ec ec;
    struct kc_buf ct, pt;
    uint8_t dk[32], msg[100], *m;
    size_t i, bit;
    int r;

    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    ec_put(&ec, "k", "v");
    randombytes_buf(msg, sizeof(msg));
    make_msg(suite, &ec, msg, sizeof(msg), 64, 1, &ct, dk);
    kc_buf_init(&pt, 0);
    assert_int_equal(open_msg(ct.data, ct.len, &lim, dk, &pt), 0);
    m = malloc(ct.len + 1);
    assert_non_null(m);
    for (i = 0; i < ct.len; i++) {
        for (bit = 0; bit < 8; bit += 7) {
            memcpy(m, ct.data, ct.len);
            m[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(kc_buf_put(&pt, "junk", 4), 0);
            r = open_msg(m, ct.len, &lim, dk, &pt);
            if (r == 0 || pt.len != 0) {
                fail_msg("flip at %zu bit %zu accepted (%d)", i, bit, r);
            }
        }
    }
    for (i = 0; i < ct.len; i++) {
        r = open_msg(ct.data, i, &lim, dk, &pt);
        if (r == 0 || pt.len != 0) {
            fail_msg("truncation to %zu accepted", i);
        }
    }
    memcpy(m, ct.data, ct.len);
    m[ct.len] = 0;
    assert_int_equal(open_msg(m, ct.len + 1, &lim, dk, &pt), KC_EFORMAT);
    assert_int_equal(pt.len, 0);
    free(m);
    kc_buf_clear(&ct);
    kc_buf_clear(&pt);
    esdk_ec_clear(&ec);
}

static void
test_flips_truncations_0478(void **state)
{
    (void)state;
    flips_and_truncations(ESDK_SUITE_AES256_HKDF_SHA512_COMMIT);
}

static void
test_flips_truncations_0578(void **state)
{
    (void)state;
    flips_and_truncations(ESDK_SUITE_AES256_HKDF_SHA512_COMMIT_P384);
}

/* Offset of the footer in a one-frame message of n plaintext bytes. */
static size_t
footer_off(const struct kc_buf *m, size_t n)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    size_t off;

    esdk_limits_default(&lim);
    assert_int_equal(esdk_header_parse(m->data, m->len, &lim, &h), 0);
    off = h->body_off + 4 + 4 + 12 + 4 + n + 16; /* the final frame */
    esdk_header_free(h);
    return off;
}

static void
test_signature_tamper(void **state)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    const struct esdk_ec_pair *pk;
    struct esdk_ec ec;
    struct kc_buf a, b, pt, mix;
    uint8_t dka[32], dkb[32], *at;
    size_t foot_a, foot_b, off;

    (void)state;
    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    kc_buf_init(&pt, 0);
    kc_buf_init(&mix, 0);
    make_msg(0x0578, &ec, (const uint8_t *)"hello", 5, 64, 1, &a, dka);
    make_msg(0x0578, &ec, (const uint8_t *)"hello", 5, 64, 1, &b, dkb);
    foot_a = footer_off(&a, 5);
    foot_b = footer_off(&b, 5);
    assert_int_equal(foot_a + 2 + kc_load_u16(a.data + foot_a), a.len);
    assert_int_equal(open_msg(a.data, a.len, &lim, dka, &pt), 0);

    /* Footer byte (last byte of the DER signature). */
    a.data[a.len - 1] ^= 1;
    assert_int_equal(open_msg(a.data, a.len, &lim, dka, &pt), KC_EAUTH);
    assert_int_equal(pt.len, 0);
    a.data[a.len - 1] ^= 1;
    /* Header byte (in the message ID). */
    a.data[5] ^= 1;
    assert_int_equal(open_msg(a.data, a.len, &lim, dka, &pt), KC_EAUTH);
    assert_int_equal(pt.len, 0);
    a.data[5] ^= 1;
    /* Public key: a base64 character of the stored context entry. */
    assert_int_equal(esdk_header_parse(a.data, a.len, &lim, &h), 0);
    pk = esdk_ec_get(&h->ec, ESDK_PUBKEY_EC_KEY, 21);
    assert_non_null(pk);
    at = memmem(a.data, h->header_len, pk->val, pk->val_len);
    assert_non_null(at);
    off = (size_t)(at - a.data) + 10;
    esdk_header_free(h);
    a.data[off] = a.data[off] == 'A' ? 'B' : 'A';
    assert_int_not_equal(open_msg(a.data, a.len, &lim, dka, &pt), 0);
    assert_int_equal(pt.len, 0);
    kc_buf_clear(&a);
    make_msg(0x0578, &ec, (const uint8_t *)"hello", 5, 64, 1, &a, dka);
    foot_a = footer_off(&a, 5);
    /* A well-formed signature by another key (b's footer on a). */
    assert_int_equal(kc_buf_put(&mix, a.data, foot_a), 0);
    assert_int_equal(kc_buf_put(&mix, b.data + foot_b, b.len - foot_b), 0);
    assert_int_equal(open_msg(mix.data, mix.len, &lim, dka, &pt), KC_EAUTH);
    assert_int_equal(pt.len, 0);
    /* No footer at all, or an empty signature. */
    assert_int_equal(open_msg(a.data, foot_a, &lim, dka, &pt), KC_EFORMAT);
    mix.len = foot_a;
    assert_int_equal(kc_buf_put_u16(&mix, 0), 0);
    assert_int_equal(open_msg(mix.data, mix.len, &lim, dka, &pt), KC_EAUTH);
    kc_buf_clear(&a);
    kc_buf_clear(&b);
    kc_buf_clear(&mix);
    esdk_ec_clear(&ec);
}

/* Sign with one key, verify with another: the primitive must refuse. */
static void
test_signature_wrong_key(void **state)
{
    EVP_PKEY *k1 = NULL, *k2 = NULL, *pub = NULL;
    uint8_t sig[ESDK_MAX_SIG_LEN];
    char b64[96];
    size_t sig_len, b64_len;
    static const uint8_t m[] = "header and body bytes";

    (void)state;
    assert_int_equal(esdk_sig_keygen(NID_secp384r1, &k1), 0);
    assert_int_equal(esdk_sig_keygen(NID_secp384r1, &k2), 0);
    assert_int_equal(esdk_sig_sign(k1, NID_secp384r1, m, sizeof(m), sig,
                                   &sig_len),
                     0);
    assert_int_equal(esdk_sig_pub_b64(k1, NID_secp384r1, b64, sizeof(b64),
                                      &b64_len),
                     0);
    assert_int_equal(b64_len, 68);
    assert_int_equal(esdk_sig_pub_from_b64(NID_secp384r1,
                                           (const uint8_t *)b64, b64_len,
                                           &pub),
                     0);
    assert_int_equal(esdk_sig_verify(pub, NID_secp384r1, m, sizeof(m), sig,
                                     sig_len),
                     0);
    EVP_PKEY_free(pub);
    assert_int_equal(esdk_sig_pub_b64(k2, NID_secp384r1, b64, sizeof(b64),
                                      &b64_len),
                     0);
    assert_int_equal(esdk_sig_pub_from_b64(NID_secp384r1,
                                           (const uint8_t *)b64, b64_len,
                                           &pub),
                     0);
    assert_int_equal(esdk_sig_verify(pub, NID_secp384r1, m, sizeof(m), sig,
                                     sig_len),
                     KC_EAUTH);
    EVP_PKEY_free(pub);
    /* A P-384 point is not a P-256 key; junk is not a key. */
    assert_int_equal(esdk_sig_pub_from_b64(NID_X9_62_prime256v1,
                                           (const uint8_t *)b64, b64_len,
                                           &pub),
                     KC_EFORMAT);
    memset(b64 + 1, 'A', 40);
    assert_int_not_equal(esdk_sig_pub_from_b64(NID_secp384r1,
                                               (const uint8_t *)b64,
                                               b64_len, &pub),
                         0);
    assert_null(pub);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

static void
test_commitment_mismatch(void **state)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec ec;
    struct kc_buf ct, pt;
    uint8_t dk[32];

    (void)state;
    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    kc_buf_init(&pt, 0);
    make_msg(0x0478, &ec, (const uint8_t *)"plaintext", 9, 64, 1, &ct, dk);
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    /* The commitment is the last 32 bytes of the header body. */
    ct.data[h->header_len - 1] ^= 0x40;
    esdk_header_free(h);
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    assert_int_equal(kc_buf_put(&pt, "stale", 5), 0);
    assert_int_equal(esdk_decrypt(h, ct.data, ct.len, dk, 32, &lim, &pt),
                     KC_EAUTH);
    assert_int_equal(pt.len, 0);
    assert_null(pt.data);
    esdk_header_free(h);
    kc_buf_clear(&ct);
}

/* Header contexts: unsorted is accepted, a duplicate key is not. */
static void
test_header_ec_order(void **state)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec ec;
    struct kc_buf ct;
    uint8_t dk[32];
    size_t off = 1 + 2 + 32 + 2 + 2; /* first pair's key length */

    (void)state;
    esdk_limits_default(&lim);
    esdk_ec_init(&ec);
    ec_put(&ec, "b", "2");
    ec_put(&ec, "a", "1");
    make_msg(0x0478, &ec, (const uint8_t *)"x", 1, 64, 1, &ct, dk);
    /* Stored sorted: 00 01 'a' 00 01 '1' 00 01 'b' 00 01 '2'. */
    assert_int_equal(ct.data[off + 2], 'a');
    assert_int_equal(ct.data[off + 8], 'b');
    ct.data[off + 2] = 'c'; /* now c, b: unsorted but valid */
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    assert_int_equal(h->ec.pairs[0].key[0], 'c');
    assert_int_equal(h->ec_canonical.data[4], 'b');
    esdk_header_free(h);
    ct.data[off + 2] = 'b'; /* b, b: duplicate */
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h),
                     KC_EFORMAT);
    assert_null(h);
    kc_buf_clear(&ct);
    esdk_ec_clear(&ec);
}

/* ---- limits and refusals --------------------------------------------- */

static void
test_limits(void **state)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec ec;
    struct kc_buf ct, pt;
    uint8_t dk[32], msg[1000] = {0};

    (void)state;
    esdk_ec_init(&ec);
    kc_buf_init(&pt, 0);
    make_msg(0x0478, &ec, msg, sizeof(msg), 64, 3, &ct, dk);

    esdk_limits_default(&lim);
    assert_int_equal(open_msg(ct.data, ct.len, &lim, NULL, &pt), 0);
    lim.max_edks = 2;
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h),
                     KC_ETOOBIG);
    assert_null(h);
    esdk_limits_default(&lim);
    lim.max_frame_len = 32;
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h),
                     KC_ETOOBIG);
    esdk_limits_default(&lim);
    lim.max_message = ct.len - 1;
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h),
                     KC_ETOOBIG);
    /* 1000 bytes in 64-byte frames = 16 frames. */
    esdk_limits_default(&lim);
    lim.max_frames = 15;
    assert_int_equal(open_msg(ct.data, ct.len, &lim, dk, &pt), KC_ETOOBIG);
    lim.max_frames = 16;
    assert_int_equal(open_msg(ct.data, ct.len, &lim, dk, &pt), 0);
    /* The caller's output cap holds too. */
    kc_buf_clear(&pt);
    kc_buf_init(&pt, 999);
    assert_int_equal(open_msg(ct.data, ct.len, &lim, dk, &pt), KC_ETOOBIG);
    assert_int_equal(pt.len, 0);
    kc_buf_clear(&ct);
    kc_buf_clear(&pt);
}

static void
test_refusals(void **state)
{
    static const uint8_t legacy[] = {0x01, 0x80, 0x01, 0x78};
    static const uint8_t unknown[] = {0x02, 0x00, 0x00};
    static const uint8_t dbe[] = {0x02, 0x67, 0x00};
    static const uint8_t mismatch[] = {0x01, 0x80, 0x04, 0x78};
    static const uint8_t badver[] = {0x03, 0x04, 0x78};
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_edk_list edks;
    struct esdk_enc *enc = NULL;
    struct esdk_ec ec;
    struct kc_buf out;
    uint8_t dk[32] = {0};

    (void)state;
    esdk_limits_default(&lim);
    assert_int_equal(esdk_header_parse(legacy, sizeof(legacy), &lim, &h),
                     KC_EUNSUPPORTED);
    assert_int_equal(esdk_header_parse(unknown, sizeof(unknown), &lim, &h),
                     KC_EFORMAT);
    assert_int_equal(esdk_header_parse(dbe, sizeof(dbe), &lim, &h),
                     KC_EFORMAT);
    assert_int_equal(esdk_header_parse(mismatch, sizeof(mismatch), &lim, &h),
                     KC_EFORMAT);
    assert_int_equal(esdk_header_parse(badver, sizeof(badver), &lim, &h),
                     KC_EFORMAT);
    assert_int_equal(esdk_header_parse(NULL, 0, &lim, &h), KC_EFORMAT);
    assert_null(esdk_suite_get(0x0000));
    assert_null(esdk_suite_get(0x0072));
    assert_non_null(esdk_suite_get(0x0214));

    esdk_ec_init(&ec);
    assert_int_equal(esdk_enc_new(0x0178, &ec, &enc), KC_EUNSUPPORTED);
    ec_put(&ec, "aws-crypto-public-key", "x");
    assert_int_equal(esdk_enc_new(0x0578, &ec, &enc), KC_ECONTEXT);
    esdk_ec_clear(&ec);

    assert_int_equal(esdk_enc_new(0x0478, &ec, &enc), 0);
    esdk_edk_list_init(&edks);
    kc_buf_init(&out, 0);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, 64, dk, 1, &out),
                     KC_EINVAL); /* no EDK */
    assert_int_equal(esdk_edk_list_add(&edks, "p", 1, "i", 1, "c", 1), 0);
    assert_int_equal(esdk_enc_finish(enc, dk, 16, &edks, 64, dk, 1, &out),
                     KC_EINVAL);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, 0, dk, 1, &out),
                     KC_EINVAL);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, 64, dk, 1, &out), 0);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, 64, dk, 1, &out),
                     KC_EINVAL); /* one message per esdk_enc */
    /* A writer's output cap is a clean ETOOBIG. */
    esdk_enc_free(enc);
    assert_int_equal(esdk_enc_new(0x0478, &ec, &enc), 0);
    kc_buf_clear(&out);
    kc_buf_init(&out, 100);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, 64, dk, 32, &out),
                     KC_ETOOBIG);
    assert_int_equal(out.len, 0);
    esdk_enc_free(enc);
    esdk_enc_free(NULL);
    esdk_header_free(NULL);
    esdk_edk_list_clear(&edks);
    kc_buf_clear(&out);
}

/* ---- raw AES keyring -------------------------------------------------- */

static void
test_rawaes(void **state)
{
    static const size_t klens[] = {16, 24, 32};
    struct esdk_edk_list l;
    struct esdk_edk *e;
    uint8_t dk[32], got[32], bad[32];
    static const uint8_t aad[] = {0x00, 0x01, 0x00, 0x01, 'k',
                                  0x00, 0x01, 'v'};
    size_t i;

    (void)state;
    randombytes_buf(dk, sizeof(dk));
    for (i = 0; i < 3; i++) {
        esdk_edk_list_init(&l);
        assert_int_equal(rawaes_wrap(wkey, klens[i], NS, NAME, aad,
                                     sizeof(aad), dk, 32, &l),
                         0);
        e = &l.v[0];
        assert_int_equal(e->provider_id_len, strlen(NS));
        assert_memory_equal(e->provider_id, NS, strlen(NS));
        assert_int_equal(e->provider_info_len, strlen(NAME) + 20);
        assert_memory_equal(e->provider_info, NAME, strlen(NAME));
        assert_memory_equal(e->provider_info + strlen(NAME),
                            "\x00\x00\x00\x80\x00\x00\x00\x0C", 8);
        assert_int_equal(e->ciphertext_len, 48);
        assert_true(rawaes_edk_matches(NS, NAME, e));
        assert_false(rawaes_edk_matches(NS, "unit-ke", e));
        assert_false(rawaes_edk_matches("keycache-unix", NAME, e));

        assert_int_equal(rawaes_unwrap(wkey, klens[i], NS, NAME, e, aad,
                                       sizeof(aad), got, 32),
                         0);
        assert_memory_equal(got, dk, 32);
        /* Wrong key, wrong AAD: KC_EAUTH, output zeroed. */
        memcpy(bad, wkey, sizeof(bad));
        bad[3] ^= 1;
        assert_int_equal(rawaes_unwrap(bad, klens[i], NS, NAME, e, aad,
                                       sizeof(aad), got, 32),
                         KC_EAUTH);
        assert_true(all_zero(got, 32));
        assert_int_equal(rawaes_unwrap(wkey, klens[i], NS, NAME, e, aad,
                                       sizeof(aad) - 1, got, 32),
                         KC_EAUTH);
        assert_int_equal(rawaes_unwrap(wkey, klens[i], NS, NAME, e, NULL, 0,
                                       got, 32),
                         KC_EAUTH);
        /* Not ours, or the wrong length. */
        assert_int_equal(rawaes_unwrap(wkey, klens[i], "other", NAME, e, aad,
                                       sizeof(aad), got, 32),
                         KC_ENODATAKEY);
        assert_int_equal(rawaes_unwrap(wkey, klens[i], NS, NAME, e, aad,
                                       sizeof(aad), got, 16),
                         KC_ENODATAKEY);
        esdk_edk_list_clear(&l);
    }
    esdk_edk_list_init(&l);
    assert_int_equal(rawaes_wrap(wkey, 20, NS, NAME, aad, sizeof(aad), dk,
                                 32, &l),
                     KC_EINVAL);
    assert_int_equal(l.n, 0);
    sodium_memzero(dk, sizeof(dk));
}

/* ---- derivation known answer ----------------------------------------- */

/* Case 1 of the public "Message Format V2 Test Vectors" (2020-09-18). */
static void
test_kdf_known_answer(void **state)
{
    static const char dek_b64[] =
        "+p6+whPVw9kOrYLZFMRBJ2n6Vli6T/7TkjDouS+25s0=";
    static const char id_b64[] =
        "TfvRMU2dVZJbgXIyxeNtbj5eIw8BiTDiwsHyQ/Z9wXk=";
    static const char commit_b64[] =
        "F88I9zPbUQSfOlzLXv+uIY2+m/E6j2PMsbgeHVH/L0w=";
    static const char cek_b64[] =
        "V67301yMJtk0jxOc3QJeBac6uKxO3XylWtkKTYmUU+M=";
    uint8_t dek[32], id[32], commit[32], cek[32], key[32], c[32];
    size_t n;

    (void)state;
    assert_int_equal(sodium_base642bin(dek, 32, dek_b64, strlen(dek_b64),
                                       NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(sodium_base642bin(id, 32, id_b64, strlen(id_b64), NULL,
                                       &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(sodium_base642bin(commit, 32, commit_b64,
                                       strlen(commit_b64), NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(sodium_base642bin(cek, 32, cek_b64, strlen(cek_b64),
                                       NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(esdk_derive_keys(esdk_suite_get(0x0478), dek, 32, id, 32,
                                      key, c),
                     0);
    assert_memory_equal(key, cek, 32);
    assert_memory_equal(c, commit, 32);
    assert_int_equal(esdk_derive_keys(esdk_suite_get(0x0478), dek, 16, id, 32,
                                      key, c),
                     KC_EINVAL);
}

/* ---- fast paths: HKDF on midstates, pooled randomness, templates ------ */

/* esdk_hkdf (midstates) equals OpenSSL's EVP_KDF for every hash, salt
 * and key length around the block sizes, and for multi-block outputs. */
static void
test_hkdf_matches_reference(void **state)
{
    static const enum esdk_kdf kdfs[] = {
        ESDK_KDF_HKDF_SHA256, ESDK_KDF_HKDF_SHA384, ESDK_KDF_HKDF_SHA512};
    static const size_t ikm_lens[] = {1, 16, 32, 64, 127, 128, 129, 300};
    static const size_t salt_lens[] = {0, 16, 32, 64, 128, 129, 200};
    static const size_t olens[] = {16, 32, 64, 65, 200};
    uint8_t ikm[300], salt[200], info1[40], info2[9];
    uint8_t a1[200], a2[200], b1[200], b2[200];
    const uint8_t *info[2] = {info1, info2};
    size_t info_len[2] = {sizeof(info1), sizeof(info2)}, olen[2];
    size_t k, i, j, o;

    (void)state;
    randombytes_buf(ikm, sizeof(ikm));
    randombytes_buf(salt, sizeof(salt));
    randombytes_buf(info1, sizeof(info1));
    randombytes_buf(info2, sizeof(info2));
    for (k = 0; k < 3; k++) {
        for (i = 0; i < sizeof(ikm_lens) / sizeof(ikm_lens[0]); i++) {
            for (j = 0; j < sizeof(salt_lens) / sizeof(salt_lens[0]); j++) {
                for (o = 0; o < sizeof(olens) / sizeof(olens[0]); o++) {
                    uint8_t *a[2] = {a1, a2}, *b[2] = {b1, b2};

                    olen[0] = olens[o];
                    olen[1] = 32;
                    assert_int_equal(esdk_hkdf(kdfs[k], ikm, ikm_lens[i],
                                               salt, salt_lens[j], 2, info,
                                               info_len, a, olen),
                                     0);
                    assert_int_equal(
                        esdk_hkdf_reference(kdfs[k], ikm, ikm_lens[i], salt,
                                            salt_lens[j], 2, info, info_len,
                                            b, olen),
                        0);
                    assert_memory_equal(a1, b1, olen[0]);
                    assert_memory_equal(a2, b2, olen[1]);
                }
            }
        }
    }
    /* Past 255 hash lengths RFC 5869 has no output: refused, wiped. */
    {
        static uint8_t big[255 * 32 + 1];
        uint8_t *a[1] = {big};
        size_t bl[1] = {sizeof(big)};

        memset(big, 0xAA, sizeof(big));
        assert_int_equal(esdk_hkdf(ESDK_KDF_HKDF_SHA256, ikm, 32, salt, 32, 1,
                                   info, info_len, a, bl),
                         KC_EINVAL);
        assert_true(sodium_is_zero(big, sizeof(big)));
    }
    assert_int_equal(esdk_hkdf(ESDK_KDF_IDENTITY, ikm, 32, salt, 32, 0, NULL,
                               NULL, NULL, NULL),
                     KC_EINVAL);
}

/* The salt keyed in two halves (esdk_hkdf_salt_half), then
 * esdk_hkdf_salted, equals OpenSSL's HKDF for every hash; the v2
 * derivation from a begun message equals esdk_derive_keys with its ID. */
static void
test_hkdf_salted(void **state)
{
    static const enum esdk_kdf kdfs[] = {
        ESDK_KDF_HKDF_SHA256, ESDK_KDF_HKDF_SHA384, ESDK_KDF_HKDF_SHA512};
    static const size_t salt_lens[] = {0, 32, 64, 128};
    _Alignas(16) unsigned char st[ESDK_MSG_START_STATE];
    uint8_t ikm[32], salt[128], info1[11], a1[64], b1[64];
    uint8_t key1[32], key2[32], commit1[32], commit2[32];
    const uint8_t *info[1] = {info1};
    size_t info_len[1] = {sizeof(info1)}, olen[1] = {64}, k, j;
    uint8_t *a[1] = {a1}, *b[1] = {b1};
    struct esdk_msg_start ms;

    (void)state;
    randombytes_buf(ikm, sizeof(ikm));
    randombytes_buf(salt, sizeof(salt));
    randombytes_buf(info1, sizeof(info1));
#ifdef ESDK_HKDF_SALTED
    for (k = 0; k < 3; k++) {
        for (j = 0; j < sizeof(salt_lens) / sizeof(salt_lens[0]); j++) {
            esdk_hkdf_salt_half(kdfs[k], salt, salt_lens[j], 0, st);
            esdk_hkdf_salt_half(kdfs[k], salt, salt_lens[j], 1, st);
            assert_int_equal(esdk_hkdf_salted(st, ikm, sizeof(ikm), 1, info,
                                              info_len, a, olen),
                             0);
            assert_int_equal(esdk_hkdf_reference(kdfs[k], ikm, sizeof(ikm),
                                                 salt, salt_lens[j], 1, info,
                                                 info_len, b, olen),
                             0);
            assert_memory_equal(a1, b1, sizeof(a1));
        }
    }
#else
    (void)kdfs;
    (void)salt_lens;
    (void)st;
    (void)info;
    (void)info_len;
    (void)olen;
    (void)k;
    (void)j;
    (void)a;
    (void)b;
#endif
    /* A begun message derives what its ID derives; only both halves. */
    assert_int_equal(esdk_msg_start_begin(0x0478, &ms), 0);
    assert_int_equal(esdk_derive_keys_started(esdk_suite_get(0x0478), ikm,
                                              32, &ms, key1, commit1),
                     KC_EINVAL);
    esdk_msg_start_finish(&ms);
    assert_int_equal(esdk_derive_keys(esdk_suite_get(0x0478), ikm, 32,
                                      ms.msg_id, 32, key2, commit2),
                     0);
    assert_int_equal(esdk_derive_keys_started(esdk_suite_get(0x0478), ikm,
                                              32, &ms, key1, commit1),
                     0);
    assert_memory_equal(key1, key2, sizeof(key1));
    assert_memory_equal(commit1, commit2, sizeof(commit1));
    /* Suites without templates are refused. */
    assert_int_equal(esdk_msg_start_begin(0x0178, &ms), KC_EUNSUPPORTED);
    assert_int_equal(ms.stage, ESDK_MSG_UNUSED);
    assert_int_equal(esdk_msg_start_begin(0x0014, &ms), KC_EUNSUPPORTED);
    assert_int_equal(esdk_msg_start_begin(0x1234, &ms), KC_EUNSUPPORTED);
}

/* Pooled draws never repeat, across refills and across fork. */
static void
test_rand_pool(void **state)
{
    uint8_t a[1000], b[32], seen[200][32], child[32];
    int fds[2], status = 0;
    size_t i, j;
    pid_t pid;

    (void)state;
    for (i = 0; i < 200; i++) { /* crosses at least one 4 KiB refill */
        assert_int_equal(esdk_rand(seen[i], 32), 0);
        for (j = 0; j < i; j++) {
            assert_memory_not_equal(seen[i], seen[j], 32);
        }
    }
    assert_int_equal(esdk_rand(a, sizeof(a)), 0); /* direct path */
    /* The child's first draw must differ from the parent's next one: a
     * copied pool would hand both the same bytes. */
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (esdk_rand(child, sizeof(child)) != 0 ||
            write(fds[1], child, sizeof(child)) != (ssize_t)sizeof(child)) {
            _exit(1);
        }
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], child, sizeof(child)),
                     (ssize_t)sizeof(child));
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(esdk_rand(b, sizeof(b)), 0);
    assert_memory_not_equal(child, b, sizeof(b));
    esdk_rand_shutdown();
    assert_int_equal(esdk_rand(b, sizeof(b)), 0); /* a new pool */
    esdk_rand_shutdown();
}

/* A template writes what the writer writes, apart from the message ID
 * and what follows from it, and its messages decrypt. */
static void
tmpl_case(size_t n, uint32_t fl, size_t n_edks)
{
    struct esdk_edk_list edks;
    struct esdk_tmpl *t = NULL;
    struct esdk_enc *enc = NULL;
    struct esdk_header *h1 = NULL, *h2 = NULL;
    struct kc_buf m1, m2, pt;
    struct esdk_ec ec;
    const uint8_t *aad;
    uint8_t dk[32], *in;
    size_t aad_len, i;

    in = malloc(n + 1);
    assert_non_null(in);
    randombytes_buf(in, n + 1);
    randombytes_buf(dk, sizeof(dk));
    esdk_ec_init(&ec);
    ec_put(&ec, "tenant", "t-42");
    ec_put(&ec, "purpose", "unit");
    esdk_edk_list_init(&edks);
    assert_int_equal(esdk_enc_new(0x0478, &ec, &enc), 0);
    esdk_enc_wrapping_aad(enc, &aad, &aad_len);
    for (i = 0; i < n_edks; i++) {
        assert_int_equal(rawaes_wrap(wkey, sizeof(wkey), NS, NAME, aad,
                                     aad_len, dk, 32, &edks),
                         0);
    }
    kc_buf_init(&m1, 0);
    kc_buf_init(&m2, 0);
    kc_buf_init(&pt, 0);
    assert_int_equal(esdk_enc_finish(enc, dk, 32, &edks, fl, in, n, &m1), 0);
    assert_int_equal(esdk_tmpl_new(0x0478, &ec, &edks, fl, &t), 0);
    assert_int_equal(esdk_tmpl_encrypt(t, dk, 32, in, n, &m2), 0);
    assert_int_equal(m2.len, m1.len);
    assert_int_equal(esdk_tmpl_msg_len(t, n), m2.len);
    assert_int_equal(esdk_header_parse(m1.data, m1.len, NULL, &h1), 0);
    assert_int_equal(esdk_header_parse(m2.data, m2.len, NULL, &h2), 0);
    assert_int_equal(h1->header_len, h2->header_len);
    /* Same bytes from the AAD length to the commitment. */
    assert_memory_equal(m1.data, m2.data, 3);
    assert_memory_equal(m1.data + 35, m2.data + 35, h1->header_len - 35 - 32);
    assert_memory_not_equal(h1->message_id, h2->message_id, 32);
    assert_int_equal(esdk_decrypt(h2, m2.data, m2.len, dk, 32, NULL, &pt), 0);
    assert_int_equal(pt.len, n);
    if (n > 0) {
        assert_memory_equal(pt.data, in, n);
    }
    /* Appends after what is already in the buffer. */
    assert_int_equal(esdk_tmpl_encrypt(t, dk, 32, in, n, &m2), 0);
    assert_int_equal(m2.len, 2 * m1.len);
    assert_int_equal(esdk_tmpl_encrypt(t, dk, 16, in, n, &m2), KC_EINVAL);
    assert_int_equal(m2.len, 2 * m1.len);
    /* Begun ahead, finished or not: the message carries the ID drawn at
     * the start, decrypts, and leaves the start used up. */
    for (i = 0; i < 2; i++) {
        struct esdk_msg_start ms;
        struct esdk_header *h3 = NULL;
        uint8_t id[32];
        size_t before = m2.len;

        assert_int_equal(esdk_msg_start_begin(0x0478, &ms), 0);
        if (i == 1) {
            esdk_msg_start_finish(&ms);
        }
        memcpy(id, ms.msg_id, sizeof(id));
        assert_int_equal(
            esdk_tmpl_encrypt_started(t, &ms, dk, 32, in, n, &m2), 0);
        assert_int_equal(ms.stage, ESDK_MSG_UNUSED);
        assert_int_equal(m2.len - before, m1.len);
        assert_int_equal(esdk_header_parse(m2.data + before, m1.len, NULL,
                                           &h3),
                         0);
        assert_memory_equal(h3->message_id, id, 32);
        kc_buf_truncate(&pt, 0);
        assert_int_equal(esdk_decrypt(h3, m2.data + before, m1.len, dk, 32,
                                      NULL, &pt),
                         0);
        assert_int_equal(pt.len, n);
        if (n > 0) {
            assert_memory_equal(pt.data, in, n);
        }
        esdk_header_free(h3);
        /* A start used up, or never begun, or begun for another suite is
         * refused and leaves out as it was. */
        before = m2.len;
        assert_int_equal(
            esdk_tmpl_encrypt_started(t, &ms, dk, 32, in, n, &m2), KC_EINVAL);
        assert_int_equal(esdk_msg_start_begin(0x0578, &ms), 0);
        assert_int_equal(
            esdk_tmpl_encrypt_started(t, &ms, dk, 32, in, n, &m2), KC_EINVAL);
        assert_int_equal(ms.stage, ESDK_MSG_UNUSED);
        assert_int_equal(m2.len, before);
    }
    esdk_header_free(h1);
    esdk_header_free(h2);
    esdk_tmpl_free(t);
    esdk_enc_free(enc);
    esdk_edk_list_clear(&edks);
    esdk_ec_clear(&ec);
    kc_buf_clear(&m1);
    kc_buf_clear(&m2);
    kc_buf_clear(&pt);
    free(in);
}

static void
test_tmpl(void **state)
{
    struct esdk_edk_list edks;
    struct esdk_tmpl *t = NULL;
    struct esdk_ec ec;

    (void)state;
    tmpl_case(0, 4096, 1);
    tmpl_case(64, 4096, 1);
    tmpl_case(1024, 4096, 2);
    tmpl_case(4096, 4096, 1);
    tmpl_case(10000, 4096, 3);
    tmpl_case(100, 1, 1);
    /* Refusals: signing suite, reserved context key, no EDKs. */
    esdk_ec_init(&ec);
    esdk_edk_list_init(&edks);
    assert_int_equal(esdk_tmpl_new(0x0478, &ec, &edks, 4096, &t), KC_EINVAL);
    assert_int_equal(esdk_edk_list_add(&edks, "p", 1, "i", 1, "c", 1), 0);
    assert_int_equal(esdk_tmpl_new(0x0578, &ec, &edks, 4096, &t),
                     KC_EUNSUPPORTED);
    assert_int_equal(esdk_tmpl_new(0x0478, &ec, &edks, 0, &t), KC_EINVAL);
    ec_put(&ec, "aws-crypto-x", "y");
    assert_int_equal(esdk_tmpl_new(0x0478, &ec, &edks, 4096, &t),
                     KC_ECONTEXT);
    assert_null(t);
    esdk_tmpl_free(NULL);
    esdk_ec_clear(&ec);
    esdk_edk_list_clear(&edks);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ec_sort_utf8),
        cmocka_unit_test(test_ec_rules),
        cmocka_unit_test(test_ec_borrowed),
        cmocka_unit_test(test_ec_limits),
        cmocka_unit_test(test_round_trip_0478),
        cmocka_unit_test(test_round_trip_0578),
        cmocka_unit_test(test_frame_layout),
        cmocka_unit_test(test_wrong_context_and_key),
        cmocka_unit_test(test_flips_truncations_0478),
        cmocka_unit_test(test_flips_truncations_0578),
        cmocka_unit_test(test_signature_tamper),
        cmocka_unit_test(test_signature_wrong_key),
        cmocka_unit_test(test_commitment_mismatch),
        cmocka_unit_test(test_header_ec_order),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rawaes),
        cmocka_unit_test(test_kdf_known_answer),
        cmocka_unit_test(test_hkdf_matches_reference),
        cmocka_unit_test(test_hkdf_salted),
        cmocka_unit_test(test_rand_pool),
        cmocka_unit_test(test_tmpl),
    };

    if (sodium_init() < 0) {
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
