/*
 * gen_esdk_seeds.c - writes the esdk_reader fuzz target's seed corpus:
 * messages made by our own writer under the target's fixed data key and
 * wrapping key, so the fuzzer starts from inputs that fully decrypt.
 *
 *   gen_esdk_seeds DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esdk.h"

static const uint8_t fuzz_wkey[32] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t fuzz_dk[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

static int
write_seed(const char *dir, const char *name, uint16_t suite, size_t pt_len,
           uint32_t frame_len, bool with_ec)
{
    struct esdk_enc *enc = NULL;
    struct esdk_edk_list edks;
    struct esdk_ec ec;
    struct kc_buf out;
    const uint8_t *aad;
    size_t aad_len;
    uint8_t *pt = calloc(1, pt_len + 1);
    char path[512];
    FILE *f;
    int r = -1;

    esdk_ec_init(&ec);
    esdk_edk_list_init(&edks);
    kc_buf_init(&out, 0);
    if (pt == NULL) {
        return -1;
    }
    memset(pt, 'p', pt_len);
    if (with_ec && (esdk_ec_add(&ec, "table", 5, "users", 5) != 0 ||
                    esdk_ec_add(&ec, "column", 6, "email", 5) != 0)) {
        goto out;
    }
    if (esdk_enc_new(suite, &ec, &enc) != 0) {
        goto out;
    }
    esdk_enc_wrapping_aad(enc, &aad, &aad_len);
    if (rawaes_wrap(fuzz_wkey, 32, "fuzz", "key", aad, aad_len, fuzz_dk, 32,
                    &edks) != 0 ||
        esdk_enc_finish(enc, fuzz_dk, 32, &edks, frame_len, pt, pt_len,
                        &out) != 0) {
        goto out;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((f = fopen(path, "wb")) == NULL) {
        goto out;
    }
    fwrite(out.data, 1, out.len, f);
    fclose(f);
    r = 0;
out:
    esdk_enc_free(enc);
    esdk_edk_list_clear(&edks);
    esdk_ec_clear(&ec);
    kc_buf_clear(&out);
    free(pt);
    return r;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_esdk_seeds DIR\n");
        return 2;
    }
    if (write_seed(argv[1], "v2-0478-empty", 0x0478, 0, 64, false) != 0 ||
        write_seed(argv[1], "v2-0478-ctx-1frame", 0x0478, 20, 64, true) !=
            0 ||
        write_seed(argv[1], "v2-0478-3frames", 0x0478, 150, 64, true) != 0 ||
        write_seed(argv[1], "v2-0578-ctx", 0x0578, 70, 64, true) != 0 ||
        write_seed(argv[1], "v2-0578-empty", 0x0578, 0, 32, false) != 0) {
        fprintf(stderr, "gen_esdk_seeds: failed\n");
        return 1;
    }
    return 0;
}
