/*
 * sigv4.c - AWS Signature Version 4.
 *
 * CanonicalRequest = method \n path \n query \n headers \n signed \n
 * hex(sha256(body)); StringToSign = "AWS4-HMAC-SHA256" \n date \n scope
 * \n hex(sha256(CanonicalRequest)); the key is derived by chaining HMACs
 * over date, region, service and "aws4_request".
 */
#include "sigv4.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One canonical header: lowercase name, normalized value. */
struct chdr {
    char name[64];
    struct kc_buf value;
};

static int
chdr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct chdr *)a)->name,
                  ((const struct chdr *)b)->name);
}

/* Trim, and squeeze runs of spaces into one (SigV4 "trimall"). */
static int
put_trimmed(struct kc_buf *b, const char *v)
{
    bool space = false;
    int r;

    while (*v == ' ' || *v == '\t') {
        v++;
    }
    for (; *v != '\0'; v++) {
        if (*v == ' ' || *v == '\t') {
            space = true;
            continue;
        }
        if (space && (r = kc_buf_put_u8(b, ' ')) != 0) {
            return r;
        }
        space = false;
        if ((r = kc_buf_put_u8(b, (uint8_t)*v)) != 0) {
            return r;
        }
    }
    return 0;
}

/*
 * Merge in's headers by lowercase name (values joined with ',' in the
 * given order) and sort them.  *n receives the count.
 */
static int
canon_headers(const struct sigv4_input *in, struct chdr *h, size_t *n)
{
    size_t i, j, k = 0, nl;
    int r;

    for (i = 0; i < in->nheaders; i++) {
        char lname[64];

        nl = strlen(in->headers[i].name);
        if (nl == 0 || nl >= sizeof(lname)) {
            return KC_EINVAL;
        }
        for (j = 0; j <= nl; j++) {
            lname[j] = (char)tolower((unsigned char)in->headers[i].name[j]);
        }
        for (j = 0; j < k && strcmp(h[j].name, lname) != 0; j++) {
        }
        if (j == k) {
            memcpy(h[k].name, lname, nl + 1);
            kc_buf_init(&h[k].value, 0);
            k++;
        } else if ((r = kc_buf_put_u8(&h[j].value, ',')) != 0) {
            *n = k;
            return r;
        }
        if ((r = put_trimmed(&h[j].value, in->headers[i].value)) != 0) {
            *n = k;
            return r;
        }
    }
    qsort(h, k, sizeof(*h), chdr_cmp);
    *n = k;
    return 0;
}

/* A decoded query parameter, re-encoded for sorting. */
struct qparam {
    struct kc_buf name;
    struct kc_buf value;
};

static int
qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.data, y->name.data, n);

    if (c == 0 && x->name.len != y->name.len) {
        c = x->name.len < y->name.len ? -1 : 1;
    }
    if (c == 0) {
        n = x->value.len < y->value.len ? x->value.len : y->value.len;
        c = n > 0 ? memcmp(x->value.data, y->value.data, n) : 0;
        if (c == 0 && x->value.len != y->value.len) {
            c = x->value.len < y->value.len ? -1 : 1;
        }
    }
    return c;
}

/* Decode one "name[=value]" piece and re-encode it strictly. */
static int
qparam_parse(const char *p, size_t len, struct qparam *q)
{
    struct kc_buf tmp;
    const char *eq = memchr(p, '=', len);
    size_t nl = eq != NULL ? (size_t)(eq - p) : len;
    int r;

    kc_buf_init(&tmp, 0);
    kc_buf_init(&q->name, 0);
    kc_buf_init(&q->value, 0);
    if ((r = kms_pct_decode(p, nl, &tmp)) != 0 ||
        (r = kms_pct_encode((const char *)tmp.data, tmp.len, false,
                            &q->name)) != 0) {
        goto out;
    }
    tmp.len = 0;
    if (eq != NULL &&
        ((r = kms_pct_decode(eq + 1, len - nl - 1, &tmp)) != 0 ||
         (r = kms_pct_encode((const char *)tmp.data, tmp.len, false,
                             &q->value)) != 0)) {
        goto out;
    }
    /* Keep data non-NULL for the comparisons. */
    if ((r = kms_buf_cstr(&q->name)) != 0 ||
        (r = kms_buf_cstr(&q->value)) != 0) {
        goto out;
    }
out:
    kc_buf_clear(&tmp);
    return r;
}

static int
canon_query(const char *query, struct kc_buf *out)
{
    struct qparam q[64];
    size_t n = 0, i;
    const char *p = query;
    int r = 0;

    while (p != NULL && *p != '\0') {
        size_t len = strcspn(p, "&");

        if (len > 0) {
            if (n == sizeof(q) / sizeof(q[0])) {
                r = KC_EINVAL;
                goto out;
            }
            if ((r = qparam_parse(p, len, &q[n++])) != 0) {
                goto out;
            }
        }
        p += len;
        if (*p == '&') {
            p++;
        }
    }
    qsort(q, n, sizeof(q[0]), qparam_cmp);
    for (i = 0; i < n; i++) {
        if ((i > 0 && (r = kc_buf_put_u8(out, '&')) != 0) ||
            (r = kc_buf_put(out, q[i].name.data, q[i].name.len)) != 0 ||
            (r = kc_buf_put_u8(out, '=')) != 0 ||
            (r = kc_buf_put(out, q[i].value.data, q[i].value.len)) != 0) {
            goto out;
        }
    }
out:
    for (i = 0; i < n; i++) {
        kc_buf_clear(&q[i].name);
        kc_buf_clear(&q[i].value);
    }
    return r;
}

/* The canonical request into creq, the signed-header list into sh. */
static int
build_creq(const struct sigv4_input *in, struct kc_buf *creq,
           struct kc_buf *sh)
{
    struct chdr h[SIGV4_MAX_HEADERS];
    char bodyhash[2 * KMS_SHA256_LEN + 1];
    size_t n = 0, i;
    int r;

    if (in->nheaders > SIGV4_MAX_HEADERS) {
        return KC_EINVAL;
    }
    if ((r = kms_buf_puts(creq, in->method)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = kms_pct_encode(in->path, strlen(in->path), true, creq)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = canon_query(in->query, creq)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0) {
        return r;
    }
    if ((r = canon_headers(in, h, &n)) != 0) {
        goto out;
    }
    for (i = 0; i < n; i++) {
        if ((r = kms_buf_puts(creq, h[i].name)) != 0 ||
            (r = kc_buf_put_u8(creq, ':')) != 0 ||
            (r = kc_buf_put(creq, h[i].value.data, h[i].value.len)) != 0 ||
            (r = kc_buf_put_u8(creq, '\n')) != 0 ||
            (i > 0 && (r = kc_buf_put_u8(sh, ';')) != 0) ||
            (r = kms_buf_puts(sh, h[i].name)) != 0) {
            goto out;
        }
    }
    kms_sha256_hex(in->body_len > 0 ? in->body : (const uint8_t *)"",
                   in->body_len, bodyhash);
    if ((r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = kc_buf_put(creq, sh->data, sh->len)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = kms_buf_puts(creq, bodyhash)) != 0) {
        goto out;
    }
out:
    for (i = 0; i < n; i++) {
        kc_buf_clear(&h[i].value);
    }
    return r;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), svc),
 * "aws4_request"), then the signature over sts. */
static int
compute_signature(const struct sigv4_input *in, const struct kc_buf *sts,
                  char sig[65])
{
    uint8_t k[KMS_SHA256_LEN], k2[KMS_SHA256_LEN];
    struct kc_buf seed;
    int r;

    kc_buf_init(&seed, 0);
    if ((r = kms_buf_puts(&seed, "AWS4")) != 0 ||
        (r = kms_buf_puts(&seed, in->secret)) != 0 ||
        (r = kms_hmac(false, seed.data, seed.len, in->amz_date, 8, k)) != 0 ||
        (r = kms_hmac(false, k, sizeof(k), in->region, strlen(in->region),
                      k2)) != 0 ||
        (r = kms_hmac(false, k2, sizeof(k2), in->service,
                      strlen(in->service), k)) != 0 ||
        (r = kms_hmac(false, k, sizeof(k), "aws4_request", 12, k2)) != 0 ||
        (r = kms_hmac(false, k2, sizeof(k2), sts->data, sts->len, k)) != 0) {
        goto out;
    }
    kms_hex(k, sizeof(k), sig);
out:
    kc_buf_clear(&seed);
    kc_wipe(k, sizeof(k));
    kc_wipe(k2, sizeof(k2));
    return r;
}

int
sigv4_sign(const struct sigv4_input *in, struct sigv4_output *out,
           struct kc_buf *authz)
{
    struct kc_buf creq, sts, sh, scope;
    char crhash[2 * KMS_SHA256_LEN + 1], sig[65];
    int r;

    kc_buf_init(&creq, 0);
    kc_buf_init(&sts, 0);
    kc_buf_init(&sh, 0);
    kc_buf_init(&scope, 0);
    if (strlen(in->amz_date) != 16 || in->amz_date[8] != 'T') {
        r = KC_EINVAL;
        goto out;
    }
    if ((r = build_creq(in, &creq, &sh)) != 0) {
        goto out;
    }
    kms_sha256_hex(creq.data, creq.len, crhash);
    if ((r = kc_buf_put(&scope, in->amz_date, 8)) != 0 ||
        (r = kc_buf_put_u8(&scope, '/')) != 0 ||
        (r = kms_buf_puts(&scope, in->region)) != 0 ||
        (r = kc_buf_put_u8(&scope, '/')) != 0 ||
        (r = kms_buf_puts(&scope, in->service)) != 0 ||
        (r = kms_buf_puts(&scope, "/aws4_request")) != 0) {
        goto out;
    }
    if ((r = kms_buf_puts(&sts, "AWS4-HMAC-SHA256\n")) != 0 ||
        (r = kms_buf_puts(&sts, in->amz_date)) != 0 ||
        (r = kc_buf_put_u8(&sts, '\n')) != 0 ||
        (r = kc_buf_put(&sts, scope.data, scope.len)) != 0 ||
        (r = kc_buf_put_u8(&sts, '\n')) != 0 ||
        (r = kms_buf_puts(&sts, crhash)) != 0) {
        goto out;
    }
    if ((r = compute_signature(in, &sts, sig)) != 0) {
        goto out;
    }
    if ((r = kms_buf_puts(authz, "AWS4-HMAC-SHA256 Credential=")) != 0 ||
        (r = kms_buf_puts(authz, in->access_key)) != 0 ||
        (r = kc_buf_put_u8(authz, '/')) != 0 ||
        (r = kc_buf_put(authz, scope.data, scope.len)) != 0 ||
        (r = kms_buf_puts(authz, ", SignedHeaders=")) != 0 ||
        (r = kc_buf_put(authz, sh.data, sh.len)) != 0 ||
        (r = kms_buf_puts(authz, ", Signature=")) != 0 ||
        (r = kms_buf_puts(authz, sig)) != 0 ||
        (r = kms_buf_cstr(authz)) != 0) {
        goto out;
    }
    if (out != NULL) {
        memcpy(out->signature, sig, sizeof(sig));
        if ((r = kc_buf_put(&out->creq, creq.data, creq.len)) != 0 ||
            (r = kc_buf_put(&out->sts, sts.data, sts.len)) != 0) {
            goto out;
        }
    }
out:
    kc_buf_clear(&creq);
    kc_buf_clear(&sts);
    kc_buf_clear(&sh);
    kc_buf_clear(&scope);
    return r;
}
