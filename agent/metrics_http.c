/*
 * metrics_http.c - the optional HTTP listener for Prometheus scrapes:
 * GET /metrics on a loopback address only (config metrics_listen).
 *
 * It needs no authorization because it binds nothing but loopback: any
 * process on the host that could reach it could also read the agent's
 * logs' numbers.  It serves counters only, never keys or contexts.
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

static struct evhttp *http;

static void
serve_metrics(struct evhttp_request *req, void *arg)
{
    struct agent *a = arg;
    struct evbuffer *body;
    struct kc_buf text;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_send_error(req, 405, "only GET");
        return;
    }
    kc_buf_init(&text, 0);
    if (metrics_render(a, &text) != 0 ||
        (body = evbuffer_new()) == NULL) {
        kc_buf_clear(&text);
        evhttp_send_error(req, 500, "cannot render metrics");
        return;
    }
    evbuffer_add(body, text.data, text.len);
    evhttp_add_header(evhttp_request_get_output_headers(req),
                      "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
    kc_buf_clear(&text);
}

static void
serve_other(struct evhttp_request *req, void *arg)
{
    evhttp_send_error(req, 404, "only /metrics");
}

/* Split "host:port" ("[::1]:port" for IPv6) and insist on loopback. */
static int
parse_listen(const char *spec, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(spec, ':');
    unsigned char addr[16];
    char *end;
    unsigned long p;
    size_t len;

    if (colon == NULL || colon == spec) {
        return -1;
    }
    len = (size_t)(colon - spec);
    if (spec[0] == '[' && len >= 2 && spec[len - 1] == ']') {
        spec++;
        len -= 2;
    }
    if (len >= hostlen) {
        return -1;
    }
    memcpy(host, spec, len);
    host[len] = '\0';
    p = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || p == 0 || p > 65535) {
        return -1;
    }
    *port = (uint16_t)p;
    if (inet_pton(AF_INET, host, addr) == 1) {
        return addr[0] == 127 ? 0 : -1;
    }
    if (inet_pton(AF_INET6, host, addr) == 1) {
        return IN6_IS_ADDR_LOOPBACK((struct in6_addr *)addr) ? 0 : -1;
    }
    return -1;
}

int
metrics_http_start(struct agent *a, char *err, size_t errlen)
{
    char host[64];
    uint16_t port;

    if (a->cfg->metrics_listen == NULL) {
        return 0;
    }
    if (parse_listen(a->cfg->metrics_listen, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "metrics_listen '%s' must be a loopback "
                 "address and port, e.g. 127.0.0.1:9464",
                 a->cfg->metrics_listen);
        return KC_ECONFIG;
    }
    if ((http = evhttp_new(a->base)) == NULL) {
        return KC_ENOMEM;
    }
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET);
    evhttp_set_timeout(http, 10);
    evhttp_set_max_headers_size(http, 8192);
    evhttp_set_max_body_size(http, 0);
    evhttp_set_cb(http, "/metrics", serve_metrics, a);
    evhttp_set_gencb(http, serve_other, NULL);
    if (evhttp_bind_socket(http, host, port) != 0) {
        snprintf(err, errlen, "metrics_listen %s: cannot bind",
                 a->cfg->metrics_listen);
        evhttp_free(http);
        http = NULL;
        return KC_ESYS;
    }
    log_info("serving metrics on http://%s/metrics", a->cfg->metrics_listen);
    return 0;
}

void
metrics_http_stop(void)
{
    if (http != NULL) {
        evhttp_free(http);
        http = NULL;
    }
}
