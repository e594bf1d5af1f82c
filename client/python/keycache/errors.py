"""Exceptions raised by the keycache client.

Every error the agent can report (proto/PROTOCOL.md section 5) maps to
one exception class per *family* of codes, so callers can catch what
they can act on::

    try:
        pt = client.decrypt(ct, context={"table": "users"})
    except keycache.ContextMismatchError:
        ...            # wrong row / column: a bug or tampering
    except keycache.UnavailableError:
        ...            # agent busy or restarting: retry later

Each exception carries ``code`` (the stable negative integer),
``name`` (e.g. ``"KC_ENOKEY"``), ``message`` (for people; never contains
plaintext or keys) and ``request_id`` (the request's id, or None).
All derive from :class:`KeycacheError`.
"""

# The codes, by name, exactly as in proto/PROTOCOL.md section 5.
KC_EINVAL = -1
KC_ENOMEM = -2
KC_ESYS = -3
KC_EPROTO = -4
KC_ETOOBIG = -5
KC_EVERSION = -6
KC_EUNKNOWNOP = -7
KC_ENOKEY = -8
KC_EDENIED = -9
KC_EAUTH = -10
KC_EFORMAT = -11
KC_EUNSUPPORTED = -12
KC_ECONTEXT = -13
KC_EPROVIDER = -14
KC_ETIMEOUT = -15
KC_ECONNECT = -16
KC_ECLOSED = -17
KC_EBUSY = -18
KC_ESHUTDOWN = -19
KC_ENODATAKEY = -20
KC_ECONFIG = -21
KC_EKEYFILE = -22

CODE_NAMES = {
    KC_EINVAL: "KC_EINVAL",
    KC_ENOMEM: "KC_ENOMEM",
    KC_ESYS: "KC_ESYS",
    KC_EPROTO: "KC_EPROTO",
    KC_ETOOBIG: "KC_ETOOBIG",
    KC_EVERSION: "KC_EVERSION",
    KC_EUNKNOWNOP: "KC_EUNKNOWNOP",
    KC_ENOKEY: "KC_ENOKEY",
    KC_EDENIED: "KC_EDENIED",
    KC_EAUTH: "KC_EAUTH",
    KC_EFORMAT: "KC_EFORMAT",
    KC_EUNSUPPORTED: "KC_EUNSUPPORTED",
    KC_ECONTEXT: "KC_ECONTEXT",
    KC_EPROVIDER: "KC_EPROVIDER",
    KC_ETIMEOUT: "KC_ETIMEOUT",
    KC_ECONNECT: "KC_ECONNECT",
    KC_ECLOSED: "KC_ECLOSED",
    KC_EBUSY: "KC_EBUSY",
    KC_ESHUTDOWN: "KC_ESHUTDOWN",
    KC_ENODATAKEY: "KC_ENODATAKEY",
    KC_ECONFIG: "KC_ECONFIG",
    KC_EKEYFILE: "KC_EKEYFILE",
}


class KeycacheError(Exception):
    """Base class: any failure reported by the agent or by this client."""

    #: the codes this class stands for (empty for the base class)
    codes = ()

    def __init__(self, message, code=None, name=None, request_id=None):
        if code is None:
            code = self.codes[0] if self.codes else 0
        if name is None:
            name = CODE_NAMES.get(code, "KC_E?%d" % code)
        self.code = code
        self.name = name
        self.message = message
        self.request_id = request_id
        super().__init__(message)

    def __str__(self):
        return "%s (%d): %s" % (self.name, self.code, self.message)

    def __repr__(self):
        return "%s(code=%d, name=%r, message=%r, request_id=%r)" % (
            type(self).__name__, self.code, self.name, self.message,
            self.request_id)

    def __reduce__(self):
        # Picklable with all its fields (multiprocessing, logging queues).
        return (_rebuild, (type(self), self.message, self.code, self.name,
                           self.request_id))


def _rebuild(cls, message, code, name, request_id):
    return cls(message, code=code, name=name, request_id=request_id)


class RequestError(KeycacheError):
    """The request was malformed or over a limit: a bug in the caller or in
    this client (KC_EINVAL, KC_EPROTO, KC_ETOOBIG, KC_EVERSION,
    KC_EUNKNOWNOP).  Retrying the same request will not help."""
    codes = (KC_EINVAL, KC_EPROTO, KC_ETOOBIG, KC_EVERSION, KC_EUNKNOWNOP)


class UnknownKeyError(RequestError):
    """The key alias is not in the agent's config (KC_ENOKEY)."""
    codes = (KC_ENOKEY,)


class PermissionDeniedError(KeycacheError):
    """The agent's policy does not allow this process the operation on
    this key (KC_EDENIED)."""
    codes = (KC_EDENIED,)


class DecryptionError(KeycacheError):
    """The ciphertext cannot be decrypted: tampered or wrong key
    (KC_EAUTH), malformed (KC_EFORMAT), not for any configured key
    (KC_ENODATAKEY), or a suite the agent does not accept
    (KC_EUNSUPPORTED)."""
    codes = (KC_EAUTH, KC_EFORMAT, KC_ENODATAKEY, KC_EUNSUPPORTED)


class ContextMismatchError(KeycacheError):
    """The encryption context is invalid (e.g. a reserved ``aws-crypto-``
    key) or, on decrypt, the message's context lacks or differs in a
    required pair (KC_ECONTEXT).  No plaintext was returned."""
    codes = (KC_ECONTEXT,)


class ProviderError(KeycacheError):
    """The key provider (KMS) failed (KC_EPROVIDER); often transient."""
    codes = (KC_EPROVIDER,)


class AgentError(KeycacheError):
    """The agent itself failed: out of memory, an operating-system error,
    a bad configuration or master key file (KC_ENOMEM, KC_ESYS,
    KC_ECONFIG, KC_EKEYFILE)."""
    codes = (KC_ENOMEM, KC_ESYS, KC_ECONFIG, KC_EKEYFILE)


class UnavailableError(KeycacheError):
    """The agent cannot take the request now: too many connections or
    requests (KC_EBUSY) or shutting down (KC_ESHUTDOWN).  Retry later."""
    codes = (KC_EBUSY, KC_ESHUTDOWN)


class KeycacheConnectionError(KeycacheError, ConnectionError):
    """Client side: cannot connect to the agent (KC_ECONNECT) or the agent
    closed the connection (KC_ECLOSED).  A request in flight when the
    connection broke may or may not have been served."""
    codes = (KC_ECONNECT, KC_ECLOSED)


class KeycacheTimeout(KeycacheError, TimeoutError):
    """A call did not complete within its timeout (KC_ETIMEOUT).  The
    connection is dropped (the next call reconnects); the request may
    still have been served."""
    codes = (KC_ETIMEOUT,)


FAMILIES = (RequestError, UnknownKeyError, PermissionDeniedError,
            DecryptionError, ContextMismatchError, ProviderError,
            AgentError, UnavailableError, KeycacheConnectionError,
            KeycacheTimeout)

_BY_CODE = {}
for _cls in FAMILIES:
    for _c in _cls.codes:
        _BY_CODE[_c] = _cls
del _cls, _c


def class_for_code(code):
    """The exception class for an error code (KeycacheError if unknown:
    codes are never reused, but a newer agent may add some)."""
    return _BY_CODE.get(code, KeycacheError)


def from_error_map(err, request_id=None):
    """Build the exception for a response's ``error`` map."""
    code = err.get("code") if isinstance(err, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return RequestError("agent sent an error without a valid code: %r"
                            % (err,), code=KC_EPROTO,
                            request_id=request_id)
    name = err.get("name")
    if not isinstance(name, str):
        name = CODE_NAMES.get(code, "KC_E?%d" % code)
    message = err.get("message")
    if not isinstance(message, str):
        message = ""
    return class_for_code(code)(message, code=code, name=name,
                                request_id=request_id)
