/*
 * kms_util.c - encoding, hashing and HMAC helpers for the KMS signers.
 */
#include "kms_util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

static bool
is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
           c == '~';
}

int
kms_pct_encode(const char *s, size_t len, bool keep_slash, struct kc_buf *out)
{
    static const char hexu[] = "0123456789ABCDEF";
    size_t i;
    int r;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[3];

        if (is_unreserved(c) || (keep_slash && c == '/')) {
            r = kc_buf_put_u8(out, c);
        } else {
            esc[0] = '%';
            esc[1] = hexu[c >> 4];
            esc[2] = hexu[c & 15];
            r = kc_buf_put(out, esc, 3);
        }
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
kms_pct_decode(const char *s, size_t len, struct kc_buf *out)
{
    size_t i;
    int r, hi, lo;

    for (i = 0; i < len; i++) {
        if (s[i] != '%') {
            r = kc_buf_put_u8(out, (uint8_t)s[i]);
        } else {
            if (i + 2 >= len || (hi = hexval(s[i + 1])) < 0 ||
                (lo = hexval(s[i + 2])) < 0) {
                return KC_EINVAL;
            }
            r = kc_buf_put_u8(out, (uint8_t)(hi << 4 | lo));
            i += 2;
        }
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

void
kms_hex(const uint8_t *p, size_t n, char *out)
{
    static const char hexl[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hexl[p[i] >> 4];
        out[2 * i + 1] = hexl[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void
kms_sha256(const void *p, size_t n, uint8_t out[KMS_SHA256_LEN])
{
    unsigned int len = KMS_SHA256_LEN;

    if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1) {
        /* Only fails when OpenSSL is broken; never hand out junk. */
        memset(out, 0, KMS_SHA256_LEN);
    }
}

void
kms_sha256_hex(const void *p, size_t n, char out[2 * KMS_SHA256_LEN + 1])
{
    uint8_t d[KMS_SHA256_LEN];

    kms_sha256(p, n, d);
    kms_hex(d, sizeof(d), out);
}

int
kms_hmac(bool sha1, const void *key, size_t key_len, const void *msg,
         size_t msg_len, uint8_t *out)
{
    unsigned int len = 0;

    if (HMAC(sha1 ? EVP_sha1() : EVP_sha256(), key, (int)key_len, msg,
             msg_len, out, &len) == NULL) {
        return KC_EINVAL;
    }
    return 0;
}

int
kms_buf_puts(struct kc_buf *b, const char *s)
{
    return kc_buf_put(b, s, strlen(s));
}

int
kms_buf_cstr(struct kc_buf *b)
{
    int r;

    if ((r = kc_buf_put_u8(b, 0)) != 0) {
        return r;
    }
    b->len--;
    return 0;
}
