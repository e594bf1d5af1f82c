/*
 * dispatch.h - turn one request frame body into one response frame.
 */
#ifndef KC_DISPATCH_H
#define KC_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "agent.h"
#include "kc_buf.h"

/*
 * dispatch_request - decode the msgpack request in body (borrowed; may
 * hold plaintext, the caller wipes it), run the op, and append exactly
 * one response frame to out (a kc_buf that wipes).  Bad input always
 * yields an error response, never a failure of the agent.  Returns 0, or
 * KC_ENOMEM when not even an error response could be built.
 */
KC_MUST_USE int dispatch_request(struct agent *a, const struct peer *peer,
                                 const uint8_t *body, size_t len,
                                 struct kc_buf *out);

#endif /* KC_DISPATCH_H */
