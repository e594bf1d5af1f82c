/*
 * kms_response_fuzz.c - libFuzzer target over how the AWS and Alibaba
 * backends read a KMS answer.  The first byte picks the backend, the
 * operation, how the configured key is named and whether a Decrypt must
 * name a given key; the rest is the HTTP body, read both as a success
 * answer (parse_ok) and as an error answer (parse_error), as
 * kms_call.c does after json_loadb.  Nothing is sent anywhere.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "kms.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char *const key_ids[4] = {
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "1234abcd-12ab-34cd-56ef-1234567890ab",
    "alias/users",
    "key-hzz62f1cb66fa42qo3a2p",
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_init(LOG_LEVEL_ERROR, false);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct key_config key;
    const struct kms_backend *be;
    struct kms_client k;
    struct kms_call c;
    struct esdk_edk_list edks;
    struct provider_error perr;
    json_error_t jerr;
    json_t *root;
    uint8_t dk[32], sel;

    if (size < 1) {
        return 0;
    }
    sel = data[0];
    be = (sel & 1) != 0 ? kms_backend_alibaba() : kms_backend_aws();
    snprintf(key.alias, sizeof(key.alias), "fuzz");
    key.key_id = key_ids[(sel >> 2) & 3];
    memset(&k, 0, sizeof(k));
    k.be = be;
    k.p.key = &key;
    k.by_alias = (sel & 2) != 0;
    memset(&c, 0, sizeof(c));
    esdk_edk_list_init(&edks);
    c.k = &k;
    c.op = (enum kms_op)((sel >> 4) & 3);
    c.action = "Fuzz";
    c.dk_len = sizeof(dk);
    c.dk_out = dk;
    c.edks = &edks;
    c.expect_key = (sel & 0x40) != 0 ? key_ids[(sel >> 2) & 3] : NULL;
    root = json_loadb((const char *)data + 1, size - 1, 0, &jerr);
    if (root != NULL && json_is_object(root)) {
        (void)be->parse_ok(&k, &c, root);
        memset(&perr, 0, sizeof(perr));
        be->parse_error(root, &perr);
        (void)be->is_throttle(perr.code);
        (void)be->is_bad_ciphertext(perr.code);
    }
    json_decref(root);
    esdk_edk_list_clear(&edks);
    return 0;
}
