/*
 * metrics_http.c - the optional HTTP listener for Prometheus scrapes:
 * GET /metrics on a loopback address only (config metrics_listen).
 *
 * It needs no authorization because it binds nothing but loopback: any
 * process on the host that could reach it could also read the agent's
 * logs' numbers.  It serves counters only, never keys or contexts.
 */
#include "metrics_http.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
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

int
metrics_http_start(struct agent *a, char *err, size_t errlen)
{
    char host[64];
    uint16_t port;

    if (a->cfg->metrics_listen == NULL) {
        return 0;
    }
    if (config_parse_listen(a->cfg->metrics_listen, host, sizeof(host),
                            &port) != 0) {
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
    if (a->cfg->allow_stats != NULL) {
        log_warn("metrics_listen: TCP carries no peer credentials, so any "
                 "local process can read /metrics; allow_stats applies to "
                 "the socket only");
    }
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
