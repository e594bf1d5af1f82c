/*
 * frame_fuzz.c - libFuzzer target over the wire decoders: split the
 * input into frames with proto_frame_decode (as a peer's byte stream),
 * then run each body through proto_msgpack_check and proto_unpack_map.
 * Any crash or sanitizer report is a bug; so is a body that passes the
 * size check yet makes the unpacker fail for lack of memory.
 */
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *body;
    size_t body_len, total, off = 0;

    while (off < size) {
        msgpack_unpacked u;
        int r;

        if (proto_frame_decode(data + off, size - off, 1 << 16, &body,
                               &body_len, &total) != 0 ||
            total == 0) {
            break;
        }
        msgpack_unpacked_init(&u);
        r = proto_unpack_map(body, body_len, &u);
        if (r == KC_ENOMEM) {
            abort(); /* the pre-check must bound allocation */
        }
        msgpack_unpacked_destroy(&u);
        off += total;
    }
    return 0;
}
