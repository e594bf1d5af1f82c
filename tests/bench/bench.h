/*
 * bench.h - pieces of keycache-bench shared between its files.
 */
#ifndef KC_BENCH_H
#define KC_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* A cached data key with its header parts, for the naive baseline. */
struct naive_key {
    uint8_t dk[32];
    const uint8_t *ec; /* canonical context serialization */
    size_t ec_len;
    const uint8_t *pid, *info, *ct; /* the one EDK */
    size_t pid_len, info_len, ct_len;
};

/*
 * naive_encrypt - one 0x0478 message of n (<= 4096) bytes into out
 * (room for n + 512 + header parts).  Returns its length, 0 on failure.
 */
size_t naive_encrypt(const struct naive_key *k, const uint8_t *pt, size_t n,
                     uint8_t *out);

#endif /* KC_BENCH_H */
