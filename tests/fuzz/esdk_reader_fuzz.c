/*
 * esdk_reader_fuzz.c - libFuzzer target over the message reader:
 * esdk_header_parse, then raw-AES unwrap of every EDK and esdk_decrypt
 * with a fixed data key.  Any crash, sanitizer report or plaintext
 * released from a message that did not verify is a bug.
 *
 * Build (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Iproto -Iagent/esdk proto/kc_buf.c proto/kc_err.c \
 *     agent/esdk/[a-z]*.c \
 *     tests/fuzz/esdk_reader_fuzz.c -lcrypto -lsodium -o esdk_reader_fuzz
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "esdk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_wkey[32] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t fuzz_dk[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct esdk_limits lim;
    struct esdk_header *h = NULL;
    struct kc_buf pt;
    uint8_t dk[32];
    size_t i;
    int r;

    esdk_limits_default(&lim);
    lim.allow_legacy = true;
    lim.max_message = 1 << 20;
    lim.max_frame_len = 1 << 16;
    if (esdk_header_parse(data, size, &lim, &h) != 0) {
        return 0;
    }
    for (i = 0; i < h->edks.n; i++) {
        (void)rawaes_unwrap(fuzz_wkey, sizeof(fuzz_wkey), "fuzz", "key",
                            &h->edks.v[i], h->ec_canonical.data,
                            h->ec_canonical.len, dk, h->suite->key_len);
    }
    kc_buf_init(&pt, 0);
    r = esdk_decrypt(h, data, size, fuzz_dk, h->suite->key_len, &lim, &pt);
    if (r != 0 && pt.len != 0) {
        abort(); /* plaintext escaped a failed decrypt */
    }
    kc_buf_clear(&pt);
    esdk_header_free(h);
    return 0;
}
