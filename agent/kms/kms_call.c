/*
 * kms_call.c - one KMS operation over HTTP with deadline, retries and
 * backoff; the client object shared by the AWS and Alibaba providers.
 *
 * Retry policy (see kms.h): at most KMS_MAX_ATTEMPTS attempts; retried
 * are connect errors, timeouts, resets and truncated bodies, HTTP 5xx
 * and the backend's throttling codes; never auth, not-found, validation
 * or ciphertext errors, and never a 2xx answer we cannot parse (the KMS
 * did act on it; asking again would not make it parse).  Wait before
 * retry n (n = 1, 2): uniform in [0, min(CAP, BASE * 2^(n-1))] (full
 * jitter), or Retry-After when the server sent one and it is longer.
 * A retry that could not finish before the deadline is not started.
 */
#include "kms.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* ---- small helpers ------------------------------------------------------ */

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
kms_copy_str(char *dst, size_t dstlen, const char *src)
{
    size_t n;

    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    n = strlen(src);
    if (n >= dstlen) {
        n = dstlen - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void
kms_random_hex(char *out, size_t n)
{
    uint8_t b[32];

    if (n > sizeof(b)) {
        n = sizeof(b);
    }
    randombytes_buf(b, n);
    kms_hex(b, n, out);
}

/* fmt is always one of our literals; see kms.h. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
void
kms_utc(const char *fmt, char *out, size_t outlen)
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(out, outlen, fmt, &tm) == 0) {
        out[0] = '\0';
    }
}
#pragma GCC diagnostic pop

int
kms_wire_header(struct kms_wire *w, const char *name, const char *value)
{
    struct kc_buf *b;
    int r;

    if (w->nhdr == KMS_MAX_HEADERS) {
        return KC_EINVAL;
    }
    b = &w->hdr[w->nhdr];
    if ((r = kms_buf_puts(b, name)) != 0 ||
        (r = kms_buf_puts(b, ": ")) != 0 ||
        (r = kms_buf_puts(b, value)) != 0 || (r = kms_buf_cstr(b)) != 0) {
        kc_buf_clear(b);
        return r;
    }
    w->nhdr++;
    return 0;
}

static void
wire_init(struct kms_wire *w)
{
    size_t i;

    kc_buf_init(&w->url, 0);
    kc_buf_init(&w->body, 0);
    for (i = 0; i < KMS_MAX_HEADERS; i++) {
        kc_buf_init(&w->hdr[i], 0);
    }
    w->nhdr = 0;
}

static void
wire_clear(struct kms_wire *w)
{
    size_t i;

    kc_buf_clear(&w->url);
    kc_buf_clear(&w->body);
    for (i = 0; i < KMS_MAX_HEADERS; i++) {
        kc_buf_clear(&w->hdr[i]);
    }
    w->nhdr = 0;
}

/*
 * jansson allocations may hold base64 data keys (KMS answers, Encrypt
 * bodies): every block carries its size and is wiped when freed.
 */
static void *
json_wipe_malloc(size_t n)
{
    size_t *p;

    if (n > SIZE_MAX - sizeof(max_align_t)) {
        return NULL;
    }
    if ((p = malloc(n + sizeof(max_align_t))) == NULL) {
        return NULL;
    }
    *p = n;
    return (char *)p + sizeof(max_align_t);
}

static void
json_wipe_free(void *q)
{
    size_t *p;

    if (q == NULL) {
        return;
    }
    p = (size_t *)(void *)((char *)q - sizeof(max_align_t));
    kc_free_wipe(p, *p + sizeof(max_align_t));
}

void
kms_json_free(void *p)
{
    json_wipe_free(p);
}

char *
kms_ec_json(const json_t *ec)
{
    return json_dumps(ec, JSON_COMPACT | JSON_SORT_KEYS);
}

int
kms_b64_decode(const char *s, struct kc_buf *out)
{
    size_t len = strlen(s), bin_len = 0;
    int r;

    if ((r = kc_buf_reserve(out, len / 4 * 3 + 3)) != 0) {
        return r;
    }
    if (sodium_base642bin(out->data + out->len, out->cap - out->len, s, len,
                          NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        return KC_EPROVIDER;
    }
    out->len += bin_len;
    return 0;
}

int
kms_b64_decode_exact(const char *s, uint8_t *out, size_t len)
{
    struct kc_buf b;
    int r;

    kc_buf_init(&b, 0);
    if ((r = kms_b64_decode(s, &b)) != 0 || b.len != len) {
        r = KC_EPROVIDER;
        sodium_memzero(out, len);
        goto out;
    }
    memcpy(out, b.data, len);
out:
    kc_buf_clear(&b);
    return r;
}

int
kms_b64_encode(const uint8_t *p, size_t n, struct kc_buf *out)
{
    size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    int r;

    if ((r = kc_buf_reserve(out, need)) != 0) {
        return r;
    }
    sodium_bin2base64((char *)out->data + out->len, need, p, n,
                      sodium_base64_VARIANT_ORIGINAL);
    out->len += need - 1;
    return 0;
}

/* ---- the client --------------------------------------------------------- */

static void
json_allocator_once(void)
{
    static bool done;

    if (!done) {
        json_set_alloc_funcs(json_wipe_malloc, json_wipe_free);
        done = true;
    }
}

/* "https://host[:port][/]" -> url "https://host[:port]/", host. */
static int
parse_endpoint(struct kms_client *k, const char *ep, char *err,
               size_t errlen)
{
    const char *h;
    size_t hl;

    if (strncmp(ep, "https://", 8) != 0) {
        snprintf(err, errlen,
                 "[key.%s] endpoint %s: only https:// is allowed",
                 k->p.key->alias, ep);
        return KC_ECONFIG;
    }
    h = ep + 8;
    hl = strcspn(h, "/?#");
    if (hl == 0 || strcspn(h, "@") < hl ||
        (h[hl] != '\0' && strcmp(h + hl, "/") != 0)) {
        snprintf(err, errlen,
                 "[key.%s] endpoint %s: want https://host[:port] with no "
                 "path or user", k->p.key->alias, ep);
        return KC_ECONFIG;
    }
    if ((k->host = strndup(h, hl)) == NULL ||
        (k->url = malloc(8 + hl + 2)) == NULL) {
        return KC_ENOMEM;
    }
    snprintf(k->url, 8 + hl + 2, "https://%s/", k->host);
    return 0;
}

int
kms_client_new(const struct provider_ops *ops, const struct kms_backend *be,
               const struct key_config *key, struct key_counters *counters,
               struct event_base *base, const char *default_url,
               struct kms_client **out, char *err, size_t errlen)
{
    struct kms_client *k;
    int r;

    if ((k = calloc(1, sizeof(*k))) == NULL) {
        return KC_ENOMEM;
    }
    json_allocator_once();
    k->p.ops = ops;
    k->p.counters = counters;
    k->be = be;
    k->p.key = key;
    k->p.base = base;
    if ((r = parse_endpoint(k, key->endpoint != NULL ? key->endpoint
                                                     : default_url,
                            err, errlen)) != 0) {
        kms_client_free(k);
        return r;
    }
    if ((r = http_new(base, &k->http)) != 0) {
        snprintf(err, errlen, "[key.%s] cannot set up HTTP", key->alias);
        kms_client_free(k);
        return r;
    }
    *out = k;
    return 0;
}

static void
call_free(struct kms_call *c)
{
    struct kms_client *k = c->k;

    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else if (k->calls == c) {
        k->calls = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (c->xfer != NULL) {
        http_cancel(c->xfer);
    }
    if (c->timer != NULL) {
        event_free(c->timer);
    }
    json_decref(c->ec);
    free(c->key_id);
    free(c->expect_key);
    kc_buf_clear(&c->blob);
    kc_buf_clear(&c->pt_b64);
    free(c);
}

void
kms_client_free(struct kms_client *k)
{
    if (k == NULL) {
        return;
    }
    while (k->calls != NULL) {
        call_free(k->calls);
    }
    http_free(k->http);
    kms_creds_clear(&k->creds);
    free(k->url);
    free(k->host);
    free(k);
}

void
kms_provider_free(struct provider *p)
{
    kms_client_free((struct kms_client *)p);
}

int
kms_provider_generate(struct provider *p, const struct esdk_ec *ec,
                      const uint8_t *ec_ser, size_t ec_len, uint8_t *dk_out,
                      size_t dk_len, struct esdk_edk_list *edks,
                      struct provider_error *perr, provider_done_fn done,
                      void *arg)
{
    return kms_call_start((struct kms_client *)p, KMS_OP_GENERATE,
                          p->key->key_id, ec, NULL, 0, NULL, dk_out, dk_len,
                          edks, perr, done, arg);
}

int
kms_provider_wrap(struct provider *p, const struct esdk_ec *ec,
                  const uint8_t *ec_ser, size_t ec_len, const uint8_t *dk,
                  size_t dk_len, struct esdk_edk_list *edks,
                  struct provider_error *perr, provider_done_fn done,
                  void *arg)
{
    return kms_call_start((struct kms_client *)p, KMS_OP_ENCRYPT,
                          p->key->key_id, ec, NULL, 0, dk, NULL, dk_len,
                          edks, perr, done, arg);
}

/* ---- one call ----------------------------------------------------------- */

static int call_attempt(struct kms_call *c);

/* Finish c: record the error for the caller, free c, then call back. */
static void
call_finish(struct kms_call *c, int status)
{
    provider_done_fn done = c->done;
    void *arg = c->arg;
    struct provider_error *perr = c->perr;

    if (status != 0 && perr != NULL) {
        *perr = c->err;
    }
    c->xfer = NULL; /* gone with its callback */
    call_free(c);
    done(arg, status, perr);
}

static bool
is_json_type(const char *ct)
{
    /* application/json, application/x-amz-json-1.1, ...;charset=utf-8 */
    return strstr(ct, "json") != NULL;
}

/* Retry-After as milliseconds (delta-seconds or an HTTP date), or 0. */
static uint64_t
retry_after_ms(const char *v)
{
    char *end;
    unsigned long s;
    time_t t, now;

    if (v[0] == '\0') {
        return 0;
    }
    s = strtoul(v, &end, 10);
    if (end != v && *end == '\0') {
        return s > 3600 ? 3600000 : (uint64_t)s * 1000;
    }
    if ((t = curl_getdate(v, NULL)) > 0 && t > (now = time(NULL))) {
        return (uint64_t)(t - now) * 1000;
    }
    return 0;
}

static void
on_backoff(evutil_socket_t fd, short what, void *arg)
{
    struct kms_call *c = arg;
    int r;

    if ((r = call_attempt(c)) != 0) {
        call_finish(c, r);
    }
}

/*
 * Schedule another attempt after a failed one, if the policy allows:
 * returns true when a retry is scheduled.
 */
static bool
maybe_retry(struct kms_call *c, const char *retry_after)
{
    uint64_t cap, wait, ra, now = now_ms();
    struct timeval tv;

    if (c->attempt >= KMS_MAX_ATTEMPTS) {
        return false;
    }
    cap = (uint64_t)KMS_BACKOFF_BASE_MS << (c->attempt - 1);
    if (cap > KMS_BACKOFF_CAP_MS) {
        cap = KMS_BACKOFF_CAP_MS;
    }
    wait = randombytes_uniform((uint32_t)cap + 1);
    ra = retry_after_ms(retry_after);
    if (ra > wait) {
        wait = ra;
    }
    /* Leave the next attempt at least a little time to run. */
    if (now + wait + 50 >= c->deadline_ms) {
        log_debug("kms %s: no retry of %s: the wait (%llu ms) would reach "
                  "the deadline", c->k->p.key->alias, c->action,
                  (unsigned long long)wait);
        return false;
    }
    if (c->timer == NULL &&
        (c->timer = evtimer_new(c->k->p.base, on_backoff, c)) == NULL) {
        return false;
    }
    tv.tv_sec = (time_t)(wait / 1000);
    tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
    if (evtimer_add(c->timer, &tv) != 0) {
        return false;
    }
    log_info("kms %s: %s attempt %d failed (%s%s%s); retrying in %llu ms",
             c->k->p.key->alias, c->action, c->attempt,
             c->err.code[0] ? c->err.code : "transport",
             c->err.request_id[0] ? ", request id " : "",
             c->err.request_id, (unsigned long long)wait);
    return true;
}

static void
set_transport_error(struct kms_call *c, int result)
{
    const char *what;

    memset(&c->err, 0, sizeof(c->err));
    switch (result) {
    case KC_ETIMEOUT:
        what = "no complete answer from the KMS before the deadline";
        break;
    case KC_ECONNECT:
        what = "cannot connect to the KMS endpoint (connect, DNS or TLS)";
        break;
    case KC_ETOOBIG:
        what = "KMS answer larger than the limit";
        break;
    default:
        what = "connection to the KMS closed early (reset or truncated "
               "answer)";
        break;
    }
    snprintf(c->err.message, sizeof(c->err.message), "%s (%s)", what,
             c->k->host);
}

/* A 2xx answer.  Returns 0 or the final error (never retried). */
static int
handle_ok(struct kms_call *c, const struct http_response *resp)
{
    json_error_t jerr;
    json_t *root = NULL;
    int r = KC_EPROVIDER;

    /* Nothing left over from an earlier failed attempt. */
    memset(&c->err, 0, sizeof(c->err));
    c->err.http_status = (int)resp->status;
    kms_copy_str(c->err.request_id, sizeof(c->err.request_id),
                 resp->request_id);
    if (!is_json_type(resp->content_type)) {
        kms_copy_str(c->err.code, sizeof(c->err.code), "MalformedResponse");
        snprintf(c->err.message, sizeof(c->err.message),
                 "KMS answered with content type '%.60s', not JSON",
                 resp->content_type);
        goto out;
    }
    root = json_loadb((const char *)resp->body.data, resp->body.len, 0,
                      &jerr);
    if (root == NULL || !json_is_object(root)) {
        kms_copy_str(c->err.code, sizeof(c->err.code), "MalformedResponse");
        snprintf(c->err.message, sizeof(c->err.message),
                 "KMS answer is not a JSON object (%s at byte %d)",
                 root == NULL ? jerr.text : "wrong type",
                 root == NULL ? jerr.position : 0);
        goto out;
    }
    /* KC_EAUTH: the backend named the reason (another key answered). */
    if ((r = c->k->be->parse_ok(c->k, c, root)) != 0 && r != KC_EAUTH) {
        kms_copy_str(c->err.code, sizeof(c->err.code), "MalformedResponse");
    }
out:
    json_decref(root);
    return r;
}

/* A non-2xx answer: fill c->err; true when it may be retried. */
static bool
handle_error(struct kms_call *c, const struct http_response *resp,
             int *status)
{
    json_error_t jerr;
    json_t *root;

    memset(&c->err, 0, sizeof(c->err));
    c->err.http_status = (int)resp->status;
    kms_copy_str(c->err.request_id, sizeof(c->err.request_id),
                 resp->request_id);
    root = json_loadb((const char *)resp->body.data, resp->body.len, 0,
                      &jerr);
    if (root != NULL && json_is_object(root)) {
        c->k->be->parse_error(root, &c->err);
    }
    json_decref(root);
    if (c->err.message[0] == '\0') {
        snprintf(c->err.message, sizeof(c->err.message),
                 "KMS answered HTTP %ld without an error body",
                 resp->status);
    }
    *status = c->k->be->is_bad_ciphertext(c->err.code) ? KC_EAUTH
                                                       : KC_EPROVIDER;
    return resp->status >= 500 || c->k->be->is_throttle(c->err.code);
}

static void
on_http_done(void *arg, int result, const struct http_response *resp)
{
    struct kms_call *c = arg;
    struct key_counters *n = c->k->p.counters;
    bool retry = false;
    int status;

    c->xfer = NULL;
    n->provider_calls++;
    if (result != 0) {
        set_transport_error(c, result);
        status = result;
        retry = result != KC_ETOOBIG;
    } else if (resp->status >= 200 && resp->status < 300) {
        if ((status = handle_ok(c, resp)) == 0) {
            call_finish(c, 0);
            return;
        }
    } else {
        retry = handle_error(c, resp, &status);
    }
    n->provider_errors++;
    log_warn("kms %s: %s attempt %d: %s%s%s (http %d)%s%s",
             c->k->p.key->alias, c->action, c->attempt, kc_errname(status),
             c->err.code[0] ? " " : "", c->err.code, c->err.http_status,
             c->err.request_id[0] ? " request id " : "",
             c->err.request_id);
    if (retry && maybe_retry(c, result == 0 ? resp->retry_after : "")) {
        return;
    }
    call_finish(c, status);
}

/* Sign and send the next attempt.  0, or an error to finish with. */
static int
call_attempt(struct kms_call *c)
{
    struct kms_client *k = c->k;
    struct kms_wire w;
    struct http_request rq;
    const char *hdrs[KMS_MAX_HEADERS];
    uint64_t now = now_ms(), left;
    size_t i;
    int r;

    if (now >= c->deadline_ms) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "deadline passed before attempt %d", c->attempt + 1);
        return KC_ETIMEOUT;
    }
    left = c->deadline_ms - now;
    wire_init(&w);
    if ((r = k->be->build(k, c, &w)) != 0) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "cannot build the %s request: %s", c->action,
                 kc_strerror(r));
        goto out;
    }
    for (i = 0; i < w.nhdr; i++) {
        hdrs[i] = (const char *)w.hdr[i].data;
    }
    memset(&rq, 0, sizeof(rq));
    rq.url = (const char *)w.url.data;
    rq.method = "POST";
    rq.headers = hdrs;
    rq.nheaders = w.nhdr;
    rq.body = w.body.data;
    rq.body_len = w.body.len;
    rq.ca_file = k->p.key->ca_file;
    rq.timeout_ms = (long)left;
    rq.connect_timeout_ms = (long)(k->p.key->connect_timeout_ms < left
                                       ? k->p.key->connect_timeout_ms
                                       : left);
    c->attempt++;
    if ((r = http_start(k->http, &rq, on_http_done, c, &c->xfer)) != 0) {
        snprintf(c->err.message, sizeof(c->err.message),
                 "cannot start the HTTP request: %s", kc_strerror(r));
    }
out:
    wire_clear(&w);
    return r;
}

/* Copy the pairs of ec into a JSON object of strings. */
static json_t *
ec_to_json(const struct esdk_ec *ec)
{
    json_t *o = json_object(), *v;
    size_t i;
    char *key;

    if (o == NULL) {
        return NULL;
    }
    for (i = 0; i < ec->n; i++) {
        const struct esdk_ec_pair *p = &ec->pairs[i];

        /* Keys may hold any UTF-8, NUL included in principle; jansson
         * keys are C strings, so a key with NUL cannot be sent. */
        if (memchr(p->key, 0, p->key_len) != NULL ||
            (key = malloc(p->key_len + 1)) == NULL) {
            json_decref(o);
            return NULL;
        }
        /* Not strndup: the key is not NUL-terminated. */
        memcpy(key, p->key, p->key_len);
        key[p->key_len] = '\0';
        v = json_stringn((const char *)p->val, p->val_len);
        if (v == NULL || json_object_set_new(o, key, v) != 0) {
            free(key);
            json_decref(o);
            return NULL;
        }
        free(key);
    }
    return o;
}

int
kms_call_start_ex(struct kms_client *k, const struct kms_call_args *a,
                  struct provider_error *perr, provider_done_fn done,
                  void *arg)
{
    static const char *const actions[] = {"GenerateDataKey", "Encrypt",
                                          "Decrypt", "DescribeKey"};
    struct kms_call *c;
    int r;

    if ((unsigned)a->op >= sizeof(actions) / sizeof(actions[0]) ||
        (a->park && a->expect_key == NULL)) {
        return KC_EINVAL;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return KC_ENOMEM;
    }
    c->k = k;
    c->op = a->op;
    c->action = actions[a->op];
    c->dk_len = a->dk_len;
    c->dk_out = a->dk_out;
    c->edks = a->edks;
    c->perr = perr;
    c->done = done;
    c->arg = arg;
    c->deadline_ms = now_ms() + k->p.key->request_timeout_ms;
    kc_buf_init(&c->blob, 0);
    kc_buf_init(&c->pt_b64, 0);
    /* Link first so call_free can unlink on every path. */
    c->next = k->calls;
    if (c->next != NULL) {
        c->next->prev = c;
    }
    k->calls = c;
    r = KC_ENOMEM;
    if ((c->ec = ec_to_json(a->ec)) == NULL) {
        r = KC_ECONTEXT;
        goto fail;
    }
    if ((a->key_id != NULL && (c->key_id = strdup(a->key_id)) == NULL) ||
        (a->expect_key != NULL &&
         (c->expect_key = strdup(a->expect_key)) == NULL) ||
        (a->blob_len > 0 && kc_buf_put(&c->blob, a->blob, a->blob_len) != 0) ||
        (a->dk != NULL && (kms_b64_encode(a->dk, a->dk_len, &c->pt_b64) != 0 ||
                           kms_buf_cstr(&c->pt_b64) != 0))) {
        goto fail;
    }
    if (a->park) {
        c->parked = true;
        return PROVIDER_PENDING;
    }
    if ((r = call_attempt(c)) != 0) {
        goto fail;
    }
    return PROVIDER_PENDING;
fail:
    if (perr != NULL) {
        *perr = c->err;
    }
    call_free(c);
    return r;
}

int
kms_call_start(struct kms_client *k, enum kms_op op, const char *key_id,
               const struct esdk_ec *ec, const uint8_t *blob,
               size_t blob_len, const uint8_t *dk, uint8_t *dk_out,
               size_t dk_len, struct esdk_edk_list *edks,
               struct provider_error *perr, provider_done_fn done,
               void *arg)
{
    struct kms_call_args a;

    memset(&a, 0, sizeof(a));
    a.op = op;
    a.key_id = key_id;
    a.ec = ec;
    a.blob = blob;
    a.blob_len = blob_len;
    a.dk = dk;
    a.dk_out = dk_out;
    a.dk_len = dk_len;
    a.edks = edks;
    return kms_call_start_ex(k, &a, perr, done, arg);
}

void
kms_call_release(struct kms_client *k, const char *key, int status,
                 const struct provider_error *perr)
{
    struct kms_call *c;
    size_t n = 0;
    int r;

    /* Mark first: callbacks may park new calls, which must wait for the
     * next resolution, and may start or finish others (the list
     * changes under us, so each turn searches it afresh). */
    for (c = k->calls; c != NULL; c = c->next) {
        c->releasing = c->parked;
        n += c->parked;
    }
    while (n-- > 0) {
        for (c = k->calls; c != NULL && !c->releasing; c = c->next) {
        }
        if (c == NULL) {
            return; /* the rest went with a callback's doing */
        }
        c->releasing = false;
        c->parked = false;
        if (key == NULL) {
            if (perr != NULL) {
                c->err = *perr;
            }
            call_finish(c, status < 0 ? status : KC_EPROVIDER);
        } else if (strcmp(c->expect_key, key) != 0) {
            memset(&c->err, 0, sizeof(c->err));
            kms_copy_str(c->err.code, sizeof(c->err.code), "KeyMismatch");
            snprintf(c->err.message, sizeof(c->err.message),
                     "the data key is under KMS key %.100s, not under %.100s",
                     c->expect_key, key);
            call_finish(c, KC_EAUTH);
        } else if ((r = call_attempt(c)) != 0) {
            call_finish(c, r);
        }
    }
}
