"""The keycache client: one connection to keycache-agent.

Written from proto/PROTOCOL.md alone (framing: 4-byte big-endian length
+ one MessagePack map; requests matched to replies by ``id``).

Semantics worth knowing:

* **Pipelining.**  :meth:`Client.submit` (and :meth:`Client.pipeline`)
  send a request without waiting and return a :class:`Reply`; replies are
  matched by id, so the agent may answer in any order.  Waiting on one
  reply stores any other replies that arrive first.
* **Timeouts.**  Every call completes or raises :class:`KeycacheTimeout`
  within its timeout (the client's default unless given).  A timeout, a
  closed connection or a protocol violation drops the connection: every
  reply still pending on it fails with that error, and the next call
  reconnects.  Requests are never retried by the client; one that timed
  out may still have been served.
* **Fork safety.**  The connection remembers the pid that made it.  Used
  in a different process (after ``os.fork()``), the client closes its
  copy of the inherited descriptor (without touching the parent's
  stream), forgets the parent's pending replies and reconnects.
* **Threads.**  A client may be shared by threads; its I/O is
  serialised by a lock.  For throughput, use one client per thread or
  pipelining.
"""

import os
import select
import socket
import struct
import threading
import time

import msgpack

from . import errors as E

DEFAULT_SOCKET = "/run/keycache/agent.sock"
DEFAULT_TIMEOUT = 30.0
PROTOCOL_VERSIONS = (1,)
#: defaults from PROTOCOL.md until the agent's hello says otherwise
DEFAULT_MAX_FRAME = 1114112
DEFAULT_MAX_RESPONSE = DEFAULT_MAX_FRAME + 65536
MAX_BATCH_ITEMS = 1024
_MAX_ID = (1 << 64) - 1
_HDR = struct.Struct(">I")


def _pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def _as_bytes(data, what):
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError("%s must be bytes or str, not %s"
                    % (what, type(data).__name__))


def _as_context(context, what="context"):
    if context is None:
        return None
    try:
        items = context.items()
    except AttributeError:
        raise TypeError("%s must be a mapping of str to str, not %s"
                        % (what, type(context).__name__)) from None
    out = {}
    for k, v in items:
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("%s keys and values must be str (got %r: %r)"
                            % (what, type(k).__name__, type(v).__name__))
        out[k] = v
    return out


class DecryptResult:
    """A decrypt reply: ``plaintext`` (bytes), ``key`` (the alias that
    unwrapped the data key) and ``context`` (the message's full context).
    ``repr`` never shows the plaintext."""

    __slots__ = ("plaintext", "key", "context")

    def __init__(self, plaintext, key, context):
        self.plaintext = plaintext
        self.key = key
        self.context = context

    def __repr__(self):
        return "DecryptResult(key=%r, context=%r, plaintext=<%d bytes>)" % (
            self.key, self.context, len(self.plaintext))


# ------------------------------------------------------ result transforms

def _field(resp, name, types):
    v = resp.get(name)
    if not isinstance(v, types):
        raise E.RequestError("agent reply lacks a valid %r field" % name,
                             code=E.KC_EPROTO, request_id=resp.get("id"))
    return v


def _res_none(resp):
    return None


def _res_ciphertext(resp):
    return bytes(_field(resp, "ciphertext", (bytes, bytearray)))


def _res_decrypt_full(resp):
    pt = _field(resp, "plaintext", (bytes, bytearray))
    key = resp.get("key")
    ctx = resp.get("context")
    return DecryptResult(bytes(pt), key if isinstance(key, str) else None,
                         ctx if isinstance(ctx, dict) else {})


def _res_plaintext(resp):
    return bytes(_field(resp, "plaintext", (bytes, bytearray)))


def _res_stats(resp):
    return _field(resp, "stats", dict)


def _res_hello(resp):
    return {k: v for k, v in resp.items() if k not in ("id", "ok")}


_ITEM_RESULT = {"encrypt": _res_ciphertext, "decrypt": _res_decrypt_full}


class Reply:
    """A request in flight.  :meth:`result` waits for it."""

    __slots__ = ("id", "op", "_client", "_transform", "_done", "_value",
                 "_error")

    def __init__(self, client, rid, op, transform):
        self.id = rid
        self.op = op
        self._client = client
        self._transform = transform
        self._done = False
        self._value = None
        self._error = None

    def done(self):
        """True once a reply (or a failure) has been recorded."""
        return self._done

    def result(self, timeout=None):
        """The op's result; raises the mapped :class:`KeycacheError`."""
        if not self._done:
            self._client._wait(self, timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout=None):
        """The error the request failed with, or None (waits first)."""
        try:
            self.result(timeout)
        except E.KeycacheError as e:
            return e
        return None

    # called by the client, under its lock
    def _set_response(self, resp):
        self._done = True
        if resp.get("ok") is True:
            try:
                self._value = self._transform(resp)
            except E.KeycacheError as e:
                self._error = e
        else:
            self._error = E.from_error_map(resp.get("error"), self.id)

    def _fail(self, exc):
        if not self._done:
            self._done = True
            self._error = exc

    def __repr__(self):
        state = "done" if self._done else "pending"
        return "<Reply id=%d op=%s %s>" % (self.id, self.op, state)


class Pipeline:
    """Requests queued locally and sent in one write on :meth:`flush` (or
    when the ``with`` block ends).  Each method returns a :class:`Reply`.
    """

    def __init__(self, client):
        self._client = client
        self._queued = []  # (reply, frame bytes)

    def _add(self, op, transform, fields):
        reply, frame = self._client._prepare(op, transform, fields)
        self._queued.append((reply, frame))
        return reply

    def ping(self):
        return self._add("ping", _res_none, {})

    def encrypt(self, key, plaintext, context=None):
        return self._add("encrypt", _res_ciphertext,
                         _encrypt_fields(key, plaintext, context))

    def decrypt(self, ciphertext, context):
        return self._add("decrypt", _res_plaintext,
                         _decrypt_fields(ciphertext, context))

    def decrypt_full(self, ciphertext, context):
        return self._add("decrypt", _res_decrypt_full,
                         _decrypt_fields(ciphertext, context))

    def request(self, op, **fields):
        """Any op; the reply's result is the raw response map."""
        return self._add(op, lambda r: r, fields)

    def __len__(self):
        return len(self._queued)

    def flush(self, timeout=None):
        """Send everything queued; returns the replies in queue order."""
        queued, self._queued = self._queued, []
        if queued:
            self._client._send_many(queued, timeout)
        return [r for r, _ in queued]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.flush()
        else:
            self._queued = []
        return False


def _encrypt_fields(key, plaintext, context):
    if not isinstance(key, str):
        raise TypeError("key must be a str alias, not %s"
                        % type(key).__name__)
    f = {"key": key, "plaintext": _as_bytes(plaintext, "plaintext")}
    ctx = _as_context(context)
    if ctx is not None:
        f["context"] = ctx
    return f


def _decrypt_fields(ciphertext, context):
    if context is None:
        raise TypeError(
            "decrypt requires the context the ciphertext must carry, e.g. "
            "{'table': 'users', 'column': 'email'}; pass {} explicitly to "
            "accept any context")
    return {"ciphertext": _as_bytes(ciphertext, "ciphertext"),
            "context": _as_context(context)}


def encrypt_item(key, plaintext, context=None):
    """A batch item for :meth:`Client.batch`: encrypt."""
    f = _encrypt_fields(key, plaintext, context)
    f["op"] = "encrypt"
    return f


def decrypt_item(ciphertext, context):
    """A batch item for :meth:`Client.batch`: decrypt (context required)."""
    f = _decrypt_fields(ciphertext, context)
    f["op"] = "decrypt"
    return f


class Client:
    """A connection to keycache-agent.

    path: the agent's socket; None means ``$KEYCACHE_SOCKET``, then
      ``/run/keycache/agent.sock``.
    timeout: default limit in seconds for each call (connect and hello
      included); every method also takes ``timeout=``.
    connect: connect (and say hello) now; False defers to the first call.
    """

    def __init__(self, path=None, timeout=DEFAULT_TIMEOUT, connect=True):
        if path is None:
            path = os.environ.get("KEYCACHE_SOCKET") or DEFAULT_SOCKET
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if len(os.fsencode(path)) >= 108:
            raise E.RequestError("socket path too long for a Unix socket "
                                 "(%d bytes)" % len(os.fsencode(path)),
                                 code=E.KC_EINVAL)
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.path = path
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._sock = None
        self._pid = None
        self._rbuf = bytearray()
        self._pending = {}
        self._next_id = 1
        self._closed = False
        #: hello reply of the current connection (agent, version, ...)
        self.server = {}
        self.max_frame = DEFAULT_MAX_FRAME
        self.max_response = DEFAULT_MAX_RESPONSE
        #: number of connections made (a fork or a dropped one adds one)
        self.connects = 0
        if connect:
            self.connect()

    # ------------------------------------------------------------ lifecycle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<keycache.Client %s %s>" % (
            self.path, "connected" if self._sock is not None else
            "closed" if self._closed else "not connected")

    def close(self):
        """Close the connection; pending replies fail.  Idempotent."""
        with self._lock:
            self._closed = True
            self._drop(E.KeycacheConnectionError("client closed",
                                                 code=E.KC_ECLOSED))

    @property
    def connected(self):
        return self._sock is not None and self._pid == os.getpid()

    def connect(self, timeout=None):
        """Connect and say hello now (no-op when connected)."""
        with self._lock:
            self._closed = False
            self._check_fork()
            if self._sock is None:
                self._connect(self._deadline(timeout))

    def _deadline(self, timeout):
        t = self.timeout if timeout is None else timeout
        if t is None or t <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        return time.monotonic() + t

    def _check_fork(self):
        """In a forked child: forget the parent's connection.

        The descriptor is closed without shutdown(), which would end the
        parent's stream too; the parent's pending replies are not ours.
        """
        if self._sock is not None and self._pid != os.getpid():
            sock, self._sock = self._sock, None
            try:
                os.close(sock.detach())
            except OSError:
                pass
            self._forget_inherited()

    def _forget_inherited(self):
        exc = E.KeycacheConnectionError(
            "request was made before fork() in another process",
            code=E.KC_ECLOSED)
        for r in list(self._pending.values()):
            r._fail(exc)
        self._pending.clear()
        self._rbuf = bytearray()

    def _connect(self, deadline):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            s.connect(self.path)
        except socket.timeout:
            s.close()
            raise E.KeycacheTimeout("connecting to %s timed out" % self.path)
        except OSError as e:
            s.close()
            raise E.KeycacheConnectionError(
                "cannot connect to the agent at %s: %s"
                % (self.path, e.strerror or e), code=E.KC_ECONNECT) from None
        self._sock = s
        self._pid = os.getpid()
        self._rbuf = bytearray()
        self.connects += 1
        self.max_frame = DEFAULT_MAX_FRAME
        self.max_response = DEFAULT_MAX_RESPONSE
        self.server = {}
        # hello: first on the connection, as the protocol asks
        reply, frame = self._prepare("hello", _res_hello,
                                     {"versions": list(PROTOCOL_VERSIONS)})
        self._send_many([(reply, frame)], None, deadline=deadline,
                        connecting=True)
        self._wait(reply, None, deadline=deadline)
        if reply._error is not None:
            self._drop(reply._error)
            raise reply._error
        info = reply._value
        mf, mr = info.get("max_frame"), info.get("max_response")
        if isinstance(mf, int) and mf > 0:
            self.max_frame = mf
        if isinstance(mr, int) and mr > 0:
            self.max_response = mr
        self.server = info

    def _drop(self, exc):
        """Close the connection and fail every pending reply with exc."""
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._pid == os.getpid():
                try:
                    sock.close()
                except OSError:
                    pass
            else:
                try:
                    os.close(sock.detach())
                except OSError:
                    pass
        for r in list(self._pending.values()):
            r._fail(exc)
        self._pending.clear()
        self._rbuf = bytearray()

    # ---------------------------------------------------------------- I/O

    def _prepare(self, op, transform, fields):
        """A Reply with a fresh id and its encoded frame (not yet sent)."""
        with self._lock:
            rid = self._next_id
            self._next_id = rid + 1 if rid < _MAX_ID else 1
        msg = {"id": rid, "op": op}
        msg.update(fields)
        body = _pack(msg)
        if len(body) > self.max_frame:
            raise E.RequestError(
                "request body of %d bytes exceeds the agent's max_frame %d"
                % (len(body), self.max_frame), code=E.KC_ETOOBIG)
        return Reply(self, rid, op, transform), _HDR.pack(len(body)) + body

    def _send_many(self, queued, timeout, deadline=None, connecting=False):
        """Register and send frames; reads replies meanwhile so a long
        pipeline cannot deadlock against a full socket buffer."""
        with self._lock:
            if deadline is None:
                deadline = self._deadline(timeout)
            if not connecting:
                if self._closed:
                    raise E.KeycacheConnectionError("client is closed",
                                                    code=E.KC_ECLOSED)
                self._check_fork()
                if self._sock is None:
                    self._connect(deadline)
            for reply, _ in queued:
                if reply.id in self._pending:
                    raise E.RequestError("duplicate request id %d"
                                         % reply.id, code=E.KC_EINVAL)
                self._pending[reply.id] = reply
            data = memoryview(b"".join(f for _, f in queued))
            sock = self._sock
            off = 0
            try:
                while off < len(data):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout()
                    r, w, _ = select.select([sock], [sock], [], left)
                    if r:
                        self._fill(sock)
                        self._dispatch_ready()
                        if self._sock is not sock:
                            return  # dropped while dispatching
                    if w:
                        try:
                            off += sock.send(data[off:off + (1 << 20)],
                                             socket.MSG_DONTWAIT)
                        except (BlockingIOError, InterruptedError):
                            pass
            except socket.timeout:
                self._drop(E.KeycacheTimeout(
                    "sending to the agent timed out"))
                raise E.KeycacheTimeout("sending to the agent timed out")
            except (BrokenPipeError, ConnectionResetError) as e:
                # An agent that refuses a connection says why in one frame
                # and closes: deliver what it sent before the close, so
                # the refusal is what the caller sees, not the closed pipe.
                if self._drain_last_words(sock):
                    return
                exc = E.KeycacheConnectionError(
                    "agent closed the connection (%s)" % e.strerror,
                    code=E.KC_ECLOSED)
                self._drop(exc)
                raise exc from None
            except _Dropped:
                return

    def _drain_last_words(self, sock):
        """Dispatch what a closed peer sent before closing; True when
        that dropped the connection (its replies failed with the reason
        it gave, or with KC_ECLOSED at the end of its bytes)."""
        try:
            while self._sock is sock:
                before = len(self._rbuf)
                self._fill(sock)
                if len(self._rbuf) == before:
                    break  # nothing more to read now
                self._dispatch_ready()
        except _Dropped:
            pass
        return self._sock is not sock

    def _fill(self, sock):
        """Read what is available into the buffer; raise _Dropped (after
        failing pending replies) on EOF or reset."""
        try:
            chunk = sock.recv(1 << 18, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""  # reset, or the descriptor went away: closed
        if not chunk:
            self._drop(E.KeycacheConnectionError(
                "agent closed the connection", code=E.KC_ECLOSED))
            raise _Dropped()
        self._rbuf += chunk

    def _dispatch_ready(self):
        """Decode and hand out every complete frame in the buffer."""
        while True:
            if len(self._rbuf) < 4:
                return
            (n,) = _HDR.unpack_from(self._rbuf, 0)
            if n == 0 or n > self.max_response:
                self._protocol_error("agent sent a frame length of %d" % n)
            if len(self._rbuf) < 4 + n:
                return
            body = bytes(self._rbuf[4:4 + n])
            del self._rbuf[:4 + n]
            try:
                resp = msgpack.unpackb(body, raw=False, use_list=True,
                                       strict_map_key=False)
            except Exception as e:
                self._protocol_error("agent sent a body that is not one "
                                     "MessagePack value (%s)"
                                     % type(e).__name__)
            if not isinstance(resp, dict) or \
                    not isinstance(resp.get("ok"), bool):
                self._protocol_error("agent sent a reply that is not a map "
                                     "with a boolean 'ok'")
            rid = resp.get("id")
            if rid is None:
                # Not attributable to a request: the agent refused the
                # connection or could not parse something.  Fail all.
                exc = E.from_error_map(resp.get("error"))
                self._drop(exc)
                raise _Dropped()
            reply = self._pending.pop(rid, None)
            if reply is not None:
                reply._set_response(resp)
            # else: a reply nobody waits for any more; ignore it

    def _protocol_error(self, msg):
        self._drop(E.RequestError(msg, code=E.KC_EPROTO))
        raise _Dropped()

    def _wait(self, reply, timeout, deadline=None):
        with self._lock:
            if deadline is None:
                deadline = self._deadline(timeout)
            self._check_fork()  # in a child: fails inherited replies
            while not reply._done:
                sock = self._sock
                if sock is None or reply.id not in self._pending:
                    reply._fail(E.KeycacheConnectionError(
                        "connection dropped before the reply arrived",
                        code=E.KC_ECLOSED))
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    exc = E.KeycacheTimeout(
                        "no reply from the agent within the timeout "
                        "(request id %d, op %s)" % (reply.id, reply.op),
                        request_id=reply.id)
                    self._drop(exc)
                    break
                try:
                    r, _, _ = select.select([sock], [], [], left)
                except InterruptedError:
                    continue
                if not r:
                    continue
                try:
                    self._fill(sock)
                    self._dispatch_ready()
                except _Dropped:
                    pass

    # ------------------------------------------------------------ requests

    def submit(self, op, timeout=None, **fields):
        """Send any op now and return its :class:`Reply` (raw map result)."""
        return self._submit(op, lambda r: r, fields, timeout)

    def _submit(self, op, transform, fields, timeout):
        reply, frame = self._prepare(op, transform, fields)
        self._send_many([(reply, frame)], timeout)
        return reply

    def _call(self, op, transform, fields, timeout):
        deadline = self._deadline(timeout)
        reply, frame = self._prepare(op, transform, fields)
        self._send_many([(reply, frame)], None, deadline=deadline)
        self._wait(reply, None, deadline=deadline)
        return reply.result()

    def pipeline(self):
        """A :class:`Pipeline`: queue requests, send them in one write."""
        return Pipeline(self)

    def gather(self, replies, timeout=None, return_exceptions=False):
        """Results of many replies, in order, within one timeout."""
        deadline = self._deadline(timeout)
        out = []
        for r in replies:
            if not r._done:
                self._wait(r, None, deadline=deadline)
            if r._error is not None:
                if not return_exceptions:
                    raise r._error
                out.append(r._error)
            else:
                out.append(r._value)
        return out

    def hello(self, timeout=None):
        """The agent's hello reply (version, agent, max_frame, ops...)."""
        return self._call("hello", _res_hello,
                          {"versions": list(PROTOCOL_VERSIONS)}, timeout)

    def ping(self, timeout=None):
        self._call("ping", _res_none, {}, timeout)

    def encrypt(self, key, plaintext, context=None, timeout=None):
        """Encrypt under key alias; returns the ciphertext (bytes).  A str
        plaintext is encoded as UTF-8."""
        return self._call("encrypt", _res_ciphertext,
                          _encrypt_fields(key, plaintext, context), timeout)

    def decrypt(self, ciphertext, context, timeout=None):
        """Decrypt; returns the plaintext (bytes).  ``context`` is
        required: the pairs the message's context must contain (pass {}
        explicitly to accept any)."""
        return self._call("decrypt", _res_plaintext,
                          _decrypt_fields(ciphertext, context), timeout)

    def decrypt_full(self, ciphertext, context, timeout=None):
        """Like decrypt but returns a :class:`DecryptResult` with the key
        alias and the message's full context."""
        return self._call("decrypt", _res_decrypt_full,
                          _decrypt_fields(ciphertext, context), timeout)

    def stats(self, timeout=None):
        """The agent's stats map (keys, cache, agent)."""
        return self._call("stats", _res_stats, {}, timeout)

    def batch(self, items, timeout=None):
        """Run many encrypt/decrypt items (see :func:`encrypt_item`,
        :func:`decrypt_item`).  Returns one entry per item, in order: the
        ciphertext (bytes) for encrypt, a :class:`DecryptResult` for
        decrypt, or the item's :class:`KeycacheError` instance (not
        raised: items are independent).  More than 1024 items are split
        into several batch requests, pipelined.  Raises only for the
        batch as a whole (connection, timeout, malformed batch)."""
        items = list(items)
        if not items:
            return []
        for it in items:
            if not isinstance(it, dict) or it.get("op") not in _ITEM_RESULT:
                raise TypeError("batch items are maps with op 'encrypt' or "
                                "'decrypt' (use encrypt_item/decrypt_item)")
        deadline = self._deadline(timeout)
        chunks = [items[i:i + MAX_BATCH_ITEMS]
                  for i in range(0, len(items), MAX_BATCH_ITEMS)]
        queued = []
        for chunk in chunks:
            ops = [it["op"] for it in chunk]
            queued.append(self._prepare(
                "batch", lambda r, ops=ops: _batch_results(r, ops),
                {"items": chunk}))
        self._send_many(queued, None, deadline=deadline)
        out = []
        for reply, _ in queued:
            self._wait(reply, None, deadline=deadline)
            out.extend(reply.result())
        return out


def _batch_results(resp, ops):
    results = _field(resp, "results", list)
    if len(results) != len(ops):
        raise E.RequestError("batch reply has %d results for %d items"
                             % (len(results), len(ops)), code=E.KC_EPROTO,
                             request_id=resp.get("id"))
    out = []
    for op, item in zip(ops, results):
        if not isinstance(item, dict):
            out.append(E.RequestError("batch result is not a map",
                                      code=E.KC_EPROTO))
        elif item.get("ok") is True:
            try:
                out.append(_ITEM_RESULT[op](item))
            except E.KeycacheError as e:
                out.append(e)
        else:
            out.append(E.from_error_map(item.get("error"),
                                        resp.get("id")))
    return out


class _Dropped(Exception):
    """Internal: the connection was dropped while reading."""


def connect(path=None, timeout=DEFAULT_TIMEOUT):
    """Shorthand for :class:`Client` (path None: $KEYCACHE_SOCKET)."""
    return Client(path, timeout=timeout)
