/*
 * acs_sign_test.c - Alibaba Cloud request signatures (RPC v1 HMAC-SHA1
 * and V3 ACS3-HMAC-SHA256) against the known answers in
 * $KC_VECTORS_DIR/alibaba-signature (never copied into the repo).
 * Without the vectors the test exits 77 (meson: SKIP).
 */
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

#include "acs_sign.h"

static char vdir[4096];

static json_t *
load(const char *name)
{
    char path[4300];
    json_error_t jerr;
    json_t *j;

    snprintf(path, sizeof(path), "%s/%s", vdir, name);
    j = json_load_file(path, 0, &jerr);
    if (j == NULL) {
        fail_msg("%s: %s", path, jerr.text);
    }
    return j;
}

/* Object members as kv pairs (borrowed from obj). */
static size_t
object_kv(json_t *obj, struct kms_kv *kv, size_t max)
{
    const char *k;
    json_t *v;
    size_t n = 0;

    json_object_foreach(obj, k, v) {
        assert_true(n < max);
        kv[n].name = k;
        kv[n].value = json_string_value(v);
        n++;
    }
    return n;
}

static void
check_v1(const char *file)
{
    json_t *j = load(file);
    struct kms_kv kv[ACS_MAX_PARAMS];
    size_t n = object_kv(json_object_get(j, "parameters"), kv, ACS_MAX_PARAMS);
    const char *want_sts = json_string_value(
        json_object_get(j, "expected_string_to_sign"));
    const char *want_cq = json_string_value(
        json_object_get(j, "expected_canonicalized_query"));
    struct kc_buf sts, cq;
    char sig[29];

    kc_buf_init(&sts, 0);
    kc_buf_init(&cq, 0);
    assert_int_equal(acs_v1_signature(
                         json_string_value(json_object_get(j, "http_method")),
                         kv, n,
                         json_string_value(
                             json_object_get(j, "access_key_secret")),
                         &sts, sig),
                     0);
    assert_string_equal(sig, json_string_value(
                                 json_object_get(j, "expected_signature")));
    if (want_sts != NULL) {
        assert_int_equal(sts.len, strlen(want_sts));
        assert_memory_equal(sts.data, want_sts, sts.len);
    }
    if (want_cq != NULL) {
        assert_int_equal(acs_canonical_query(kv, n, &cq), 0);
        assert_int_equal(cq.len, strlen(want_cq));
        assert_memory_equal(cq.data, want_cq, cq.len);
    }
    printf("  %s: %s\n", file, sig);
    kc_buf_clear(&sts);
    kc_buf_clear(&cq);
    json_decref(j);
}

static void
test_v1_doc(void **state)
{
    check_v1("rpc-v2-doc-describeregions.json");
}

static void
test_v1_doc_old_timestamp(void **state)
{
    check_v1("rpc-v2-doc-describeregions-old-TimeStamp.json");
}

static void
test_v1_doc_post(void **state)
{
    check_v1("rpc-v2-doc-describeregions-post.json");
}

static void
test_v1_openapi_util(void **state)
{
    check_v1("rpc-v2-openapi-util-test.json");
}

/* Headers as an object {name: value} or a list [[name, value], ...]. */
static size_t
headers_kv(json_t *h, struct kms_kv *kv, size_t max)
{
    size_t i, n;

    if (json_is_object(h)) {
        return object_kv(h, kv, max);
    }
    n = json_array_size(h);
    assert_true(n <= max);
    for (i = 0; i < n; i++) {
        kv[i].name = json_string_value(json_array_get(json_array_get(h, i), 0));
        kv[i].value =
            json_string_value(json_array_get(json_array_get(h, i), 1));
    }
    return n;
}

static void
check_v3(const char *file)
{
    json_t *j = load(file);
    struct kms_kv q[ACS_MAX_PARAMS], h[ACS_MAX_HEADERS];
    struct acs_v3_input in;
    struct kc_buf creq, authz;
    const char *want_creq;
    char sig[65];

    memset(&in, 0, sizeof(in));
    in.method = json_string_value(json_object_get(j, "http_method"));
    in.path = json_string_value(json_object_get(j, "canonical_uri"));
    in.nparams = object_kv(json_object_get(j, "query"), q, ACS_MAX_PARAMS);
    in.params = q;
    in.nheaders = headers_kv(json_object_get(j, "headers"), h,
                             ACS_MAX_HEADERS);
    in.headers = h;
    in.payload_hash = json_string_value(json_object_get(j, "hashed_payload"));
    in.access_key = json_string_value(json_object_get(j, "access_key_id"));
    in.secret = json_string_value(json_object_get(j, "access_key_secret"));
    kc_buf_init(&creq, 0);
    kc_buf_init(&authz, 0);
    assert_int_equal(acs_v3_sign(&in, &creq, sig, &authz), 0);
    want_creq = json_string_value(
        json_object_get(j, "expected_canonical_request"));
    assert_int_equal(creq.len, strlen(want_creq));
    assert_memory_equal(creq.data, want_creq, creq.len);
    assert_string_equal(sig, json_string_value(
                                 json_object_get(j, "expected_signature")));
    assert_string_equal((const char *)authz.data,
                        json_string_value(
                            json_object_get(j, "expected_authorization")));
    printf("  %s: %s\n", file, sig);

    /* A changed parameter value changes the signature. */
    kc_buf_clear(&authz);
    q[0].value = "tampered";
    assert_int_equal(acs_v3_sign(&in, NULL, sig, &authz), 0);
    assert_string_not_equal(sig, json_string_value(
                                     json_object_get(j, "expected_signature")));
    kc_buf_clear(&creq);
    kc_buf_clear(&authz);
    json_decref(j);
}

static void
test_v3_doc(void **state)
{
    check_v3("v3-acs3-hmac-sha256-doc-runinstances.json");
}

static void
test_v3_openapi_util(void **state)
{
    check_v3("v3-acs3-openapi-util-test.json");
}

/* The encoding rules: space %20, '*' %2A, '~' kept, '+' and '/' escaped. */
static void
test_encoding(void **state)
{
    const struct kms_kv kv[] = {
        {"EncryptionContext", "{\"a\":\"b c*~+/=\"}"},
        {"Action", "Decrypt"},
    };
    struct kc_buf b;

    kc_buf_init(&b, 0);
    assert_int_equal(acs_canonical_query(kv, 2, &b), 0);
    assert_int_equal(kms_buf_cstr(&b), 0);
    assert_string_equal((const char *)b.data,
                        "Action=Decrypt&EncryptionContext="
                        "%7B%22a%22%3A%22b%20c%2A~%2B%2F%3D%22%7D");
    kc_buf_clear(&b);
}

int
main(void)
{
    const char *env = getenv("KC_VECTORS_DIR");
    struct stat st;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_doc),
        cmocka_unit_test(test_v1_doc_old_timestamp),
        cmocka_unit_test(test_v1_doc_post),
        cmocka_unit_test(test_v1_openapi_util),
        cmocka_unit_test(test_v3_doc),
        cmocka_unit_test(test_v3_openapi_util),
        cmocka_unit_test(test_encoding),
    };

    if (env == NULL) {
        printf("KC_VECTORS_DIR not set: skipping the Alibaba vectors\n");
        return 77;
    }
    snprintf(vdir, sizeof(vdir), "%s/alibaba-signature", env);
    if (stat(vdir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("%s missing: skipping the Alibaba vectors\n", vdir);
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
