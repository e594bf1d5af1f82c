/*
 * esdk_vectors_test.c - decrypt the public AWS Encryption SDK vectors
 * (read from $KC_VECTORS_DIR/aws-esdk, never copied into the repo).
 *
 * Sets: dafny-4.1.0 and net-4.0.1 (must decrypt to the expected
 * plaintext), net-4.0.0-invalid (must fail), and the message-format-v2
 * commitment known answers (derivation checked, then decrypt or fail).
 * Without the vectors directory the test exits 77 (meson: SKIP).
 */
#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sodium.h>

#include "esdk.h"

struct counts {
    const char *name;
    int passed;
    int failed;
    int skipped;
    int unsupported; /* expected-unsupported (none when RECMM works) */
};

static char vec_dir[4096];
static json_t *results;
static struct counts c_dafny = {"dafny-4.1.0", 0, 0, 0, 0};
static struct counts c_net401 = {"net-4.0.1", 0, 0, 0, 0};
static struct counts c_net400 = {"net-4.0.0-invalid", 0, 0, 0, 0};
static struct counts c_kat = {"commitment-v2", 0, 0, 0, 0};

/* Whole file into a malloc'd buffer; NULL when unreadable. */
static uint8_t *
read_file(const char *rel, size_t *len)
{
    char path[8192];
    uint8_t *p = NULL;
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/%s", vec_dir, rel);
    if ((f = fopen(path, "rb")) == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)n + 1)) != NULL &&
        fread(p, 1, (size_t)n, f) == (size_t)n) {
        *len = (size_t)n;
    } else {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

/* Base64 (standard alphabet) into a malloc'd buffer. */
static uint8_t *
b64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    uint8_t *p = malloc(n + 1);

    if (p == NULL || sodium_base642bin(p, n + 1, s, n, NULL, len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* Key bytes for a raw AES key named in <set>/keys.json. */
static uint8_t *
load_key(const char *set, const char *name, size_t *len)
{
    char rel[8192];
    json_t *root, *mat;
    uint8_t *k = NULL;

    snprintf(rel, sizeof(rel), "%s/%s/keys.json", vec_dir, set);
    if ((root = json_load_file(rel, 0, NULL)) == NULL) {
        return NULL;
    }
    mat = json_object_get(json_object_get(json_object_get(root, "keys"),
                                          name),
                          "material");
    if (json_is_string(mat)) {
        k = b64_decode(json_string_value(mat), len);
    }
    json_decref(root);
    return k;
}

/* The JSON object {k: v} as an esdk_ec (only the keys listed in only,
 * when only is a JSON array; every key when only is NULL). */
static int
ec_from_json(json_t *obj, json_t *only, struct esdk_ec *ec)
{
    const char *k;
    json_t *v, *it;
    size_t i;
    int r;

    if (only == NULL) {
        json_object_foreach(obj, k, v) {
            if ((r = esdk_ec_add(ec, k, strlen(k), json_string_value(v),
                                 strlen(json_string_value(v)))) != 0) {
                return r;
            }
        }
        return 0;
    }
    json_array_foreach(only, i, it) {
        k = json_string_value(it);
        v = json_object_get(obj, k);
        if (v == NULL || (r = esdk_ec_add(ec, k, strlen(k),
                                          json_string_value(v),
                                          strlen(json_string_value(v)))) !=
                             0) {
            return KC_ECONTEXT;
        }
    }
    return 0;
}

/*
 * A small decrypt-side CMM over the library: parse, build the full
 * context (stored pairs + required pairs), unwrap the first raw-AES EDK
 * that works, decrypt.  Returns the esdk code.
 */
static int
cmm_decrypt(const uint8_t *msg, size_t len, const uint8_t *wkey,
            size_t wkey_len, const char *ns, const char *name,
            json_t *repro, json_t *required, struct kc_buf *pt)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec full, req;
    struct kc_buf full_ser, req_ser;
    uint8_t dk[32];
    size_t i, j;
    int r;

    esdk_limits_default(&lim);
    lim.allow_legacy = true;
    esdk_ec_init(&full);
    esdk_ec_init(&req);
    kc_buf_init(&full_ser, 0);
    kc_buf_init(&req_ser, 0);
    if ((r = esdk_header_parse(msg, len, &lim, &h)) != 0) {
        goto out;
    }
    for (i = 0; i < h->ec.n; i++) {
        if ((r = esdk_ec_add(&full, h->ec.pairs[i].key,
                             h->ec.pairs[i].key_len, h->ec.pairs[i].val,
                             h->ec.pairs[i].val_len)) != 0) {
            goto out;
        }
    }
    if ((r = ec_from_json(repro, required, &req)) != 0) {
        goto out;
    }
    for (j = 0; j < req.n; j++) {
        if ((r = esdk_ec_add(&full, req.pairs[j].key, req.pairs[j].key_len,
                             req.pairs[j].val, req.pairs[j].val_len)) != 0) {
            goto out;
        }
    }
    if ((r = esdk_ec_serialize(&full, &full_ser)) != 0 ||
        (r = esdk_ec_serialize(&req, &req_ser)) != 0) {
        goto out;
    }
    r = KC_ENODATAKEY;
    for (i = 0; i < h->edks.n && r != 0; i++) {
        r = rawaes_unwrap(wkey, wkey_len, ns, name, &h->edks.v[i],
                          full_ser.data, full_ser.len, dk,
                          h->suite->key_len);
    }
    if (r != 0) {
        goto out;
    }
    r = esdk_decrypt_required(h, msg, len, dk, h->suite->key_len,
                              req_ser.data, req_ser.len, &lim, pt);
out:
    sodium_memzero(dk, sizeof(dk));
    esdk_header_free(h);
    esdk_ec_clear(&full);
    esdk_ec_clear(&req);
    kc_buf_clear(&full_ser);
    kc_buf_clear(&req_ser);
    return r;
}

static void
run_manifest_case(json_t *c, struct counts *cnt)
{
    const char *set = json_string_value(json_object_get(c, "set"));
    const char *exp = json_string_value(json_object_get(c, "expected"));
    json_t *req = json_object_get(c, "required_encryption_context_keys");
    json_t *none;
    struct kc_buf pt, pt2;
    uint8_t *msg = NULL, *want = NULL, *key = NULL;
    size_t len = 0, want_len = 0, key_len = 0;
    bool ok;
    int r, r2;

    kc_buf_init(&pt, 0);
    kc_buf_init(&pt2, 0);
    msg = read_file(json_string_value(json_object_get(c, "ciphertext")),
                    &len);
    want = read_file(json_string_value(json_object_get(c, "plaintext")),
                     &want_len);
    key = load_key(set, json_string_value(json_object_get(c, "wrapping_key")),
                   &key_len);
    if (msg == NULL || want == NULL || key == NULL) {
        printf("  %s %s: missing file -> skipped\n", set,
               json_string_value(json_object_get(c, "test")));
        cnt->skipped++;
        goto out;
    }
    r = cmm_decrypt(msg, len, key, key_len,
                    json_string_value(json_object_get(c, "provider_id")),
                    json_string_value(json_object_get(c, "key_name")),
                    json_object_get(c, "reproduced_encryption_context"),
                    json_array_size(req) > 0 ? req : NULL, &pt);
    if (strcmp(exp, "success") == 0) {
        ok = r == 0 && pt.len == want_len &&
             (want_len == 0 || memcmp(pt.data, want, want_len) == 0);
    } else {
        ok = r != 0 && pt.len == 0;
    }
    /* A required-context message must fail cleanly without its pairs. */
    if (ok && json_array_size(req) > 0) {
        none = json_object();
        r2 = cmm_decrypt(msg, len, key, key_len,
                         json_string_value(json_object_get(c, "provider_id")),
                         json_string_value(json_object_get(c, "key_name")),
                         none, NULL, &pt2);
        json_decref(none);
        ok = r2 != 0 && pt2.len == 0;
        printf("  %-18s RECMM without reproduced context: %s (%s)\n", set,
               ok ? "fails cleanly" : "FAILED", kc_errname(r2));
    }
    printf("  %-18s suite %s %-8s %s: %s (%s)\n", set,
           json_string_value(json_object_get(c, "algorithm_suite")),
           json_array_size(req) > 0 ? "RECMM" : "default",
           exp, ok ? "ok" : "FAILED", kc_errname(r));
    if (ok) {
        cnt->passed++;
    } else {
        cnt->failed++;
    }
out:
    kc_buf_clear(&pt);
    kc_buf_clear(&pt2);
    free(msg);
    free(want);
    free(key);
}

static void
run_set(struct counts *cnt)
{
    json_t *cases = json_object_get(results, "cases"), *c;
    size_t i;

    json_array_foreach(cases, i, c) {
        if (strcmp(json_string_value(json_object_get(c, "set")),
                   cnt->name) == 0) {
            run_manifest_case(c, cnt);
        }
    }
    assert_int_equal(cnt->failed, 0);
    assert_true(cnt->passed > 0);
}

static void
test_dafny(void **state)
{
    (void)state;
    run_set(&c_dafny);
}

static void
test_net401(void **state)
{
    (void)state;
    run_set(&c_net401);
}

static void
test_net400_invalid(void **state)
{
    (void)state;
    run_set(&c_net400);
}

/* Concatenate the plaintext frames of a KAT case (UTF-8 text). */
static bool
kat_plaintext(json_t *frames, struct kc_buf *out)
{
    json_t *f;
    size_t i;

    json_array_foreach(frames, i, f) {
        if (!json_is_string(f) ||
            kc_buf_put(out, json_string_value(f),
                       strlen(json_string_value(f))) != 0) {
            return false;
        }
    }
    return true;
}

/* Derivation known answers: commitment and (when given) content key. */
static bool
kat_derivation(json_t *t, const struct esdk_header *h, const uint8_t *dek,
               size_t dek_len)
{
    uint8_t key[32], commit[32];
    uint8_t *want_commit = NULL, *want_cek = NULL;
    json_t *cek = json_object_get(t, "content-encryption-key");
    size_t n = 0;
    bool ok = false;

    if (esdk_derive_keys(h->suite, dek, dek_len, h->message_id,
                         h->message_id_len, key, commit) != 0) {
        goto out;
    }
    want_commit = b64_decode(
        json_string_value(json_object_get(t, "commitment")), &n);
    if (want_commit == NULL || n != 32) {
        goto out;
    }
    /* Failing cases pair a message with the wrong data key: what that
     * key derives must then differ from the stored commitment. */
    if (!json_is_true(json_object_get(t, "status"))) {
        ok = memcmp(commit, h->commitment, 32) != 0;
        goto out;
    }
    if (memcmp(commit, want_commit, 32) != 0 ||
        memcmp(commit, h->commitment, 32) != 0) {
        goto out;
    }
    if (json_is_string(cek)) {
        want_cek = b64_decode(json_string_value(cek), &n);
        if (want_cek == NULL || n != 32 || memcmp(key, want_cek, 32) != 0) {
            goto out;
        }
    }
    ok = true;
out:
    sodium_memzero(key, sizeof(key));
    sodium_memzero(commit, sizeof(commit));
    free(want_commit);
    free(want_cek);
    return ok;
}

static void
run_kat_case(json_t *t, size_t idx, struct counts *cnt)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct esdk_ec want_ec;
    struct kc_buf pt, want;
    uint8_t *msg = NULL, *dek = NULL;
    size_t len = 0, dek_len = 0;
    bool expect_ok = json_is_true(json_object_get(t, "status"));
    bool ok = false, kdf_ok = false;
    int r = KC_EINVAL;

    esdk_limits_default(&lim);
    esdk_ec_init(&want_ec);
    kc_buf_init(&pt, 0);
    kc_buf_init(&want, 0);
    msg = b64_decode(json_string_value(json_object_get(t, "ciphertext")),
                     &len);
    dek = b64_decode(json_string_value(json_object_get(t, "decrypted-dek")),
                     &dek_len);
    if (msg == NULL || dek == NULL ||
        !kat_plaintext(json_object_get(t, "plaintext-frames"), &want) ||
        ec_from_json(json_object_get(t, "encryption-context"), NULL,
                     &want_ec) != 0) {
        goto done;
    }
    if ((r = esdk_header_parse(msg, len, &lim, &h)) != 0) {
        goto done;
    }
    kdf_ok = kat_derivation(t, h, dek, dek_len);
    /* The header's context is exactly the listed one (any order). */
    if (!esdk_ec_contains(&h->ec, &want_ec) ||
        !esdk_ec_contains(&want_ec, &h->ec)) {
        kdf_ok = false;
    }
    r = esdk_decrypt(h, msg, len, dek, dek_len, &lim, &pt);
done:
    if (expect_ok) {
        ok = r == 0 && kdf_ok && pt.len == want.len &&
             (want.len == 0 || memcmp(pt.data, want.data, want.len) == 0);
    } else {
        ok = r == KC_EAUTH && pt.len == 0 && kdf_ok;
    }
    printf("  commitment-v2 #%-2zu %s %s: %s (%s)\n", idx + 1,
           h != NULL ? h->suite->name : "?",
           h != NULL && h->content_type == 1 ? "non-framed" : "framed",
           ok ? "ok" : "FAILED", kc_errname(r));
    if (ok) {
        cnt->passed++;
    } else {
        cnt->failed++;
    }
    esdk_header_free(h);
    esdk_ec_clear(&want_ec);
    kc_buf_clear(&pt);
    kc_buf_clear(&want);
    free(msg);
    free(dek);
}

static void
test_commitment_kat(void **state)
{
    char path[8192];
    json_t *root, *tests, *t;
    size_t i;

    (void)state;
    snprintf(path, sizeof(path),
             "%s/commitment-v2/message-format-v2-vectors.json", vec_dir);
    root = json_load_file(path, 0, NULL);
    assert_non_null(root);
    tests = json_object_get(root, "tests");
    json_array_foreach(tests, i, t) {
        run_kat_case(t, i, &c_kat);
    }
    json_decref(root);
    assert_int_equal(c_kat.failed, 0);
    assert_int_equal(c_kat.passed, 46);
}

static void
print_counts(const struct counts *c)
{
    printf("  %-18s passed %d, failed %d, skipped %d, "
           "expected-unsupported %d\n",
           c->name, c->passed, c->failed, c->skipped, c->unsupported);
}

static int
teardown_all(void **state)
{
    (void)state;
    printf("esdk vectors summary:\n");
    print_counts(&c_dafny);
    print_counts(&c_net401);
    print_counts(&c_net400);
    print_counts(&c_kat);
    printf("esdk vectors total: passed %d, failed %d, skipped %d\n",
           c_dafny.passed + c_net401.passed + c_net400.passed + c_kat.passed,
           c_dafny.failed + c_net401.failed + c_net400.failed + c_kat.failed,
           c_dafny.skipped + c_net401.skipped + c_net400.skipped +
               c_kat.skipped);
    json_decref(results);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dafny),
        cmocka_unit_test(test_net401),
        cmocka_unit_test(test_net400_invalid),
        cmocka_unit_test(test_commitment_kat),
    };
    const char *env = getenv("KC_VECTORS_DIR");
    char path[8192];
    struct stat st;

    if (env == NULL || *env == '\0') {
        printf("KC_VECTORS_DIR not set: skipping the ESDK vectors\n");
        exit(77);
    }
    snprintf(vec_dir, sizeof(vec_dir), "%s/aws-esdk", env);
    snprintf(path, sizeof(path), "%s/expected-results.json", vec_dir);
    if (stat(vec_dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
        stat(path, &st) != 0) {
        printf("no ESDK vectors at %s: skipping\n", vec_dir);
        exit(77);
    }
    if (sodium_init() < 0) {
        return 1;
    }
    if ((results = json_load_file(path, 0, NULL)) == NULL) {
        printf("cannot parse %s\n", path);
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
