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
 *
 * Decrypt takes no KeyId, so the key binding is ours: an EDK must name
 * the configured key (a key_id given as alias or ARN is resolved with
 * one DescribeKey when first needed), and the Decrypt answer's KeyId
 * must be the key the EDK names, else KC_EAUTH and the key is wiped.
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

/* Remember the key id KMS reported for key_id; the latest answer wins
 * for a key named by alias (it may have been pointed elsewhere). */
static void
ali_learn(struct kms_client *k, const char *kid)
{
    if (strlen(kid) >= sizeof(k->resolved) ||
        strcmp(kid, k->resolved) == 0 ||
        (k->resolved[0] != '\0' && !k->by_alias)) {
        return;
    }
    if (k->resolved[0] != '\0') {
        log_info("key %s: KMS key %s is now %s (was %s)", k->p.key->alias,
                 k->p.key->key_id, kid, k->resolved);
    } else if (strcmp(kid, k->p.key->key_id) != 0) {
        log_info("key %s: KMS key %s is %s", k->p.key->alias,
                 k->p.key->key_id, kid);
    }
    kms_copy_str(k->resolved, sizeof(k->resolved), kid);
}

/* DescribeKey: {"KeyMetadata": {"KeyId": ..., "Arn": ..., ...}}. */
static int
ali_parse_describe(struct kms_client *k, struct kms_call *c, json_t *root)
{
    json_t *md = json_object_get(root, "KeyMetadata");
    const char *kid = json_string_value(json_object_get(md, "KeyId"));

    if (kid == NULL || *kid == '\0' || strlen(kid) >= sizeof(k->resolved) ||
        strpbrk(kid, "/:") != NULL) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "DescribeKey answer lacks KeyMetadata.KeyId");
        return KC_EPROVIDER;
    }
    ali_learn(k, kid);
    return 0;
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
    if (c->op == KMS_OP_DESCRIBE) {
        return ali_parse_describe(k, c, root);
    }
    if (c->op != KMS_OP_ENCRYPT &&
        (pt == NULL || kms_b64_decode_exact(pt, c->dk_out, c->dk_len) != 0)) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "%s answer lacks a %zu-byte Plaintext", c->action,
                 c->dk_len);
        goto out;
    }
    if (c->op == KMS_OP_DECRYPT) {
        /* Decrypt takes no KeyId: KMS opens any blob we may use.  The
         * key binding is this check, that the key which opened it is the
         * one the EDK names (which edk_matches tied to key_id). */
        if (c->expect_key != NULL &&
            (kid == NULL || strcmp(kid, c->expect_key) != 0)) {
            kms_copy_str(c->err.code, sizeof(c->err.code), "KeyMismatch");
            snprintf(c->err.message, sizeof(c->err.message),
                     "Decrypt answered for key %.100s, the EDK names %.100s",
                     kid != NULL ? kid : "(none)", c->expect_key);
            r = KC_EAUTH;
            goto out;
        }
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
    ali_learn(k, kid);
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
        /* GenerateDataKey, Encrypt, DescribeKey */
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

const struct kms_backend *
kms_backend_alibaba(void)
{
    return &ali_backend;
}

/* ---- provider entry points --------------------------------------------- */

/*
 * key_id names one key when it is a bare key id (what KMS reports in
 * KeyId, and so in our EDKs); anything else (alias/NAME, an alias or key
 * ARN) is resolved to it with DescribeKey.
 */
static bool
ali_key_id_needs_resolving(const char *key_id)
{
    return strpbrk(key_id, "/:") != NULL;
}

/*
 * Ours when provider id is alibaba-kms and the key id is the configured
 * one or the id KMS reported for it.  With an alias (or ARN) as key_id
 * and that id not known yet (no GenerateDataKey/Encrypt answer and no
 * DescribeKey so far), every alibaba-kms EDK is taken: unwrap resolves
 * the alias first and refuses (KC_EAUTH, no Decrypt sent) an EDK of
 * another key.
 * TODO: the learnt id is refreshed only by later GenerateDataKey/Encrypt
 * answers; an agent that only reads keeps the old key after the alias
 * is pointed elsewhere, until it restarts.
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
    if (k->resolved[0] != '\0' && n == strlen(k->resolved) &&
        memcmp(edk->provider_info, k->resolved, n) == 0) {
        return true;
    }
    if (k->by_alias) {
        /* Unknown yet: decided in ali_unwrap, after DescribeKey. */
        return k->resolved[0] == '\0';
    }
    return n == strlen(p->key->key_id) &&
           memcmp(edk->provider_info, p->key->key_id, n) == 0;
}

/* DescribeKey finished: send the parked Decrypts that are ours. */
static void
ali_resolved(void *arg, int status, const struct provider_error *perr)
{
    struct kms_client *k = arg;

    k->resolving = false;
    if (status == 0 && k->resolved[0] != '\0') {
        kms_call_release(k, k->resolved, 0, NULL);
        return;
    }
    log_warn("key %s: cannot resolve KMS key %s: %s%s%s", k->p.key->alias,
             k->p.key->key_id, kc_errname(status),
             perr != NULL && perr->code[0] ? " " : "",
             perr != NULL ? perr->code : "");
    kms_call_release(k, NULL, status != 0 ? status : KC_EPROVIDER, perr);
}

/* Start DescribeKey for key_id unless one is in the air.  0 or KC_E*. */
static int
ali_resolve(struct kms_client *k)
{
    struct kms_call_args a;
    struct esdk_ec none;
    int r;

    if (k->resolving) {
        return 0;
    }
    esdk_ec_init(&none);
    memset(&a, 0, sizeof(a));
    a.op = KMS_OP_DESCRIBE;
    a.key_id = k->p.key->key_id;
    a.ec = &none;
    memset(&k->resolve_err, 0, sizeof(k->resolve_err));
    r = kms_call_start_ex(k, &a, &k->resolve_err, ali_resolved, k);
    if (r == PROVIDER_PENDING) {
        k->resolving = true;
        return 0;
    }
    return r;
}

static int
ali_unwrap(struct provider *p, const struct esdk_edk *edk,
           const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len,
           uint8_t *dk_out, size_t dk_len, struct provider_error *perr,
           provider_done_fn done, void *arg)
{
    struct kms_client *k = (struct kms_client *)p;
    struct kms_call_args a;
    /* The blob and the key id are text; the call keeps C strings. */
    struct kc_buf b, kid;
    int r;

    if (edk->ciphertext_len == 0 ||
        memchr(edk->ciphertext, 0, edk->ciphertext_len) != NULL ||
        edk->provider_info_len == 0 ||
        memchr(edk->provider_info, 0, edk->provider_info_len) != NULL) {
        return KC_EFORMAT;
    }
    kc_buf_init(&b, 0);
    kc_buf_init(&kid, 0);
    if ((r = kc_buf_put(&b, edk->ciphertext, edk->ciphertext_len)) != 0 ||
        (r = kc_buf_put_u8(&b, 0)) != 0 ||
        (r = kc_buf_put(&kid, edk->provider_info,
                        edk->provider_info_len)) != 0 ||
        (r = kc_buf_put_u8(&kid, 0)) != 0) {
        goto out;
    }
    memset(&a, 0, sizeof(a));
    a.op = KMS_OP_DECRYPT;
    a.expect_key = (const char *)kid.data;
    a.ec = ec;
    a.blob = b.data;
    a.blob_len = b.len;
    a.dk_out = dk_out;
    a.dk_len = dk_len;
    if (k->by_alias && k->resolved[0] == '\0') {
        /* Which key is the alias?  Park the Decrypt until DescribeKey
         * says; started first so a failure here leaves nothing parked. */
        if ((r = ali_resolve(k)) != 0) {
            if (perr != NULL) {
                *perr = k->resolve_err;
            }
            goto out;
        }
        a.park = true;
    } else if (!ali_edk_matches(p, edk)) {
        r = KC_EAUTH; /* not ours: never ask KMS to open it */
        goto out;
    }
    r = kms_call_start_ex(k, &a, perr, done, arg);
out:
    kc_buf_clear(&b);
    kc_buf_clear(&kid);
    return r;
}

static const struct provider_ops ali_ops = {
    .name = ALI_PROVIDER_ID,
    .generate = kms_provider_generate,
    .wrap = kms_provider_wrap,
    .edk_matches = ali_edk_matches,
    .unwrap = ali_unwrap,
    .free = kms_provider_free,
};

int
alibaba_kms_new(const struct key_config *key, struct key_counters *counters,
                struct event_base *base, struct provider **out, char *err,
                size_t errlen)
{
    struct kms_client *k = NULL;
    char def[160];
    int r;

    snprintf(def, sizeof(def), "https://kms.%s.aliyuncs.com", key->region);
    if ((r = kms_client_new(&ali_ops, &ali_backend, key, counters, base,
                            def, &k, err, errlen)) != 0) {
        return r;
    }
    k->by_alias = ali_key_id_needs_resolving(key->key_id);
    if ((r = kms_creds_load_alibaba(key, &k->creds, err, errlen)) != 0) {
        char why[200];

        kms_copy_str(why, sizeof(why), err);
        snprintf(err, errlen, "[key.%s] alibaba-kms: %s", key->alias, why);
        kms_client_free(k);
        return r;
    }
    log_info("key %s: alibaba-kms key %s%s via %s (signature %s), "
             "credentials from %s", key->alias, key->key_id,
             k->by_alias ? " (resolved with DescribeKey when first needed)"
                         : "",
             k->url, key->signature, k->creds.source);
    *out = &k->p;
    return 0;
}
