/*
 * wire.h - framing and MessagePack helpers shared by the agent and the
 * client library.  Pure functions over bytes: no I/O, no crypto, so they
 * are easy to test and to fuzz.  See PROTOCOL.md for the format.
 *
 * All functions are thread-safe (they touch only their arguments).
 */
#ifndef KC_WIRE_H
#define KC_WIRE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kc_buf.h"
#include "kc_err.h"

#define PROTO_VERSION           1
#define PROTO_FRAME_HDR         4
#define PROTO_DEFAULT_MAX_FRAME (1048576 + 65536)
#define PROTO_MAX_PLAINTEXT     1048576
#define PROTO_RESPONSE_SLACK    65536  /* responses may exceed max_frame */
#define PROTO_MAX_ELEMS         100000 /* msgpack elements per request */
#define PROTO_MAX_DEPTH         16     /* msgpack nesting per request */

/*
 * proto_frame_decode - find the first complete frame in p[0..n).
 * Returns 0 and sets *total = 0 when more bytes are needed; returns 0 and
 * sets *body, *body_len and *total (header + body) when a frame is
 * complete; returns KC_ETOOBIG when the length prefix exceeds max (checked
 * before any body byte is needed) or KC_EPROTO for a zero length.
 * *body borrows from p.
 */
KC_MUST_USE int proto_frame_decode(const uint8_t *p, size_t n, size_t max,
                                   const uint8_t **body, size_t *body_len,
                                   size_t *total);

/*
 * proto_frame_begin / proto_frame_end - build a frame at the end of b:
 * begin appends a 4-byte length placeholder and records its offset in
 * *mark; the caller packs the body (see proto_packer_init); end fills the
 * length in.  end returns KC_EPROTO for an empty body, KC_ETOOBIG for one
 * over max (the caller should then truncate b back to *mark).
 */
KC_MUST_USE int proto_frame_begin(struct kc_buf *b, size_t *mark);
KC_MUST_USE int proto_frame_end(struct kc_buf *b, size_t mark, size_t max);

/* proto_packer_init - a msgpack packer that appends to b (wiping on grow). */
void proto_packer_init(msgpack_packer *pk, struct kc_buf *b);

/*
 * proto_msgpack_check - walk p as exactly one msgpack value without
 * allocating: every length and count must fit in the bytes that remain,
 * containers may hold at most max_elems elements in all and nest at most
 * max_depth deep, and nothing may follow.  Returns 0, KC_EPROTO
 * (malformed, truncated, trailing bytes) or KC_ETOOBIG (limits).
 */
KC_MUST_USE int proto_msgpack_check(const uint8_t *p, size_t len,
                                    size_t max_elems, size_t max_depth);

/*
 * proto_unpack_map - check body with proto_msgpack_check, then unpack it
 * as exactly one msgpack map (no trailing bytes).  Strings and bins in
 * *u may point into body, so body must outlive u; the caller calls
 * msgpack_unpacked_destroy(u) in every case.  The objects go to u->zone
 * when it is set (made otherwise), so a caller may keep one zone and
 * msgpack_zone_clear it between messages instead.
 * Returns 0, KC_EPROTO (not msgpack, not a map, trailing bytes), KC_ENOMEM.
 */
KC_MUST_USE int proto_unpack_map(const uint8_t *body, size_t len,
                                 msgpack_unpacked *u);

#define PROTO_MAX_MAP_KEYS 64 /* keys in a request (or batch item) map */

/*
 * proto_map_check_keys - a request map's keys must be strings, at most
 * PROTO_MAX_MAP_KEYS of them, and distinct (so no two readers of the
 * same request can disagree on which duplicate counts).  Returns 0,
 * KC_ETOOBIG or KC_EPROTO.
 */
KC_MUST_USE int proto_map_check_keys(const msgpack_object *map);

/*
 * proto_str_bytes - the bytes of a str or bin object, never NULL.
 * msgpack-c leaves the pointer NULL for an empty string, and NULL may not
 * be passed to memcmp or memcpy even with a zero length; every reader of
 * a str or bin goes through here.
 */
const char *proto_str_bytes(const msgpack_object *o);

/* proto_map_get - the value for string key in map, or NULL. */
const msgpack_object *proto_map_get(const msgpack_object *map,
                                    const char *key);

/*
 * Typed field getters.  Each returns 0 with the value, KC_EINVAL if the
 * field is present with the wrong type (or absent and required), or 1 if
 * absent and not required.  Pointers borrow from the unpacked object.
 */
KC_MUST_USE int proto_get_uint(const msgpack_object *map, const char *key,
                               bool required, uint64_t *v);
KC_MUST_USE int proto_get_str(const msgpack_object *map, const char *key,
                              bool required, const char **p, size_t *len);
/* Accepts bin, or str for clients whose msgpack lacks bin. */
KC_MUST_USE int proto_get_bin(const msgpack_object *map, const char *key,
                              bool required, const uint8_t **p, size_t *len);
KC_MUST_USE int proto_get_map(const msgpack_object *map, const char *key,
                              bool required, const msgpack_object **out);

/* Packing helpers for NUL-terminated strings and byte runs. */
void proto_pack_cstr(msgpack_packer *pk, const char *s);
void proto_pack_strn(msgpack_packer *pk, const char *s, size_t n);
void proto_pack_bin(msgpack_packer *pk, const uint8_t *p, size_t n);

/*
 * proto_pack_error_body - pack {ok: false, error: {code, name, message}}
 * (a batch item's failed result; message NULL: kc_strerror(code)).
 */
void proto_pack_error_body(msgpack_packer *pk, int code, const char *message);

/*
 * proto_pack_error - pack an error response map:
 * {id: id|nil, ok: false, error: {code, name, message}}.
 */
void proto_pack_error(msgpack_packer *pk, bool has_id, uint64_t id, int code,
                      const char *message);

/*
 * proto_error_frame - append one whole error-response frame to b (see
 * proto_pack_error).  Returns 0 or kc_buf's error.
 */
KC_MUST_USE int proto_error_frame(struct kc_buf *b, bool has_id, uint64_t id,
                                  int code, const char *message);

#endif /* KC_WIRE_H */
