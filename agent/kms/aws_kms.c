/*
 * aws_kms.c - the aws-kms provider: AWS KMS over its JSON protocol
 * (POST /, X-Amz-Target: TrentService.<Op>, application/x-amz-json-1.1),
 * signed with SigV4 for service "kms" in the key's region.
 *
 * EDKs follow the AWS Encryption SDK's KMS keyring, so its readers
 * recognise them: provider id "aws-kms", provider info = the key ARN
 * KMS reports, ciphertext = the raw CiphertextBlob.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "kms.h"
#include "log.h"
#include "sigv4.h"

#define AWS_PROVIDER_ID "aws-kms"

static bool
aws_is_throttle(const char *code)
{
    static const char *const codes[] = {
        "ThrottlingException", "Throttling", "RequestLimitExceeded",
        "TooManyRequestsException", "RequestThrottled",
        "LimitExceededException", "RequestTimeout",
        "RequestTimeoutException", "PriorRequestNotComplete",
    };
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(code, codes[i]) == 0) {
            return true;
        }
    }
    return false;
}

static bool
aws_is_bad_ciphertext(const char *code)
{
    return strcmp(code, "InvalidCiphertextException") == 0 ||
           strcmp(code, "IncorrectKeyException") == 0;
}

/* {"__type": "[ns#]Code", "message"|"Message": "..."} */
static void
aws_parse_error(json_t *root, struct provider_error *perr)
{
    const char *type = json_string_value(json_object_get(root, "__type"));
    const char *msg = json_string_value(json_object_get(root, "message"));
    const char *hash;

    if (msg == NULL) {
        msg = json_string_value(json_object_get(root, "Message"));
    }
    if (type != NULL && (hash = strrchr(type, '#')) != NULL) {
        type = hash + 1;
    }
    kms_copy_str(perr->code, sizeof(perr->code), type);
    kms_copy_str(perr->message, sizeof(perr->message), msg);
}

/*
 * Remember the ARN KMS resolved key_id to, so EDKs naming it match.  For
 * a key named by alias the latest answer wins: the alias may have been
 * pointed at another key since.
 */
static void
learn_arn(struct kms_client *k, const char *arn)
{
    if (strlen(arn) >= sizeof(k->resolved) ||
        strcmp(arn, k->resolved) == 0 ||
        (k->resolved[0] != '\0' && !k->by_alias)) {
        return;
    }
    if (k->resolved[0] != '\0') {
        log_info("key %s: KMS key %s is now %s (was %s)", k->p.key->alias,
                 k->p.key->key_id, arn, k->resolved);
    } else if (strcmp(arn, k->p.key->key_id) != 0) {
        log_info("key %s: KMS key %s is %s", k->p.key->alias,
                 k->p.key->key_id, arn);
    }
    kms_copy_str(k->resolved, sizeof(k->resolved), arn);
}

/*
 * Does a GenerateDataKey/Encrypt answer name the configured key?  A key
 * ARN must match exactly, a bare key id must end the ARN; an alias is
 * resolved by KMS, so any ARN is taken (and learnt).
 */
static bool
answer_is_our_key(const struct kms_client *k, const char *arn)
{
    const char *id = k->p.key->key_id;
    size_t la = strlen(arn), li = strlen(id);

    if (k->by_alias) {
        return true;
    }
    if (strncmp(id, "arn:", 4) == 0) {
        return strcmp(arn, id) == 0;
    }
    return la > li && strcmp(arn + la - li, id) == 0 &&
           arn[la - li - 1] == '/';
}

static int
aws_parse_ok(struct kms_client *k, struct kms_call *c, json_t *root)
{
    const char *pt = json_string_value(json_object_get(root, "Plaintext"));
    const char *blob =
        json_string_value(json_object_get(root, "CiphertextBlob"));
    const char *arn = json_string_value(json_object_get(root, "KeyId"));
    struct kc_buf ct;
    int r = KC_EPROVIDER;

    kc_buf_init(&ct, 0);
    if (c->op != KMS_OP_ENCRYPT &&
        (pt == NULL || kms_b64_decode_exact(pt, c->dk_out, c->dk_len) != 0)) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "%s answer lacks a %zu-byte Plaintext", c->action,
                 c->dk_len);
        goto out;
    }
    if (c->op == KMS_OP_DECRYPT) {
        /* KMS enforced the KeyId we sent; the answer must also name
         * the key the EDK names, or the EDK's label lies. */
        if (c->expect_key != NULL &&
            (arn == NULL || strcmp(arn, c->expect_key) != 0)) {
            kms_copy_str(c->err.code, sizeof(c->err.code), "KeyMismatch");
            snprintf(c->err.message, sizeof(c->err.message),
                     "Decrypt answered for key %.100s, the EDK names %.100s",
                     arn != NULL ? arn : "(none)", c->expect_key);
            r = KC_EAUTH;
            goto out;
        }
        if (k->by_alias && arn != NULL && *arn != '\0') {
            learn_arn(k, arn); /* the KeyId we sent was key_id */
        }
        r = 0;
        goto out;
    }
    if (blob == NULL || arn == NULL || *arn == '\0' ||
        kms_b64_decode(blob, &ct) != 0 || ct.len == 0) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "%s answer lacks CiphertextBlob or KeyId", c->action);
        goto out;
    }
    if (!answer_is_our_key(k, arn)) {
        /* An endpoint answering for another key must not relabel which
         * EDKs this alias accepts. */
        kms_copy_str(c->err.code, sizeof(c->err.code), "KeyMismatch");
        snprintf(c->err.message, sizeof(c->err.message),
                 "%s answered for key %.100s, configured %.100s", c->action,
                 arn, k->p.key->key_id);
        goto out;
    }
    if ((r = esdk_edk_list_add(c->edks, AWS_PROVIDER_ID,
                               strlen(AWS_PROVIDER_ID), arn, strlen(arn),
                               ct.data, ct.len)) != 0) {
        goto out;
    }
    learn_arn(k, arn);
out:
    if (r != 0 && c->op != KMS_OP_ENCRYPT) {
        kc_wipe(c->dk_out, c->dk_len);
    }
    kc_buf_clear(&ct);
    return r;
}

/* The JSON body of c; string freed with kms_json_free. */
static char *
aws_body(const struct kms_call *c)
{
    json_t *o = json_object();
    struct kc_buf b64;
    char *s = NULL;
    bool ok = o != NULL;

    kc_buf_init(&b64, 0);
    if (ok && c->key_id != NULL) {
        ok = json_object_set_new(o, "KeyId", json_string(c->key_id)) == 0;
    }
    if (ok && c->op == KMS_OP_GENERATE) {
        ok = c->dk_len == 32
                 ? json_object_set_new(o, "KeySpec",
                                       json_string("AES_256")) == 0
                 : json_object_set_new(o, "NumberOfBytes",
                                       json_integer((json_int_t)c->dk_len)) ==
                       0;
    }
    if (ok && c->op == KMS_OP_ENCRYPT) {
        ok = json_object_set_new(o, "Plaintext",
                                 json_string((const char *)c->pt_b64.data)) ==
             0;
    }
    if (ok && c->op == KMS_OP_DECRYPT) {
        ok = kms_b64_encode(c->blob.data, c->blob.len, &b64) == 0 &&
             kms_buf_cstr(&b64) == 0 &&
             json_object_set_new(o, "CiphertextBlob",
                                 json_string((const char *)b64.data)) == 0;
    }
    if (ok && json_object_size(c->ec) > 0) {
        ok = json_object_set(o, "EncryptionContext", c->ec) == 0;
    }
    if (ok) {
        s = json_dumps(o, JSON_COMPACT);
    }
    json_decref(o);
    kc_buf_clear(&b64);
    return s;
}

static int
aws_build(struct kms_client *k, const struct kms_call *c, struct kms_wire *w)
{
    struct kms_kv h[5];
    struct sigv4_input in;
    struct kc_buf authz;
    char date[20], target[64];
    char *body = NULL;
    size_t nh = 0, i;
    int r = KC_ENOMEM;

    kc_buf_init(&authz, 0);
    if ((body = aws_body(c)) == NULL) {
        goto out;
    }
    kms_utc("%Y%m%dT%H%M%SZ", date, sizeof(date));
    snprintf(target, sizeof(target), "TrentService.%s", c->action);
    h[nh++] = (struct kms_kv){"Content-Type", "application/x-amz-json-1.1"};
    h[nh++] = (struct kms_kv){"Host", k->host};
    h[nh++] = (struct kms_kv){"X-Amz-Date", date};
    h[nh++] = (struct kms_kv){"X-Amz-Target", target};
    if (k->creds.token != NULL) {
        h[nh++] = (struct kms_kv){"X-Amz-Security-Token", k->creds.token};
    }
    memset(&in, 0, sizeof(in));
    in.method = "POST";
    in.path = "/";
    in.headers = h;
    in.nheaders = nh;
    in.body = (const uint8_t *)body;
    in.body_len = strlen(body);
    in.access_key = k->creds.access_key;
    in.secret = k->creds.secret;
    in.region = k->p.key->region;
    in.service = "kms";
    in.amz_date = date;
    if ((r = sigv4_sign(&in, NULL, &authz)) != 0 ||
        (r = kms_buf_puts(&w->url, k->url)) != 0 ||
        (r = kms_buf_cstr(&w->url)) != 0 ||
        (r = kc_buf_put(&w->body, body, strlen(body))) != 0) {
        goto out;
    }
    for (i = 0; i < nh; i++) {
        if ((r = kms_wire_header(w, h[i].name, h[i].value)) != 0) {
            goto out;
        }
    }
    if ((r = kms_wire_header(w, "Authorization",
                             (const char *)authz.data)) != 0 ||
        (r = kms_wire_header(w, "Accept", "application/json")) != 0) {
        goto out;
    }
out:
    kms_json_free(body);
    kc_buf_clear(&authz);
    return r;
}

static const struct kms_backend aws_backend = {
    .name = AWS_PROVIDER_ID,
    .build = aws_build,
    .is_throttle = aws_is_throttle,
    .is_bad_ciphertext = aws_is_bad_ciphertext,
    .parse_error = aws_parse_error,
    .parse_ok = aws_parse_ok,
};

const struct kms_backend *
kms_backend_aws(void)
{
    return &aws_backend;
}

/* ---- provider entry points --------------------------------------------- */

/* "arn:aws:kms:<region>:<account>:key/<id>" -> "<id>", else NULL. */
static const char *
arn_key_id(const char *arn, size_t len)
{
    const char *p = memchr(arn, '/', len);

    if (len < 12 || memcmp(arn, "arn:", 4) != 0 || p == NULL ||
        p - arn < 4 || memcmp(p - 4, ":key", 4) != 0) {
        return NULL;
    }
    return p + 1;
}

/* The parts of "arn:<partition>:kms:<region>:<account>:<resource>". */
struct kms_arn {
    const char *f[5]; /* partition, service, region, account, resource */
    size_t n[5];
};

enum { ARN_PARTITION, ARN_SERVICE, ARN_REGION, ARN_ACCOUNT, ARN_RESOURCE };

/* Split a KMS ARN (not NUL-terminated); false when s is not one. */
static bool
parse_kms_arn(const char *s, size_t len, struct kms_arn *a)
{
    const char *end = s + len, *q;
    int i;

    if (len < 4 || memcmp(s, "arn:", 4) != 0) {
        return false;
    }
    s += 4;
    for (i = 0; i < 4; i++) {
        if ((q = memchr(s, ':', (size_t)(end - s))) == NULL) {
            return false;
        }
        a->f[i] = s;
        a->n[i] = (size_t)(q - s);
        s = q + 1;
    }
    a->f[ARN_RESOURCE] = s;
    a->n[ARN_RESOURCE] = (size_t)(end - s);
    return a->n[ARN_PARTITION] > 0 && a->n[ARN_SERVICE] == 3 &&
           memcmp(a->f[ARN_SERVICE], "kms", 3) == 0 &&
           a->n[ARN_REGION] > 0 && a->n[ARN_ACCOUNT] > 0 &&
           a->n[ARN_RESOURCE] > 0 &&
           memchr(a->f[ARN_RESOURCE], ':', a->n[ARN_RESOURCE]) == NULL &&
           memchr(a->f[ARN_RESOURCE], '\0', a->n[ARN_RESOURCE]) == NULL;
}

static bool
arn_field_is(const struct kms_arn *a, int i, const char *v, size_t n)
{
    return a->n[i] == n && memcmp(a->f[i], v, n) == 0;
}

/* Resource "<prefix><something>" with nothing after a further '/'. */
static bool
arn_resource_is(const struct kms_arn *a, const char *prefix)
{
    size_t pl = strlen(prefix);

    return a->n[ARN_RESOURCE] > pl &&
           memcmp(a->f[ARN_RESOURCE], prefix, pl) == 0 &&
           (strcmp(prefix, "alias/") == 0 ||
            memchr(a->f[ARN_RESOURCE] + pl, '/',
                   a->n[ARN_RESOURCE] - pl) == NULL);
}

/*
 * key_id names one key when it is a key ARN or a bare key id; anything
 * else ("alias/NAME", an alias ARN) is resolved by KMS at each call.
 */
static bool
key_id_is_alias(const char *key_id)
{
    struct kms_arn a;

    if (parse_kms_arn(key_id, strlen(key_id), &a)) {
        return !arn_resource_is(&a, "key/");
    }
    return strchr(key_id, '/') != NULL || strchr(key_id, ':') != NULL;
}

/*
 * With key_id an alias: could info (an EDK's key ARN) be the key the
 * alias points at?  A key ARN in the configured region and, when the
 * alias is given as an ARN, in its partition, region and account.
 */
static bool
alias_may_cover(const struct provider *p, const char *info, size_t n)
{
    const char *want = p->key->key_id;
    struct kms_arn e, w;

    if (!parse_kms_arn(info, n, &e) || !arn_resource_is(&e, "key/") ||
        !arn_field_is(&e, ARN_REGION, p->key->region,
                      strlen(p->key->region))) {
        return false;
    }
    if (!parse_kms_arn(want, strlen(want), &w)) {
        return true; /* "alias/NAME": this region, any account we reach */
    }
    return arn_field_is(&e, ARN_PARTITION, w.f[ARN_PARTITION],
                        w.n[ARN_PARTITION]) &&
           arn_field_is(&e, ARN_REGION, w.f[ARN_REGION], w.n[ARN_REGION]) &&
           arn_field_is(&e, ARN_ACCOUNT, w.f[ARN_ACCOUNT],
                        w.n[ARN_ACCOUNT]);
}

/*
 * An EDK is ours when it is an aws-kms EDK whose ARN is the configured
 * key ARN, the ARN KMS reported for the configured id, or ends in the
 * configured bare key id.
 *
 * With an alias as key_id (see key_id_is_alias): before KMS has told
 * this agent which key the alias points at, any key ARN the alias could
 * cover (alias_may_cover) is taken, and unwrap sends KeyId = the alias,
 * so KMS itself refuses (IncorrectKeyException -> KC_EAUTH, not retried)
 * a blob made under another key; this is what lets a freshly started
 * agent read what was written before.  Once a GenerateDataKey, Encrypt
 * or Decrypt answer has named the alias's key, only that ARN matches, so
 * EDKs of other keys cost no KMS call.
 * TODO: that learnt ARN is refreshed only by later answers for this
 * alias; an agent that only reads keeps the old key after the alias is
 * pointed elsewhere until it restarts (KMS would refuse the old key's
 * blobs under the alias anyway; the new key's EDKs are not recognised).
 * DescribeKey on a timer would fix it, at the cost of kms:DescribeKey.
 */
static bool
aws_edk_matches(const struct provider *p, const struct esdk_edk *edk)
{
    const struct kms_client *k = (const struct kms_client *)p;
    const char *want = p->key->key_id, *id;
    const char *info = (const char *)edk->provider_info;
    size_t n = edk->provider_info_len;

    if (edk->provider_id_len != strlen(AWS_PROVIDER_ID) ||
        memcmp(edk->provider_id, AWS_PROVIDER_ID, edk->provider_id_len) !=
            0) {
        return false;
    }
    if (k->resolved[0] != '\0' && n == strlen(k->resolved) &&
        memcmp(info, k->resolved, n) == 0) {
        return true;
    }
    if (k->by_alias) {
        return k->resolved[0] == '\0' && alias_may_cover(p, info, n);
    }
    if (n == strlen(want) && memcmp(info, want, n) == 0) {
        return true;
    }
    id = arn_key_id(info, n);
    return id != NULL && (size_t)(info + n - id) == strlen(want) &&
           memcmp(id, want, strlen(want)) == 0;
}

static int
aws_unwrap(struct provider *p, const struct esdk_edk *edk,
           const struct esdk_ec *ec, const uint8_t *ec_ser, size_t ec_len,
           uint8_t *dk_out, size_t dk_len, struct provider_error *perr,
           provider_done_fn done, void *arg)
{
    const struct kms_client *k = (const struct kms_client *)p;
    struct kms_call_args a;
    char arn[2048];

    /* Pin the key: KMS must refuse a blob made under another key.  With
     * an alias, the alias itself is the pin (see aws_edk_matches). */
    if (edk->provider_info_len >= sizeof(arn) ||
        memchr(edk->provider_info, 0, edk->provider_info_len) != NULL) {
        return KC_EFORMAT;
    }
    memcpy(arn, edk->provider_info, edk->provider_info_len);
    arn[edk->provider_info_len] = '\0';
    memset(&a, 0, sizeof(a));
    a.op = KMS_OP_DECRYPT;
    a.key_id = k->by_alias ? p->key->key_id : arn;
    a.expect_key = arn;
    a.ec = ec;
    a.blob = edk->ciphertext;
    a.blob_len = edk->ciphertext_len;
    a.dk_out = dk_out;
    a.dk_len = dk_len;
    return kms_call_start_ex((struct kms_client *)p, &a, perr, done, arg);
}

static const struct provider_ops aws_ops = {
    .name = AWS_PROVIDER_ID,
    .generate = kms_provider_generate,
    .wrap = kms_provider_wrap,
    .edk_matches = aws_edk_matches,
    .unwrap = aws_unwrap,
    .free = kms_provider_free,
};

int
aws_kms_new(const struct key_config *key, struct key_counters *counters,
            struct event_base *base, struct provider **out, char *err,
            size_t errlen)
{
    struct kms_client *k = NULL;
    char def[160];
    int r;

    snprintf(def, sizeof(def), "https://kms.%s.amazonaws.com", key->region);
    if ((r = kms_client_new(&aws_ops, &aws_backend, key, counters, base,
                            def, &k, err, errlen)) != 0) {
        return r;
    }
    k->by_alias = key_id_is_alias(key->key_id);
    if ((r = kms_creds_load_aws(key, &k->creds, err, errlen)) != 0) {
        char why[200];

        kms_copy_str(why, sizeof(why), err);
        snprintf(err, errlen, "[key.%s] aws-kms: %s", key->alias, why);
        kms_client_free(k);
        return r;
    }
    log_info("key %s: aws-kms key %s%s via %s, credentials from %s",
             key->alias, key->key_id,
             k->by_alias ? " (an alias: Decrypt is pinned to it)" : "",
             k->url, k->creds.source);
    *out = &k->p;
    return 0;
}
