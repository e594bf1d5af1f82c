/*
 * kc_err.h - the one error-code table shared by the agent, the client
 * library and the wire protocol.
 *
 * Fallible functions return 0 on success or one of the negative KC_E*
 * values below.  The same negative number travels on the wire in an error
 * response's "code" field, so a client in any language can switch on it.
 * Numbers are stable: never renumber, never reuse a retired one.
 */
#ifndef KC_ERR_H
#define KC_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

enum kc_err {
    KC_OK = 0,
    KC_EINVAL = -1,        /* invalid argument or request field */
    KC_ENOMEM = -2,        /* out of memory */
    KC_ESYS = -3,          /* operating-system error (see log / errno) */
    KC_EPROTO = -4,        /* malformed frame or msgpack */
    KC_ETOOBIG = -5,       /* frame, message or field over a limit */
    KC_EVERSION = -6,      /* no protocol version in common */
    KC_EUNKNOWNOP = -7,    /* unknown op */
    KC_ENOKEY = -8,        /* unknown key alias */
    KC_EDENIED = -9,       /* permission denied */
    KC_EAUTH = -10,        /* authentication failed: tampered or wrong key */
    KC_EFORMAT = -11,      /* malformed ciphertext message */
    KC_EUNSUPPORTED = -12, /* valid but unsupported (suite, feature) */
    KC_ECONTEXT = -13,     /* encryption context invalid or mismatched */
    KC_EPROVIDER = -14,    /* key provider (KMS) failed */
    KC_ETIMEOUT = -15,     /* timed out */
    KC_ECONNECT = -16,     /* cannot connect to the agent */
    KC_ECLOSED = -17,      /* connection closed by the peer */
    KC_EBUSY = -18,        /* too many connections or requests in flight */
    KC_ESHUTDOWN = -19,    /* agent is shutting down */
    KC_ENODATAKEY = -20,   /* no encrypted data key could be unwrapped */
    KC_ECONFIG = -21,      /* invalid configuration */
    KC_EKEYFILE = -22,     /* master key file missing, bad size or mode */
};

/* Lowest (most negative) code currently defined; for table bounds. */
#define KC_ERR_MIN KC_EKEYFILE

/*
 * kc_strerror - human-readable text for a KC_E* code.
 * Returns a static string (never NULL); unknown codes give "unknown error".
 * Thread-safe.
 */
const char *kc_strerror(int code);

/*
 * kc_errname - the symbolic name of a code, e.g. "KC_EDENIED".
 * Returns a static string (never NULL); unknown codes give "KC_EUNKNOWN".
 * Thread-safe.
 */
const char *kc_errname(int code);

#ifdef __cplusplus
}
#endif

#endif /* KC_ERR_H */
