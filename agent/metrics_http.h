/*
 * metrics_http.h - optional HTTP listener for Prometheus (loopback only).
 */
#ifndef KC_METRICS_HTTP_H
#define KC_METRICS_HTTP_H

#include "agent.h"

/*
 * metrics_http_start - when [agent] metrics_listen is set, serve
 * GET /metrics there.  Refuses any address that is not loopback.
 * Returns 0, KC_ECONFIG, KC_ESYS (bind failed), KC_ENOMEM; err says why.
 */
KC_MUST_USE int metrics_http_start(struct agent *a, char *err, size_t errlen);

/* metrics_http_stop - close the listener (NULL-safe). */
void metrics_http_stop(void);

#endif /* KC_METRICS_HTTP_H */
