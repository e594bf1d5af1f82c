/*
 * kc_err.c - text for the shared error codes.
 */
#include "kc_err.h"

#include <stddef.h>

struct err_row {
    const char *name;
    const char *text;
};

/* Indexed by -code. */
static const struct err_row err_table[] = {
    {"KC_OK", "success"},
    {"KC_EINVAL", "invalid argument"},
    {"KC_ENOMEM", "out of memory"},
    {"KC_ESYS", "system error"},
    {"KC_EPROTO", "protocol error"},
    {"KC_ETOOBIG", "size limit exceeded"},
    {"KC_EVERSION", "unsupported protocol version"},
    {"KC_EUNKNOWNOP", "unknown operation"},
    {"KC_ENOKEY", "unknown key alias"},
    {"KC_EDENIED", "permission denied"},
    {"KC_EAUTH", "authentication failed"},
    {"KC_EFORMAT", "malformed ciphertext"},
    {"KC_EUNSUPPORTED", "unsupported"},
    {"KC_ECONTEXT", "encryption context invalid or mismatched"},
    {"KC_EPROVIDER", "key provider error"},
    {"KC_ETIMEOUT", "timed out"},
    {"KC_ECONNECT", "cannot connect to agent"},
    {"KC_ECLOSED", "connection closed"},
    {"KC_EBUSY", "busy"},
    {"KC_ESHUTDOWN", "agent shutting down"},
    {"KC_ENODATAKEY", "no data key could be decrypted"},
    {"KC_ECONFIG", "invalid configuration"},
    {"KC_EKEYFILE", "bad master key file"},
};

static const struct err_row *
err_lookup(int code)
{
    size_t i;

    if (code > 0 || code < KC_ERR_MIN) {
        return NULL;
    }
    i = (size_t)-code;
    if (i >= sizeof(err_table) / sizeof(err_table[0])) {
        return NULL;
    }
    return &err_table[i];
}

const char *
kc_strerror(int code)
{
    const struct err_row *row = err_lookup(code);

    return row != NULL ? row->text : "unknown error";
}

const char *
kc_errname(int code)
{
    const struct err_row *row = err_lookup(code);

    return row != NULL ? row->name : "KC_EUNKNOWN";
}
