/*
 * acs_sign.c - Alibaba Cloud V3 (ACS3-HMAC-SHA256) and RPC v1
 * (HMAC-SHA1) request signatures.
 */
#include "acs_sign.h"

#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* An encoded "name=value" pair and where its name ends, for sorting. */
struct enc_param {
    struct kc_buf text;
    size_t name_len;
};

static int
enc_param_cmp(const void *a, const void *b)
{
    const struct enc_param *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->text.data, y->text.data, n);

    if (c == 0 && x->name_len != y->name_len) {
        c = x->name_len < y->name_len ? -1 : 1;
    }
    return c;
}

int
acs_canonical_query(const struct kms_kv *params, size_t n, struct kc_buf *out)
{
    struct enc_param e[ACS_MAX_PARAMS];
    size_t i, k = 0;
    int r = 0;

    if (n > ACS_MAX_PARAMS) {
        return KC_EINVAL;
    }
    for (k = 0; k < n; k++) {
        const char *v = params[k].value != NULL ? params[k].value : "";

        kc_buf_init(&e[k].text, 0);
        if ((r = kms_pct_encode(params[k].name, strlen(params[k].name),
                                false, &e[k].text)) != 0) {
            k++;
            goto out;
        }
        e[k].name_len = e[k].text.len;
        if ((r = kc_buf_put_u8(&e[k].text, '=')) != 0 ||
            (r = kms_pct_encode(v, strlen(v), false, &e[k].text)) != 0) {
            k++;
            goto out;
        }
    }
    qsort(e, n, sizeof(e[0]), enc_param_cmp);
    for (i = 0; i < n; i++) {
        if ((i > 0 && (r = kc_buf_put_u8(out, '&')) != 0) ||
            (r = kc_buf_put(out, e[i].text.data, e[i].text.len)) != 0) {
            goto out;
        }
    }
out:
    for (i = 0; i < k; i++) {
        kc_buf_clear(&e[i].text);
    }
    return r;
}

int
acs_v1_signature(const char *method, const struct kms_kv *params, size_t n,
                 const char *secret, struct kc_buf *sts, char sig[29])
{
    struct kc_buf cq, s, key;
    uint8_t mac[KMS_SHA1_LEN];
    int r;

    kc_buf_init(&cq, 0);
    kc_buf_init(&s, 0);
    kc_buf_init(&key, 0);
    if ((r = acs_canonical_query(params, n, &cq)) != 0 ||
        (r = kms_buf_puts(&s, method)) != 0 ||
        (r = kms_buf_puts(&s, "&%2F&")) != 0 ||
        (r = kms_pct_encode((const char *)cq.data, cq.len, false, &s)) != 0) {
        goto out;
    }
    if ((r = kms_buf_puts(&key, secret)) != 0 ||
        (r = kc_buf_put_u8(&key, '&')) != 0 ||
        (r = kms_hmac(true, key.data, key.len, s.data, s.len, mac)) != 0) {
        goto out;
    }
    sodium_bin2base64(sig, 29, mac, sizeof(mac),
                      sodium_base64_VARIANT_ORIGINAL);
    if (sts != NULL) {
        r = kc_buf_put(sts, s.data, s.len);
    }
out:
    kc_buf_clear(&cq);
    kc_buf_clear(&s);
    kc_buf_clear(&key);
    kc_wipe(mac, sizeof(mac));
    return r;
}

/* A canonical header: lowercase name and its values. */
struct acs_hdr {
    char name[64];
    const char *values[ACS_MAX_HEADERS];
    size_t nvalues;
};

static int
hdr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct acs_hdr *)a)->name,
                  ((const struct acs_hdr *)b)->name);
}

static int
str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Group headers by lowercase name, sort groups and their values. */
static int
group_headers(const struct acs_v3_input *in, struct acs_hdr *h, size_t *n)
{
    size_t i, j, k = 0, nl;

    if (in->nheaders > ACS_MAX_HEADERS) {
        return KC_EINVAL;
    }
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
            h[k].nvalues = 0;
            k++;
        }
        h[j].values[h[j].nvalues++] = in->headers[i].value;
    }
    for (j = 0; j < k; j++) {
        qsort(h[j].values, h[j].nvalues, sizeof(h[j].values[0]), str_cmp);
    }
    qsort(h, k, sizeof(*h), hdr_cmp);
    *n = k;
    return 0;
}

/* Append v with leading and trailing blanks removed. */
static int
put_trim(struct kc_buf *b, const char *v)
{
    size_t len;

    while (*v == ' ' || *v == '\t') {
        v++;
    }
    len = strlen(v);
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }
    return kc_buf_put(b, v, len);
}

static int
v3_creq(const struct acs_v3_input *in, struct kc_buf *creq, struct kc_buf *sh)
{
    struct acs_hdr h[ACS_MAX_HEADERS];
    size_t n = 0, i, j;
    int r;

    if ((r = group_headers(in, h, &n)) != 0) {
        return r;
    }
    if ((r = kms_buf_puts(creq, in->method)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = kms_pct_encode(in->path, strlen(in->path), true, creq)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = acs_canonical_query(in->params, in->nparams, creq)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0) {
        return r;
    }
    for (i = 0; i < n; i++) {
        if ((r = kms_buf_puts(creq, h[i].name)) != 0 ||
            (r = kc_buf_put_u8(creq, ':')) != 0) {
            return r;
        }
        for (j = 0; j < h[i].nvalues; j++) {
            if ((j > 0 && (r = kc_buf_put_u8(creq, ',')) != 0) ||
                (r = put_trim(creq, h[i].values[j])) != 0) {
                return r;
            }
        }
        if ((r = kc_buf_put_u8(creq, '\n')) != 0 ||
            (i > 0 && (r = kc_buf_put_u8(sh, ';')) != 0) ||
            (r = kms_buf_puts(sh, h[i].name)) != 0) {
            return r;
        }
    }
    if ((r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = kc_buf_put(creq, sh->data, sh->len)) != 0 ||
        (r = kc_buf_put_u8(creq, '\n')) != 0 ||
        (r = kms_buf_puts(creq, in->payload_hash)) != 0) {
        return r;
    }
    return 0;
}

int
acs_v3_sign(const struct acs_v3_input *in, struct kc_buf *creq, char sig[65],
            struct kc_buf *authz)
{
    struct kc_buf cr, sh, sts;
    char crhash[2 * KMS_SHA256_LEN + 1];
    uint8_t mac[KMS_SHA256_LEN];
    int r;

    kc_buf_init(&cr, 0);
    kc_buf_init(&sh, 0);
    kc_buf_init(&sts, 0);
    if ((r = v3_creq(in, &cr, &sh)) != 0) {
        goto out;
    }
    kms_sha256_hex(cr.data, cr.len, crhash);
    if ((r = kms_buf_puts(&sts, "ACS3-HMAC-SHA256\n")) != 0 ||
        (r = kms_buf_puts(&sts, crhash)) != 0 ||
        (r = kms_hmac(false, in->secret, strlen(in->secret), sts.data,
                      sts.len, mac)) != 0) {
        goto out;
    }
    kms_hex(mac, sizeof(mac), sig);
    if ((r = kms_buf_puts(authz, "ACS3-HMAC-SHA256 Credential=")) != 0 ||
        (r = kms_buf_puts(authz, in->access_key)) != 0 ||
        (r = kms_buf_puts(authz, ",SignedHeaders=")) != 0 ||
        (r = kc_buf_put(authz, sh.data, sh.len)) != 0 ||
        (r = kms_buf_puts(authz, ",Signature=")) != 0 ||
        (r = kms_buf_puts(authz, sig)) != 0 ||
        (r = kms_buf_cstr(authz)) != 0) {
        goto out;
    }
    if (creq != NULL) {
        r = kc_buf_put(creq, cr.data, cr.len);
    }
out:
    kc_buf_clear(&cr);
    kc_buf_clear(&sh);
    kc_buf_clear(&sts);
    kc_wipe(mac, sizeof(mac));
    return r;
}
