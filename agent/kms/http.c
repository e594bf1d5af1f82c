/*
 * http.c - libcurl multi driven by libevent (see http.h for the
 * contract).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to wake it (CURLMOPT_TIMERFUNCTION); we map both onto libevent events
 * and hand readiness back with curl_multi_socket_action.  Finished
 * transfers are collected with curl_multi_info_read, taken out of the
 * multi handle, and only then reported, so a callback may start, cancel
 * or free anything without curl being re-entered.
 *
 * Secrets: the request body and the header lines (Authorization, session
 * tokens) are wiped before they are freed; response bodies go into a
 * wiping kc_buf.  libcurl's own copies of the URL and of the TLS buffers
 * are outside our control.
 */
#include "http.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct http {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct http_xfer *xfers; /* in the air, doubly linked */
    int running;
};

struct http_xfer {
    struct http *h;
    CURL *easy;
    struct curl_slist *hdrs;
    struct kc_buf body;       /* request body, wiped */
    struct http_response resp;
    http_done_fn done;
    void *arg;
    bool too_big;
    struct http_xfer *prev;
    struct http_xfer *next;
};

/* One watched socket: its libevent event, created on first use. */
struct http_sock {
    struct event *ev;
    struct http *h;
};

static void http_check_done(struct http *h);

static int
curl_global_once(void)
{
    static bool done;

    if (!done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            return KC_ENOMEM;
        }
        done = true;
    }
    return 0;
}

static void
on_sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct http *h = arg;
    int mask = 0;

    if (what & EV_READ) {
        mask |= CURL_CSELECT_IN;
    }
    if (what & EV_WRITE) {
        mask |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(h->multi, fd, mask, &h->running);
    http_check_done(h);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct http *h = arg;

    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &h->running);
    http_check_done(h);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching s. */
static int
sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
    struct http *h = userp;
    struct http_sock *hs = sockp;
    short kind = EV_PERSIST;

    if (what == CURL_POLL_REMOVE) {
        if (hs != NULL) {
            event_free(hs->ev);
            free(hs);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    if (hs == NULL) {
        if ((hs = calloc(1, sizeof(*hs))) == NULL) {
            return -1;
        }
        hs->h = h;
        curl_multi_assign(h->multi, s, hs);
    } else {
        event_free(hs->ev);
        hs->ev = NULL;
    }
    if (what & CURL_POLL_IN) {
        kind |= EV_READ;
    }
    if (what & CURL_POLL_OUT) {
        kind |= EV_WRITE;
    }
    hs->ev = event_new(h->base, s, kind, on_sock_event, h);
    if (hs->ev == NULL || event_add(hs->ev, NULL) != 0) {
        return -1;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be woken in timeout_ms. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct http *h = userp;
    struct timeval tv;

    if (timeout_ms < 0) {
        evtimer_del(h->timer);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    return evtimer_add(h->timer, &tv) == 0 ? 0 : -1;
}

int
http_new(struct event_base *base, struct http **out)
{
    struct http *h;

    if (curl_global_once() != 0) {
        return KC_ENOMEM;
    }
    if ((h = calloc(1, sizeof(*h))) == NULL) {
        return KC_ENOMEM;
    }
    h->base = base;
    h->multi = curl_multi_init();
    h->timer = evtimer_new(base, on_timer, h);
    if (h->multi == NULL || h->timer == NULL) {
        http_free(h);
        return KC_ENOMEM;
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    *out = h;
    return 0;
}

static void
xfer_unlink(struct http_xfer *x)
{
    struct http *h = x->h;

    if (x->prev != NULL) {
        x->prev->next = x->next;
    } else if (h->xfers == x) {
        h->xfers = x->next;
    }
    if (x->next != NULL) {
        x->next->prev = x->prev;
    }
    x->prev = x->next = NULL;
}

/* Wipe the header lines (they carry signatures and tokens) and free. */
static void
slist_free_wipe(struct curl_slist *l)
{
    struct curl_slist *p;

    for (p = l; p != NULL; p = p->next) {
        kc_wipe(p->data, strlen(p->data));
    }
    curl_slist_free_all(l);
}

/* Take x out of curl and our list and free it; no callback. */
static void
xfer_free(struct http_xfer *x)
{
    if (x == NULL) {
        return;
    }
    if (x->easy != NULL) {
        curl_multi_remove_handle(x->h->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    xfer_unlink(x);
    slist_free_wipe(x->hdrs);
    kc_buf_clear(&x->body);
    kc_buf_clear(&x->resp.body);
    free(x);
}

void
http_free(struct http *h)
{
    if (h == NULL) {
        return;
    }
    while (h->xfers != NULL) {
        xfer_free(h->xfers);
    }
    if (h->multi != NULL) {
        curl_multi_cleanup(h->multi);
    }
    if (h->timer != NULL) {
        event_free(h->timer);
    }
    free(h);
}

void
http_cancel(struct http_xfer *x)
{
    xfer_free(x);
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct http_xfer *x = userdata;
    size_t n = size * nmemb;

    if (kc_buf_put(&x->resp.body, ptr, n) != 0) {
        x->too_big = true;
        return 0; /* makes curl fail the transfer with a write error */
    }
    return n;
}

/* Copy header line value (trimmed) into dst when its name matches. */
static bool
header_take(const char *line, size_t len, const char *name, char *dst,
            size_t dstlen)
{
    size_t nl = strlen(name), vl;
    const char *v;

    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0) {
        return false;
    }
    v = line + nl + 1;
    vl = len - nl - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' ||
                      v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
        vl--;
    }
    if (vl >= dstlen) {
        vl = dstlen - 1;
    }
    memcpy(dst, v, vl);
    dst[vl] = '\0';
    return true;
}

static size_t
header_cb(char *line, size_t size, size_t nitems, void *userdata)
{
    struct http_xfer *x = userdata;
    struct http_response *r = &x->resp;
    size_t n = size * nitems;

    /* A new status line (after a 100 Continue, say) starts over. */
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        r->content_type[0] = r->request_id[0] = r->retry_after[0] = '\0';
        return n;
    }
    if (header_take(line, n, "content-type", r->content_type,
                    sizeof(r->content_type)) ||
        header_take(line, n, "retry-after", r->retry_after,
                    sizeof(r->retry_after))) {
        return n;
    }
    if (!header_take(line, n, "x-amzn-requestid", r->request_id,
                     sizeof(r->request_id)) &&
        !header_take(line, n, "x-amz-request-id", r->request_id,
                     sizeof(r->request_id))) {
        (void)header_take(line, n, "x-acs-request-id", r->request_id,
                          sizeof(r->request_id));
    }
    return n;
}

/* Set up the easy handle; 0 or KC_ENOMEM / KC_EINVAL. */
static int
xfer_setup(struct http_xfer *x, const struct http_request *rq)
{
    CURL *e = x->easy;
    size_t i;
    struct curl_slist *l;
    bool ok = true;

    for (i = 0; i < rq->nheaders; i++) {
        if ((l = curl_slist_append(x->hdrs, rq->headers[i])) == NULL) {
            return KC_ENOMEM;
        }
        x->hdrs = l;
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    if ((l = curl_slist_append(x->hdrs, "Expect:")) == NULL) {
        return KC_ENOMEM;
    }
    x->hdrs = l;
    ok &= curl_easy_setopt(e, CURLOPT_URL, rq->url) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    /* A fresh connection per request: libcurl silently sends a request
     * again when a reused keep-alive connection dies before answering,
     * which would replay a signed request (Alibaba refuses the reused
     * nonce) and make "at most 3 attempts" untrue.
     * TODO: reusing connections would save a TCP+TLS handshake per
     * KMS call; it needs a way to stop that silent re-send first. */
    ok &= curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_SSLVERSION,
                           (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK;
    if (rq->ca_file != NULL) {
        ok &= curl_easy_setopt(e, CURLOPT_CAINFO, rq->ca_file) == CURLE_OK;
    }
    ok &= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                           rq->connect_timeout_ms) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, rq->timeout_ms) ==
          CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                           x->body.data != NULL ? (char *)x->body.data
                                                : "") == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                           (curl_off_t)x->body.len) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, x) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_HEADERDATA, x) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, x) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, "keycache/" KC_VERSION) ==
          CURLE_OK;
    return ok ? 0 : KC_EINVAL;
}

int
http_start(struct http *h, const struct http_request *rq, http_done_fn done,
           void *arg, struct http_xfer **out)
{
    struct http_xfer *x;
    int r;

    if (rq->url == NULL || rq->method == NULL || done == NULL) {
        return KC_EINVAL;
    }
    if ((x = calloc(1, sizeof(*x))) == NULL) {
        return KC_ENOMEM;
    }
    x->h = h;
    x->done = done;
    x->arg = arg;
    kc_buf_init(&x->body, 0);
    kc_buf_init(&x->resp.body, HTTP_MAX_RESPONSE);
    if (rq->body_len > 0 &&
        (r = kc_buf_put(&x->body, rq->body, rq->body_len)) != 0) {
        goto fail;
    }
    if ((x->easy = curl_easy_init()) == NULL) {
        r = KC_ENOMEM;
        goto fail;
    }
    if ((r = xfer_setup(x, rq)) != 0) {
        goto fail;
    }
    /* Link first: xfer_free unlinks. */
    x->next = h->xfers;
    if (x->next != NULL) {
        x->next->prev = x;
    }
    h->xfers = x;
    /* Only arms curl's timer; the transfer runs from the loop. */
    if (curl_multi_add_handle(h->multi, x->easy) != CURLM_OK) {
        r = KC_ENOMEM;
        goto fail;
    }
    if (out != NULL) {
        *out = x;
    }
    return 0;
fail:
    xfer_free(x);
    return r;
}

/* Map curl's result onto the contract's codes. */
static int
map_result(const struct http_xfer *x, CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return KC_ETIMEOUT;
    case CURLE_WRITE_ERROR:
        return x->too_big ? KC_ETOOBIG : KC_ECLOSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return KC_ECONNECT;
    default:
        /* partial file, recv/send error, empty reply, ... */
        return KC_ECLOSED;
    }
}

/* Report every finished transfer. */
static void
http_check_done(struct http *h)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        struct http_xfer *x = NULL;
        CURLcode cc;
        int result;

        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x == NULL) {
            continue;
        }
        result = map_result(x, cc);
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->resp.status);
        if (result != 0) {
            log_debug("http: transfer failed: %s (%s)",
                      curl_easy_strerror(cc), kc_errname(result));
        }
        /* Out of curl before the callback: it may re-enter us freely. */
        curl_multi_remove_handle(h->multi, x->easy);
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
        xfer_unlink(x);
        x->done(x->arg, result, &x->resp);
        xfer_free(x);
    }
}
