/*
 * sigv4_test.c - AWS SigV4 against the published test suite cases in
 * $KC_VECTORS_DIR/sigv4 (never copied into the repo): canonical request,
 * string to sign, signature and Authorization header must match byte for
 * byte.  Without the vectors the test exits 77 (meson: SKIP), so a
 * missing directory can never look like a pass.
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

#include "sigv4.h"

static char vdir[4096];

static char *
slurp(const char *dir, const char *name, size_t *len)
{
    char path[4300];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/%s/%s", vdir, dir, name);
    if ((f = fopen(path, "rb")) == NULL) {
        fail_msg("cannot open %s", path);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len != NULL) {
        *len = (size_t)n;
    }
    return buf;
}

/* The request, parsed from request.txt: method, target, headers, body. */
struct vreq {
    char *text;
    char *method;
    char *path;
    char *query;
    struct kms_kv hdr[SIGV4_MAX_HEADERS];
    size_t nhdr;
    const char *body;
    size_t body_len;
};

static void
parse_request(const char *dir, struct vreq *q)
{
    char *p, *line, *sp, *end;

    memset(q, 0, sizeof(*q));
    q->text = slurp(dir, "request.txt", NULL);
    p = q->text;
    line = strsep(&p, "\n");
    q->method = strsep(&line, " ");
    sp = strsep(&line, " ");
    q->path = strsep(&sp, "?");
    q->query = sp;
    while (p != NULL && *p != '\0' && *p != '\n') {
        line = strsep(&p, "\n");
        end = strchr(line, ':');
        assert_non_null(end);
        *end = '\0';
        q->hdr[q->nhdr].name = line;
        q->hdr[q->nhdr].value = end + 1;
        q->nhdr++;
    }
    if (p != NULL && *p == '\n') {
        p++;
        q->body = p;
        q->body_len = strlen(p);
    }
}

static void
run_case(const char *dir)
{
    struct vreq q;
    struct sigv4_input in;
    struct sigv4_output out;
    struct kc_buf authz;
    json_t *ctx, *cred;
    json_error_t jerr;
    char path[4300], date[17], bodyhash[65];
    const char *ts, *token;
    char *want_creq, *want_sts, *want_sig, *signed_req, *auth_line;

    parse_request(dir, &q);
    snprintf(path, sizeof(path), "%s/%s/context.json", vdir, dir);
    ctx = json_load_file(path, 0, &jerr);
    assert_non_null(ctx);
    cred = json_object_get(ctx, "credentials");
    ts = json_string_value(json_object_get(ctx, "timestamp"));
    /* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
    snprintf(date, sizeof(date), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5,
             ts + 8, ts + 11, ts + 14, ts + 17);
    q.hdr[q.nhdr].name = "X-Amz-Date";
    q.hdr[q.nhdr++].value = date;
    token = json_string_value(json_object_get(cred, "token"));
    if (token != NULL) {
        q.hdr[q.nhdr].name = "X-Amz-Security-Token";
        q.hdr[q.nhdr++].value = token;
    }
    kms_sha256_hex(q.body != NULL ? q.body : "", q.body_len, bodyhash);
    if (json_is_true(json_object_get(ctx, "sign_body"))) {
        q.hdr[q.nhdr].name = "X-Amz-Content-Sha256";
        q.hdr[q.nhdr++].value = bodyhash;
    }
    memset(&in, 0, sizeof(in));
    in.method = q.method;
    in.path = q.path;
    in.query = q.query;
    in.headers = q.hdr;
    in.nheaders = q.nhdr;
    in.body = (const uint8_t *)q.body;
    in.body_len = q.body_len;
    in.access_key =
        json_string_value(json_object_get(cred, "access_key_id"));
    in.secret = json_string_value(json_object_get(cred, "secret_access_key"));
    in.region = json_string_value(json_object_get(ctx, "region"));
    in.service = json_string_value(json_object_get(ctx, "service"));
    in.amz_date = date;

    kc_buf_init(&out.creq, 0);
    kc_buf_init(&out.sts, 0);
    kc_buf_init(&authz, 0);
    assert_int_equal(sigv4_sign(&in, &out, &authz), 0);

    want_creq = slurp(dir, "header-canonical-request.txt", NULL);
    want_sts = slurp(dir, "header-string-to-sign.txt", NULL);
    want_sig = slurp(dir, "header-signature.txt", NULL);
    assert_int_equal(out.creq.len, strlen(want_creq));
    assert_memory_equal(out.creq.data, want_creq, out.creq.len);
    assert_int_equal(out.sts.len, strlen(want_sts));
    assert_memory_equal(out.sts.data, want_sts, out.sts.len);
    assert_string_equal(out.signature, want_sig);

    signed_req = slurp(dir, "header-signed-request.txt", NULL);
    auth_line = strstr(signed_req, "Authorization:");
    assert_non_null(auth_line);
    auth_line += strlen("Authorization:");
    auth_line[strcspn(auth_line, "\n")] = '\0';
    assert_string_equal((const char *)authz.data, auth_line);
    printf("  %s: %s\n", dir, out.signature);

    /* Any change to a signed input changes the signature. */
    kc_buf_clear(&authz);
    kc_buf_clear(&out.creq);
    kc_buf_clear(&out.sts);
    in.region = "us-east-2";
    assert_int_equal(sigv4_sign(&in, &out, &authz), 0);
    assert_string_not_equal(out.signature, want_sig);

    kc_buf_clear(&authz);
    kc_buf_clear(&out.creq);
    kc_buf_clear(&out.sts);
    free(want_creq);
    free(want_sts);
    free(want_sig);
    free(signed_req);
    free(q.text);
    json_decref(ctx);
}

static void
test_get_vanilla(void **state)
{
    run_case("get-vanilla");
}

static void
test_post_vanilla(void **state)
{
    run_case("post-vanilla");
}

static void
test_post_form(void **state)
{
    run_case("post-x-www-form-urlencoded");
}

static void
test_header_trim(void **state)
{
    run_case("get-header-value-trim");
}

static void
test_query_order(void **state)
{
    run_case("get-vanilla-query-order-key-case");
}

static void
test_session_token(void **state)
{
    run_case("get-vanilla-with-session-token");
}

/* Refused inputs: a malformed date, too many headers. */
static void
test_bad_inputs(void **state)
{
    struct kms_kv h[SIGV4_MAX_HEADERS + 1];
    struct sigv4_input in;
    struct kc_buf authz;
    size_t i;

    for (i = 0; i < SIGV4_MAX_HEADERS + 1; i++) {
        h[i].name = "x-a";
        h[i].value = "b";
    }
    memset(&in, 0, sizeof(in));
    in.method = "POST";
    in.path = "/";
    in.headers = h;
    in.nheaders = 1;
    in.access_key = "AK";
    in.secret = "S";
    in.region = "r";
    in.service = "kms";
    in.amz_date = "2015-08-30";
    kc_buf_init(&authz, 0);
    assert_int_equal(sigv4_sign(&in, NULL, &authz), KC_EINVAL);
    in.amz_date = "20150830T123600Z";
    in.nheaders = SIGV4_MAX_HEADERS + 1;
    assert_int_equal(sigv4_sign(&in, NULL, &authz), KC_EINVAL);
    in.nheaders = 1;
    in.query = "a=%zz";
    assert_int_equal(sigv4_sign(&in, NULL, &authz), KC_EINVAL);
    kc_buf_clear(&authz);
}

int
main(void)
{
    const char *env = getenv("KC_VECTORS_DIR");
    struct stat st;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_vanilla),
        cmocka_unit_test(test_post_vanilla),
        cmocka_unit_test(test_post_form),
        cmocka_unit_test(test_header_trim),
        cmocka_unit_test(test_query_order),
        cmocka_unit_test(test_session_token),
        cmocka_unit_test(test_bad_inputs),
    };

    if (env == NULL) {
        printf("KC_VECTORS_DIR not set: skipping the SigV4 vectors\n");
        return 77;
    }
    snprintf(vdir, sizeof(vdir), "%s/sigv4", env);
    if (stat(vdir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("%s missing: skipping the SigV4 vectors\n", vdir);
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
