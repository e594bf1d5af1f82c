/*
 * objpool_test.c - the huge-page object pool under cache entries, and
 * header templates built inside an entry or apart from it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "esdk.h"
#include "keymem.h"
#include "objpool.h"

#define OBJ 384
#define PER_CHUNK ((OBJPOOL_CHUNK_BYTES - OBJPOOL_ALIGN) / OBJ)

static void
test_objects_aligned_distinct_and_spread_over_chunks(void **state)
{
    struct objpool p = OBJPOOL_INIT(OBJ);
    size_t n = 2 * PER_CHUNK + 10, i;
    uint8_t **v = calloc(n, sizeof(*v));

    (void)state;
    assert_non_null(v);
    for (i = 0; i < n; i++) {
        v[i] = objpool_get(&p);
        assert_non_null(v[i]);
        assert_int_equal((uintptr_t)v[i] % OBJPOOL_ALIGN, 0);
        memset(v[i], (int)(i & 0xff), OBJ); /* ASan: inside a mapping */
    }
    assert_int_equal(objpool_mapped_bytes(&p), 3 * OBJPOOL_CHUNK_BYTES);
    /* No two objects overlap: each still holds its own pattern. */
    for (i = 0; i < n; i++) {
        assert_int_equal(v[i][0], i & 0xff);
        assert_int_equal(v[i][OBJ - 1], i & 0xff);
    }
    /* A returned object is the next one handed out. */
    objpool_put(&p, v[7]);
    assert_ptr_equal(objpool_get(&p), v[7]);

    /* Emptying the pool unmaps every chunk but one spare. */
    for (i = 0; i < n; i++) {
        objpool_put(&p, v[i]);
    }
    assert_int_equal(objpool_mapped_bytes(&p), OBJPOOL_CHUNK_BYTES);
    /* The spare serves the next objects without a new mapping. */
    for (i = 0; i < 100; i++) {
        v[i] = objpool_get(&p);
        assert_non_null(v[i]);
    }
    assert_int_equal(objpool_mapped_bytes(&p), OBJPOOL_CHUNK_BYTES);
    for (i = 0; i < 100; i++) {
        objpool_put(&p, v[i]);
    }
    objpool_put(&p, NULL);
    free(v);
}

static void
test_churn_keeps_mapping_bounded(void **state)
{
    struct objpool p = OBJPOOL_INIT(OBJ);
    enum { LIVE = 1000 };
    void *live[LIVE] = {0};
    size_t i;

    (void)state;
    /* Many get/put cycles with a bounded number alive: one chunk. */
    for (i = 0; i < 50 * PER_CHUNK; i++) {
        objpool_put(&p, live[i % LIVE]);
        live[i % LIVE] = objpool_get(&p);
        assert_non_null(live[i % LIVE]);
    }
    assert_int_equal(objpool_mapped_bytes(&p), OBJPOOL_CHUNK_BYTES);
    for (i = 0; i < LIVE; i++) {
        objpool_put(&p, live[i]);
    }
}

/*
 * Under ASan, chunks are poisoned while unused; a chunk unmapped when it
 * empties must not leave that poison behind for whatever is mapped at
 * its address next (here a big table, where mmap reuses the hole).
 */
static void
test_unmapped_chunk_leaves_no_poison(void **state)
{
    struct objpool p = OBJPOOL_INIT(OBJ);
    size_t n = 3 * PER_CHUNK, i, tn = 8 * OBJPOOL_CHUNK_BYTES;
    void **v = calloc(n, sizeof(*v));
    uint8_t *t;

    (void)state;
    assert_non_null(v);
    for (i = 0; i < n; i++) {
        assert_non_null(v[i] = objpool_get(&p));
    }
    for (i = 0; i < n; i++) {
        objpool_put(&p, v[i]);
    }
    assert_int_equal(objpool_mapped_bytes(&p), OBJPOOL_CHUNK_BYTES);
    t = objpool_table_new(tn);
    assert_non_null(t);
    memset(t, 0x5a, tn); /* ASan: use-after-poison before the fix */
    objpool_table_free(t, tn);
    free(v);
}

static void
test_table_zeroed_small_and_large(void **state)
{
    size_t sizes[] = {64, OBJPOOL_CHUNK_BYTES - 8, OBJPOOL_CHUNK_BYTES,
                      OBJPOOL_CHUNK_BYTES + 8};
    size_t i, j;
    uint8_t *t;

    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        t = objpool_table_new(sizes[i]);
        assert_non_null(t);
        for (j = 0; j < sizes[i]; j += 4093) {
            assert_int_equal(t[j], 0);
        }
        assert_int_equal(t[sizes[i] - 1], 0);
        memset(t, 0xab, sizes[i]);
        objpool_table_free(t, sizes[i]);
    }
    objpool_table_free(NULL, 0);
}

/* An entry whose one EDK has a ciphertext of ct_len bytes. */
static struct cache_entry *
entry_with_edk(size_t ct_len, uint8_t dk[32])
{
    struct cache_entry *e = NULL;
    uint8_t ct[512];

    assert_true(ct_len <= sizeof(ct));
    assert_int_equal(cache_entry_new(CACHE_ENC, NULL, 32, &e), 0);
    randombytes_buf(e->dk, 32);
    memcpy(dk, e->dk, 32);
    randombytes_buf(ct, ct_len);
    assert_int_equal(esdk_edk_list_add(&e->edks, "keycache-local", 14,
                                       "bench-key", 9, ct, ct_len),
                     0);
    return e;
}

/* Encrypt pt with e's template and decrypt the message back. */
static void
roundtrip(const struct cache_entry *e, const uint8_t dk[32])
{
    static const uint8_t pt[64] = "a field of sixty-four bytes, more or less";
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct kc_buf ct, out;

    esdk_limits_default(&lim);
    kc_buf_init(&ct, 0);
    kc_buf_init(&out, 0);
    assert_int_equal(esdk_tmpl_encrypt(e->tmpl, e->dk, 32, pt, sizeof(pt),
                                       &ct),
                     0);
    assert_int_equal(ct.len, esdk_tmpl_msg_len(e->tmpl, sizeof(pt)));
    assert_int_equal(esdk_header_parse(ct.data, ct.len, &lim, &h), 0);
    assert_int_equal(h->edks.n, 1);
    assert_int_equal(esdk_decrypt(h, ct.data, ct.len, dk, 32, &lim, &out),
                     0);
    assert_int_equal(out.len, sizeof(pt));
    assert_memory_equal(out.data, pt, sizeof(pt));
    esdk_header_free(h);
    kc_buf_clear(&ct);
    kc_buf_clear(&out);
}

static void
test_template_inside_entry_or_apart(void **state)
{
    struct cache_entry *small, *big;
    struct esdk_ec ec;
    uint8_t dk1[32], dk2[32];

    (void)state;
    esdk_ec_init(&ec);
    assert_int_equal(esdk_ec_add(&ec, "tenant", 6, "t000042", 7), 0);

    /* A local-provider sized EDK (48-byte wrapped key): inside. */
    small = entry_with_edk(48, dk1);
    assert_int_equal(cache_entry_build_tmpl(small, 0x0478, &ec, 4096), 0);
    assert_ptr_equal((void *)small->tmpl, (void *)small->tmpl_room);
    assert_int_equal(small->edks.n, 0); /* one copy: in the template */
    roundtrip(small, dk1);

    /* A KMS-sized one (300 bytes) does not fit: allocated apart, and
     * freed with the entry (ASan/LSan check both frees). */
    big = entry_with_edk(300, dk2);
    assert_int_equal(cache_entry_build_tmpl(big, 0x0478, &ec, 4096), 0);
    assert_ptr_not_equal((void *)big->tmpl, (void *)big->tmpl_room);
    assert_non_null(big->tmpl);
    roundtrip(big, dk2);

    cache_entry_free(small);
    cache_entry_free(big);
    esdk_ec_clear(&ec);
    sodium_memzero(dk1, sizeof(dk1));
    sodium_memzero(dk2, sizeof(dk2));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects_aligned_distinct_and_spread_over_chunks),
        cmocka_unit_test(test_churn_keeps_mapping_bounded),
        cmocka_unit_test(test_unmapped_chunk_leaves_no_poison),
        cmocka_unit_test(test_table_zeroed_small_and_large),
        cmocka_unit_test(test_template_inside_entry_or_apart),
    };
    char err[256];

    if (sodium_init() < 0 || keymem_init(16, err, sizeof(err)) != 0) {
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
