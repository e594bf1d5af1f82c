/*
 * alibaba_kms.c - the alibaba-kms provider: Alibaba Cloud KMS, API
 * version 2016-01-20, as the official SDKs call it: POST / with every
 * parameter in the query string and an empty body, JSON answers, signed
 * with V3 ACS3-HMAC-SHA256 headers (signature = v3, the default) or the
 * RPC v1 HMAC-SHA1 Signature parameter (signature = v1).  Works for the
 * regional public and VPC endpoints and for a KMS instance's endpoint on
 * the shared-gateway API (set endpoint and ca_file).
 *
 * EDKs: provider id "alibaba-kms", provider info = the KeyId KMS
 * reports, ciphertext = the CiphertextBlob string exactly as returned
 * (KMS treats it as opaque text).  EncryptionContext travels as a JSON
 * string with sorted keys, so encrypt and decrypt send identical text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acs_sign.h"
#include "kms.h"
#include "log.h"

#define ALI_PROVIDER_ID "alibaba-kms"
#define ALI_API_VERSION "2016-01-20"

static bool
ali_is_throttle(const char *code)
{
    /* 5xx answers are retried anyway; these codes may come with 4xx.
     * A used nonce is retried too: each attempt is signed afresh. */
    return strncmp(code, "Throttling", 10) == 0 ||
           strcmp(code, "SignatureNonceUsed") == 0 ||
           strcmp(code, "Rejected.Throttling") == 0 ||
           strcmp(code, "ServiceUnavailableTemporary") == 0 ||
           strcmp(code, "SerivceUnavailableTemporary") == 0 ||
           strcmp(code, "InternalFailure") == 0;
}

static bool
ali_is_bad_ciphertext(const char *code)
{
    /* TODO: the exact code real KMS returns for a blob or context that
     * does not decrypt is not documented where we could read it; any
     * code naming InvalidCiphertext is taken to mean it. */
    return strstr(code, "InvalidCiphertext") != NULL;
}

static const char *
get_str2(json_t *root, const char *a, const char *b)
{
    const char *v = json_string_value(json_object_get(root, a));

    return v != NULL ? v : json_string_value(json_object_get(root, b));
}

/* {"RequestId": ..., "HostId": ..., "Code": ..., "Message": ...} */
static void
ali_parse_error(json_t *root, struct provider_error *perr)
{
    const char *rid = get_str2(root, "RequestId", "requestId");

    kms_copy_str(perr->code, sizeof(perr->code),
                 get_str2(root, "Code", "code"));
    kms_copy_str(perr->message, sizeof(perr->message),
                 get_str2(root, "Message", "message"));
    if (rid != NULL) {
        kms_copy_str(perr->request_id, sizeof(perr->request_id), rid);
    }
}

static int
ali_parse_ok(struct kms_client *k, struct kms_call *c, json_t *root)
{
    const char *pt = json_string_value(json_object_get(root, "Plaintext"));
    const char *blob =
        json_string_value(json_object_get(root, "CiphertextBlob"));
    const char *kid = json_string_value(json_object_get(root, "KeyId"));
    const char *rid = json_string_value(json_object_get(root, "RequestId"));
    int r = KC_EPROVIDER;

    if (rid != NULL) {
        kms_copy_str(c->err.request_id, sizeof(c->err.request_id), rid);
    }
    if (c->op != KMS_OP_ENCRYPT &&
        (pt == NULL || kms_b64_decode_exact(pt, c->dk_out, c->dk_len) != 0)) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "%s answer lacks a %zu-byte Plaintext", c->action,
                 c->dk_len);
        goto out;
    }
    if (c->op == KMS_OP_DECRYPT) {
        r = 0;
        goto out;
    }
    if (blob == NULL || *blob == '\0' || kid == NULL || *kid == '\0') {
        snprintf(c->err.message, sizeof(c->err.message),
                 "%s answer lacks CiphertextBlob or KeyId", c->action);
        goto out;
    }
    if ((r = esdk_edk_list_add(c->edks, ALI_PROVIDER_ID,
                               strlen(ALI_PROVIDER_ID), kid, strlen(kid),
                               blob, strlen(blob))) != 0) {
        goto out;
    }
    if (k->resolved[0] == '\0' && strlen(kid) < sizeof(k->resolved)) {
        kms_copy_str(k->resolved, sizeof(k->resolved), kid);
        if (strcmp(kid, k->p.key->key_id) != 0) {
            log_info("key %s: KMS key %s is %s", k->p.key->alias,
                     k->p.key->key_id, kid);
        }
    }
out:
    if (r != 0 && c->op != KMS_OP_ENCRYPT) {
        kc_wipe(c->dk_out, c->dk_len);
    }
    return r;
}

/* The operation's own parameters; strings borrowed from c or ec_json. */
static size_t
business_params(const struct kms_call *c, const char *ec_json,
                struct kms_kv *kv, char *nbytes, size_t nbytes_len)
{
    size_t n = 0;

    if (c->op == KMS_OP_DECRYPT) {
        kv[n++] = (struct kms_kv){"CiphertextBlob",
                                  (const char *)c->blob.data};
    } else {
        kv[n++] = (struct kms_kv){"KeyId", c->key_id};
    }
    if (c->op == KMS_OP_GENERATE) {
        if (c->dk_len == 32) {
            kv[n++] = (struct kms_kv){"KeySpec", "AES_256"};
        } else {
            snprintf(nbytes, nbytes_len, "%zu", c->dk_len);
            kv[n++] = (struct kms_kv){"NumberOfBytes", nbytes};
        }
    }
    if (c->op == KMS_OP_ENCRYPT) {
        kv[n++] = (struct kms_kv){"Plaintext", (const char *)c->pt_b64.data};
    }
    if (ec_json != NULL) {
        kv[n++] = (struct kms_kv){"EncryptionContext", ec_json};
    }
    return n;
}

/* V3: business parameters in the query, x-acs-* headers signed. */
static int
build_v3(struct kms_client *k, const struct kms_call *c, struct kms_kv *kv,
         size_t n, struct kms_wire *w)
{
    struct kms_kv h[9];
    struct acs_v3_input in;
    struct kc_buf authz;
    char date[24], nonce[33], hash[65], sig[65];
    size_t nh = 0, i;
    int r;

    kc_buf_init(&authz, 0);
    kms_utc("%Y-%m-%dT%H:%M:%SZ", date, sizeof(date));
    kms_random_hex(nonce, 16);
    kms_sha256_hex("", 0, hash);
    h[nh++] = (struct kms_kv){"host", k->host};
    h[nh++] = (struct kms_kv){"x-acs-action", c->action};
    h[nh++] = (struct kms_kv){"x-acs-version", ALI_API_VERSION};
    h[nh++] = (struct kms_kv){"x-acs-date", date};
    h[nh++] = (struct kms_kv){"x-acs-signature-nonce", nonce};
    h[nh++] = (struct kms_kv){"x-acs-content-sha256", hash};
    if (k->creds.token != NULL) {
        h[nh++] = (struct kms_kv){"x-acs-accesskey-id", k->creds.access_key};
        h[nh++] = (struct kms_kv){"x-acs-security-token", k->creds.token};
    }
    memset(&in, 0, sizeof(in));
    in.method = "POST";
    in.path = "/";
    in.params = kv;
    in.nparams = n;
    in.headers = h;
    in.nheaders = nh;
    in.payload_hash = hash;
    in.access_key = k->creds.access_key;
    in.secret = k->creds.secret;
    if ((r = acs_v3_sign(&in, NULL, sig, &authz)) != 0 ||
        (r = kms_buf_puts(&w->url, k->url)) != 0 ||
        (r = kc_buf_put_u8(&w->url, '?')) != 0 ||
        (r = acs_canonical_query(kv, n, &w->url)) != 0 ||
        (r = kms_buf_cstr(&w->url)) != 0) {
        goto out;
    }
    for (i = 0; i < nh; i++) {
        if ((r = kms_wire_header(w, h[i].name, h[i].value)) != 0) {
            goto out;
        }
    }
    r = kms_wire_header(w, "Authorization", (const char *)authz.data);
out:
    kc_buf_clear(&authz);
    return r;
}

/* v1: common and business parameters together, plus Signature. */
static int
build_v1(struct kms_client *k, const struct kms_call *c, struct kms_kv *kv,
         size_t n, struct kms_wire *w)
{
    char date[24], nonce[33], sig[29];
    struct kms_kv sp[1];
    int r;

    kms_utc("%Y-%m-%dT%H:%M:%SZ", date, sizeof(date));
    kms_random_hex(nonce, 16);
    kv[n++] = (struct kms_kv){"Action", c->action};
    kv[n++] = (struct kms_kv){"Version", ALI_API_VERSION};
    kv[n++] = (struct kms_kv){"Format", "JSON"};
    kv[n++] = (struct kms_kv){"AccessKeyId", k->creds.access_key};
    kv[n++] = (struct kms_kv){"SignatureMethod", "HMAC-SHA1"};
    kv[n++] = (struct kms_kv){"SignatureVersion", "1.0"};
    kv[n++] = (struct kms_kv){"SignatureNonce", nonce};
    kv[n++] = (struct kms_kv){"Timestamp", date};
    if (k->creds.token != NULL) {
        kv[n++] = (struct kms_kv){"SecurityToken", k->creds.token};
    }
    if ((r = acs_v1_signature("POST", kv, n, k->creds.secret, NULL, sig)) !=
        0) {
        return r;
    }
    sp[0] = (struct kms_kv){"Signature", sig};
    if ((r = kms_buf_puts(&w->url, k->url)) != 0 ||
        (r = kc_buf_put_u8(&w->url, '?')) != 0 ||
        (r = acs_canonical_query(kv, n, &w->url)) != 0 ||
        (r = kc_buf_put_u8(&w->url, '&')) != 0 ||
        (r = acs_canonical_query(sp, 1, &w->url)) != 0 ||
        (r = kms_buf_cstr(&w->url)) != 0) {
        return r;
    }
    return 0;
}

static int
ali_build(struct kms_client *k, const struct kms_call *c, struct kms_wire *w)
{
    struct kms_kv kv[16];
    char nbytes[24];
    char *ec_json = NULL;
    size_t n;
    int r;

    if (json_object_size(c->ec) > 0 && (ec_json = kms_ec_json(c->ec)) == NULL) {
        return KC_ENOMEM;
    }
    if (c->op == KMS_OP_DECRYPT && c->blob.len == 0) {
        r = KC_EFORMAT;
        goto out;
    }
    n = business_params(c, ec_json, kv, nbytes, sizeof(nbytes));
    if (strcmp(k->p.key->signature, "v1") == 0) {
        r = build_v1(k, c, kv, n, w);
    } else {
        r = build_v3(k, c, kv, n, w);
    }
    /* No body: keep curl from adding an unsigned form content type. */
    if (r == 0 && ((r = kms_wire_header(w, "Content-Type", "")) != 0 ||
                   (r = kms_wire_header(w, "Accept", "application/json")) !=
                       0)) {
        goto out;
    }
out:
    kms_json_free(ec_json);
    return r;
}

static const struct kms_backend ali_backend = {
    .name = ALI_PROVIDER_ID,
    .build = ali_build,
    .is_throttle = ali_is_throttle,
    .is_bad_ciphertext = ali_is_bad_ciphertext,
    .parse_error = ali_parse_error,
    .parse_ok = ali_parse_ok,
};

/* ---- provider entry points --------------------------------------------- */

static int
ali_generate(struct provider *p, const struct esdk_ec *ec,
             const uint8_t *ec_ser, size_t ec_len, uint8_t *dk_out,
             size_t dk_len, struct esdk_edk_list *edks,
             struct provider_error *perr, provider_done_fn done, void *arg)
{
    return kms_call_start((struct kms_client *)p, KMS_OP_GENERATE,
                          p->key->key_id, ec, NULL, 0, NULL, dk_out, dk_len,
                          edks, perr, done, arg);
}

static int
ali_wrap(struct provider *p, const struct esdk_ec *ec, const uint8_t *ec_ser,
         size_t ec_len, const uint8_t *dk, size_t dk_len,
         struct esdk_edk_list *edks, struct provider_error *perr,
         provider_done_fn done, void *arg)
{
    return kms_call_start((struct kms_client *)p, KMS_OP_ENCRYPT,
                          p->key->key_id, ec, NULL, 0, dk, NULL, dk_len,
                          edks, perr, done, arg);
}

/*
 * Ours when provider id is alibaba-kms and the key id is the configured
 * one or the id KMS reported for it.
 * TODO: with an alias as key_id, EDKs are recognised only after this
 * agent has generated or wrapped once (DescribeKey at start would fix).
 */
static bool
ali_edk_matches(const struct provider *p, const struct esdk_edk *edk)
{
    const struct kms_client *k = (const struct kms_client *)p;
    size_t n = edk->provider_info_len;

    if (edk->provider_id_len != strlen(ALI_PROVIDER_ID) ||
        memcmp(edk->provider_id, ALI_PROVIDER_ID, edk->provider_id_len) !=
            0) {
        return false;
    }
    return (n == strlen(p->key->key_id) &&
            memcmp(edk->provider_info, p->key->key_id, n) == 0) ||
           (k->resolved[0] != '\0' && n == strlen(k->resolved) &&
            memcmp(edk->provider_info, k->resolved, n) == 0);
}

static int
ali_unwrap(struct provider *p, const struct esdk_edk *edk,
           const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len,
           uint8_t *dk_out, size_t dk_len, struct provider_error *perr,
           provider_done_fn done, void *arg)
{
    /* The blob is text; the call keeps a NUL-terminated copy. */
    struct kc_buf b;
    int r;

    kc_buf_init(&b, 0);
    if (edk->ciphertext_len == 0 ||
        memchr(edk->ciphertext, 0, edk->ciphertext_len) != NULL) {
        return KC_EFORMAT;
    }
    if ((r = kc_buf_put(&b, edk->ciphertext, edk->ciphertext_len)) != 0 ||
        (r = kc_buf_put_u8(&b, 0)) != 0) {
        kc_buf_clear(&b);
        return r;
    }
    r = kms_call_start((struct kms_client *)p, KMS_OP_DECRYPT, NULL, ec,
                       b.data, b.len, NULL, dk_out, dk_len, NULL, perr, done,
                       arg);
    kc_buf_clear(&b);
    return r;
}

static void
ali_free(struct provider *p)
{
    kms_client_free((struct kms_client *)p);
}

static const struct provider_ops ali_ops = {
    .name = ALI_PROVIDER_ID,
    .generate = ali_generate,
    .wrap = ali_wrap,
    .edk_matches = ali_edk_matches,
    .unwrap = ali_unwrap,
    .free = ali_free,
};

int
alibaba_kms_new(const struct key_config *key, struct key_counters *counters,
                struct event_base *base, struct provider **out, char *err,
                size_t errlen)
{
    struct kms_client *k;
    char def[160];
    int r;

    if ((k = calloc(1, sizeof(*k))) == NULL) {
        return KC_ENOMEM;
    }
    k->p.ops = &ali_ops;
    k->p.counters = counters;
    snprintf(def, sizeof(def), "https://kms.%s.aliyuncs.com", key->region);
    if ((r = kms_client_init(k, &ali_backend, key, base, def, err,
                             errlen)) != 0) {
        goto fail;
    }
    if ((r = kms_creds_load_alibaba(key, &k->creds, err, errlen)) != 0) {
        char why[200];

        kms_copy_str(why, sizeof(why), err);
        snprintf(err, errlen, "[key.%s] alibaba-kms: %s", key->alias, why);
        goto fail;
    }
    log_info("key %s: alibaba-kms key %s via %s (signature %s), "
             "credentials from %s", key->alias, key->key_id, k->url,
             key->signature, k->creds.source);
    *out = &k->p;
    return 0;
fail:
    kms_client_free(k);
    return r;
}
