"""keycache: a pure-Python client for keycache-agent.

Speaks the wire protocol of proto/PROTOCOL.md over the agent's Unix
socket; needs only the standard library and msgpack (Debian:
python3-msgpack).  The agent does the cryptography; this package never
sees a key.

    import keycache

    with keycache.Client() as kc:               # $KEYCACHE_SOCKET
        ctx = {"table": "users", "column": "email"}
        ct = kc.encrypt("users-email", b"ada@example.org", ctx)
        pt = kc.decrypt(ct, ctx)                # context is required

        # pipelining: many requests in flight, replies matched by id
        with kc.pipeline() as p:
            replies = [p.encrypt("users-email", e, ctx) for e in emails]
        cts = kc.gather(replies)

Errors raise a subclass of :class:`KeycacheError` chosen by the agent's
error code (see :mod:`keycache.errors`).
"""

from .client import (DEFAULT_SOCKET, DEFAULT_TIMEOUT, MAX_BATCH_ITEMS,
                     PROTOCOL_VERSIONS, Client, DecryptResult, Pipeline,
                     Reply, connect, decrypt_item, encrypt_item)
from .errors import (CODE_NAMES, AgentError, ContextMismatchError,
                     DecryptionError, KeycacheConnectionError,
                     KeycacheError, KeycacheTimeout, PermissionDeniedError,
                     ProviderError, RequestError, UnavailableError,
                     UnknownKeyError, class_for_code)

__version__ = "0.1.0"

__all__ = [
    "Client", "connect", "Pipeline", "Reply", "DecryptResult",
    "encrypt_item", "decrypt_item",
    "KeycacheError", "RequestError", "UnknownKeyError",
    "PermissionDeniedError", "DecryptionError", "ContextMismatchError",
    "ProviderError", "AgentError", "UnavailableError",
    "KeycacheConnectionError", "KeycacheTimeout", "class_for_code",
    "CODE_NAMES", "DEFAULT_SOCKET", "DEFAULT_TIMEOUT", "MAX_BATCH_ITEMS",
    "PROTOCOL_VERSIONS",
]
