/*
 * dispatch.h - turn request frames into response frames, now or later.
 */
#ifndef KC_DISPATCH_H
#define KC_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "agent.h"
#include "kc_buf.h"

#define DISPATCH_PENDING 1

/*
 * dispatch_request - decode the msgpack request in body (borrowed; may
 * hold plaintext, the caller wipes it) and run its op.  Returns 0 with
 * exactly one response frame appended to out (a kc_buf that wipes): bad
 * input always yields an error response, never a failure of the agent.
 * Returns DISPATCH_PENDING when the op waits on a key provider: nothing
 * is appended, the request keeps its own copy of body, and its response
 * is handed to server_conn_reply(conn, ...) later.  Returns KC_ENOMEM
 * when not even an error response could be built.
 */
KC_MUST_USE int dispatch_request(struct agent *a, struct conn *conn,
                                 struct authz_peer *peer,
                                 const uint8_t *body, size_t len,
                                 struct kc_buf *out);

/* dispatch_conn_closed - requests of conn still waiting will be dropped
 * when they finish instead of answered. */
void dispatch_conn_closed(struct agent *a, struct conn *conn);

/* dispatch_shutdown - at exit: drop flights and waiting requests,
 * wiping their bodies, and the spare msgpack zone.  Call before the
 * providers are freed. */
void dispatch_shutdown(struct agent *a);

#endif /* KC_DISPATCH_H */
