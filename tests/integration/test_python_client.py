#!/usr/bin/python3
"""The pure-Python client (client/python/keycache) against a real agent.

Round trips, hello/ping/stats/batch, pipelining 100 requests, replies out
of order (a fake agent that answers in reverse), timeouts against a fake
agent that never answers, every exception class (real agent where the
error can be provoked, a fake agent replying with each code for the
rest), fork safety, the context manager, and the encrypted-field
decorator example (client/python/examples/encrypted_field.py).

Everything runs on Unix sockets in scratch directories under /tmp.
Needs PYTHONPATH=client/python (meson sets it).
"""

import importlib.util
import os
import pickle
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import unittest

import msgpack

import harness as h

try:
    import keycache
    from keycache import errors as KE
except ImportError:  # pragma: no cover - meson sets PYTHONPATH
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                    "client", "python"))
    import keycache
    from keycache import errors as KE

ALIAS = "users-email"
CTX = {"table": "users", "column": "email"}
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "client", "python", "examples",
                       "encrypted_field.py")


# ------------------------------------------------------------ fake agents

def _read_frame(conn):
    hdr = b""
    while len(hdr) < 4:
        d = conn.recv(4 - len(hdr))
        if not d:
            return None
        hdr += d
    (n,) = struct.unpack(">I", hdr)
    body = b""
    while len(body) < n:
        d = conn.recv(n - len(body))
        if not d:
            return None
        body += d
    return msgpack.unpackb(body, raw=False)


def _send(conn, obj):
    body = msgpack.packb(obj, use_bin_type=True)
    conn.sendall(struct.pack(">I", len(body)) + body)


HELLO = {"ok": True, "version": 1, "agent": "fake-agent 0", "max_frame":
         1114112, "max_response": 1179648, "ops": ["hello", "ping"]}


class FakeAgent:
    """A scripted agent on a scratch socket; handler(conn, fake) runs per
    connection in its own thread.  Bounded: stops when closed."""

    def __init__(self, handler):
        self.dir = h.scratch_dir()
        self.path = os.path.join(self.dir, "fake.sock")
        self.handler = handler
        self.connections = 0
        self.received = []
        self.stop = threading.Event()
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(16)
        self.lsock.settimeout(0.1)
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,),
                             daemon=True).start()

    def _run(self, conn):
        try:
            self.handler(conn, self)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.lsock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def silent_handler(conn, fake):
    """Reads everything, answers nothing (not even hello)."""
    conn.settimeout(0.2)
    while not fake.stop.is_set():
        try:
            if _read_frame(conn) is None:
                return
        except socket.timeout:
            continue


def hello_then_silent(conn, fake):
    conn.settimeout(0.2)
    while not fake.stop.is_set():
        try:
            req = _read_frame(conn)
        except socket.timeout:
            continue
        if req is None:
            return
        fake.received.append(req)
        if req.get("op") == "hello":
            _send(conn, dict(HELLO, id=req["id"]))


def reverse_handler(batch):
    """Answers hello at once; collects `batch` requests, then answers
    them newest first (ping: ok; encrypt: ciphertext = b'ct:' + pt)."""
    def handler(conn, fake):
        conn.settimeout(5)
        held = []
        while True:
            req = _read_frame(conn)
            if req is None:
                return
            if req.get("op") == "hello":
                _send(conn, dict(HELLO, id=req["id"]))
                continue
            held.append(req)
            if len(held) == batch:
                fake.received.append([r["id"] for r in reversed(held)])
                for r in reversed(held):
                    out = {"id": r["id"], "ok": True}
                    if r.get("op") == "encrypt":
                        out["ciphertext"] = b"ct:" + r["plaintext"]
                    _send(conn, out)
                held = []
    return handler


def error_handler(conn, fake):
    """Every request but hello gets the error whose code is in the
    request's `code` field."""
    conn.settimeout(5)
    while True:
        req = _read_frame(conn)
        if req is None:
            return
        if req.get("op") == "hello":
            _send(conn, dict(HELLO, id=req["id"]))
            continue
        c = req.get("code", -1)
        _send(conn, {"id": req["id"], "ok": False, "error": {
            "code": c, "name": KE.CODE_NAMES.get(c, "KC_EFUTURE"),
            "message": "scripted error %d" % c}})


def refuse_handler(conn, fake):
    """Refuses the connection the way PROTOCOL.md says: id nil, close."""
    _send(conn, {"id": None, "ok": False, "error": {
        "code": KE.KC_EBUSY, "name": "KC_EBUSY",
        "message": "too many connections"}})
    conn.close()


# ------------------------------------------------------------------ tests

class PythonClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.setup = h.Setup({ALIAS: {}, "other": {}})
        cls.agent = cls.setup.start()
        cls.path = cls.setup.socket

    @classmethod
    def tearDownClass(cls):
        cls.agent.stop()

    def client(self, **kw):
        kw.setdefault("timeout", h.IO_TIMEOUT)
        return keycache.Client(self.path, **kw)

    # --- connect, hello, ping, stats

    def test_connect_env_hello_ping(self):
        h.say("Client() with no path uses $KEYCACHE_SOCKET, says hello")
        old = os.environ.get("KEYCACHE_SOCKET")
        os.environ["KEYCACHE_SOCKET"] = self.path
        try:
            with keycache.Client(timeout=5) as c:
                self.assertEqual(c.path, self.path)
                self.assertTrue(c.connected)
                self.assertEqual(c.server["version"], 1)
                self.assertIn("encrypt", c.server["ops"])
                self.assertTrue(c.server["agent"].startswith(
                    "keycache-agent"))
                self.assertEqual(c.max_frame, c.server["max_frame"])
                c.ping()
                self.assertEqual(c.hello()["version"], 1)
        finally:
            if old is None:
                del os.environ["KEYCACHE_SOCKET"]
            else:
                os.environ["KEYCACHE_SOCKET"] = old
        h.say("an explicit path wins over $KEYCACHE_SOCKET")
        os.environ["KEYCACHE_SOCKET"] = "/nonexistent/kc.sock"
        try:
            with keycache.Client(self.path, timeout=5) as c:
                c.ping()
        finally:
            del os.environ["KEYCACHE_SOCKET"]
            if old is not None:
                os.environ["KEYCACHE_SOCKET"] = old

    def test_round_trips(self):
        h.say("encrypt/decrypt round trips: sizes, str, contexts")
        with self.client() as c:
            cases = [b"", b"a", bytes(range(256)), os.urandom(4096),
                     os.urandom(1 << 20)]
            for pt in cases:
                ct = c.encrypt(ALIAS, pt, CTX)
                if len(pt) > 8:
                    self.assertNotIn(pt, ct)
                self.assertEqual(c.decrypt(ct, CTX), pt)
            ct = c.encrypt(ALIAS, "zoë@example.org", {"tenant": "ü"})
            self.assertEqual(c.decrypt(ct, {"tenant": "ü"}).decode(),
                             "zoë@example.org")
            h.say("no context on encrypt; {} on decrypt accepts any")
            ct = c.encrypt("other", b"no context")
            self.assertEqual(c.decrypt(ct, {}), b"no context")
            h.say("decrypt_full gives the alias and the full context")
            ct = c.encrypt(ALIAS, b"zq9secret", dict(CTX, row="7"))
            r = c.decrypt_full(ct, {"row": "7"})
            self.assertEqual(r.plaintext, b"zq9secret")
            self.assertEqual(r.key, ALIAS)
            self.assertEqual(r.context, dict(CTX, row="7"))
            self.assertNotIn("zq9secret", repr(r))
            h.say("decrypt without a context is refused by the client")
            with self.assertRaises(TypeError):
                c.decrypt(ct, None)
            with self.assertRaises(TypeError):
                c.decrypt(ct)  # pylint: disable=no-value-for-parameter
            with self.assertRaises(TypeError):
                c.encrypt(ALIAS, b"x", {"a": 1})

    def test_stats(self):
        with self.client() as c:
            before = c.stats()["keys"].get(ALIAS, {}).get("encrypt", 0)
            for _ in range(3):
                c.encrypt(ALIAS, b"s", CTX)
            st = c.stats()
            h.say("stats: encrypt counter %d -> %d"
                  % (before, st["keys"][ALIAS]["encrypt"]))
            self.assertGreaterEqual(st["keys"][ALIAS]["encrypt"],
                                    before + 3)
            for k in ("keys", "cache", "agent"):
                self.assertIn(k, st)

    def test_batch(self):
        h.say("batch: independent items, errors per item, not raised")
        with self.client() as c:
            good = c.encrypt(ALIAS, b"good", CTX)
            res = c.batch([
                keycache.encrypt_item(ALIAS, b"one", CTX),
                keycache.encrypt_item("no-such-alias", b"two"),
                keycache.decrypt_item(good, CTX),
                keycache.decrypt_item(good, {"column": "name"}),
                keycache.decrypt_item(b"garbage", {}),
            ])
            self.assertEqual(len(res), 5)
            self.assertEqual(c.decrypt(res[0], CTX), b"one")
            self.assertIsInstance(res[1], keycache.UnknownKeyError)
            self.assertEqual(res[2].plaintext, b"good")
            self.assertIsInstance(res[3], keycache.ContextMismatchError)
            self.assertIsInstance(res[4], keycache.DecryptionError)
            h.say("batch of 2500 items: split into 3 frames, in order")
            pts = [b"row-%d" % i for i in range(2500)]
            cts = c.batch(keycache.encrypt_item(ALIAS, p, CTX) for p in pts)
            self.assertEqual(len(cts), 2500)
            back = c.batch(keycache.decrypt_item(ct, CTX) for ct in cts)
            self.assertEqual([r.plaintext for r in back], pts)
            self.assertEqual(c.batch([]), [])

    # --- pipelining

    def test_pipelining_100(self):
        h.say("100 requests in flight on one connection, matched by id")
        with self.client() as c:
            reqs0 = c.stats()["agent"]["requests"]
            pts = [os.urandom(1 + i * 7) for i in range(100)]
            with c.pipeline() as p:
                replies = [p.encrypt(ALIAS, pt, dict(CTX, row=str(i)))
                           for i, pt in enumerate(pts)]
                self.assertEqual(len(p), 100)
            self.assertEqual(len({r.id for r in replies}), 100)
            # wait newest first: earlier replies are stored meanwhile
            cts = c.gather(list(reversed(replies)))[::-1]
            h.say("submit() one at a time, collect later, in reverse")
            dec = [c.submit("decrypt", ciphertext=ct,
                            context={"row": str(i)})
                   for i, ct in enumerate(cts)]
            for i in reversed(range(100)):
                self.assertEqual(dec[i].result()["plaintext"], pts[i])
            reqs1 = c.stats()["agent"]["requests"]
            h.say("agent counted %d requests for 200 pipelined"
                  % (reqs1 - reqs0 - 1))
            self.assertGreaterEqual(reqs1 - reqs0, 200)
            self.assertEqual(c.connects, 1)
            h.say("a failing request in a pipeline fails only itself")
            with c.pipeline() as p:
                a = p.encrypt(ALIAS, b"a", CTX)
                b = p.encrypt("no-such-alias", b"b")
                d = p.ping()
            self.assertIsInstance(b.exception(), keycache.UnknownKeyError)
            self.assertIsNone(d.result())
            self.assertEqual(c.decrypt(a.result(), CTX), b"a")
            res = c.gather([a, b, d], return_exceptions=True)
            self.assertIsInstance(res[1], keycache.UnknownKeyError)

    def test_out_of_order_replies(self):
        h.say("fake agent answers 100 pipelined requests newest first")
        with FakeAgent(reverse_handler(100)) as fake, \
                keycache.Client(fake.path, timeout=5) as c:
            with c.pipeline() as p:
                replies = [p.encrypt(ALIAS, b"%d" % i) for i in range(100)]
            got = c.gather(replies)
            self.assertEqual(got, [b"ct:%d" % i for i in range(100)])
            order = fake.received[0]
            self.assertEqual(order, sorted(order, reverse=True))

    # --- timeouts

    def test_timeout_silent_server(self):
        h.say("a server that never answers: hello times out in time")
        with FakeAgent(silent_handler) as fake:
            t0 = time.monotonic()
            with self.assertRaises(keycache.KeycacheTimeout) as cm:
                keycache.Client(fake.path, timeout=0.4)
            dt = time.monotonic() - t0
            h.say("connect+hello timed out after %.2fs (limit 0.4s)" % dt)
            self.assertGreaterEqual(dt, 0.35)
            self.assertLess(dt, 2.0)
            self.assertEqual(cm.exception.code, KE.KC_ETIMEOUT)
            self.assertIsInstance(cm.exception, TimeoutError)

        h.say("hello answered, ping not: ping(timeout=0.3) raises, all "
              "pending replies fail, the next call reconnects")
        with FakeAgent(hello_then_silent) as fake:
            c = keycache.Client(fake.path, timeout=5)
            pending = [c.submit("ping") for _ in range(3)]
            t0 = time.monotonic()
            with self.assertRaises(keycache.KeycacheTimeout):
                c.ping(timeout=0.3)
            dt = time.monotonic() - t0
            self.assertLess(dt, 1.5)
            self.assertFalse(c.connected)
            for r in pending:
                self.assertIsInstance(r.exception(), keycache.KeycacheTimeout)
            with self.assertRaises(keycache.KeycacheTimeout):
                c.ping(timeout=0.2)
            self.assertEqual(fake.connections, 2)
            self.assertEqual(c.connects, 2)
            c.close()

        h.say("nothing listening: KeycacheConnectionError (KC_ECONNECT)")
        d = h.scratch_dir()
        with self.assertRaises(keycache.KeycacheConnectionError) as cm:
            keycache.Client(os.path.join(d, "none.sock"), timeout=1)
        self.assertEqual(cm.exception.code, KE.KC_ECONNECT)
        self.assertIsInstance(cm.exception, ConnectionError)

    # --- errors

    def test_error_classes_real_agent(self):
        h.say("errors provoked on the real agent map to their classes")
        with self.client() as c:
            def expect(cls, code, fn):
                with self.assertRaises(cls) as cm:
                    fn()
                e = cm.exception
                self.assertEqual(e.code, code, repr(e))
                self.assertEqual(e.name, KE.CODE_NAMES[code])
                self.assertTrue(e.message)
                h.say("  %-15s -> %s" % (e.name, type(e).__name__))
                return e

            e = expect(keycache.RequestError, KE.KC_EINVAL,
                       lambda: c.submit("encrypt", key=5,
                                        plaintext=b"x").result())
            self.assertIsNotNone(e.request_id)
            expect(keycache.RequestError, KE.KC_EUNKNOWNOP,
                   lambda: c.submit("frobnicate").result())
            expect(keycache.RequestError, KE.KC_EVERSION,
                   lambda: c.submit("hello", versions=[99]).result())
            expect(keycache.RequestError, KE.KC_ETOOBIG,
                   lambda: c.encrypt(ALIAS, bytes((1 << 20) + 1)))
            expect(keycache.UnknownKeyError, KE.KC_ENOKEY,
                   lambda: c.encrypt("no-such-alias", b"x"))
            expect(keycache.ContextMismatchError, KE.KC_ECONTEXT,
                   lambda: c.encrypt(ALIAS, b"x", {"aws-crypto-x": "1"}))
            ct = c.encrypt(ALIAS, b"secret", CTX)
            expect(keycache.ContextMismatchError, KE.KC_ECONTEXT,
                   lambda: c.decrypt(ct, {"column": "name"}))
            expect(keycache.DecryptionError, KE.KC_EFORMAT,
                   lambda: c.decrypt(b"\x02not a message", {}))
            bad = bytearray(ct)
            bad[-80] ^= 1
            expect(keycache.DecryptionError, KE.KC_EAUTH,
                   lambda: c.decrypt(bytes(bad), {}))
            h.say("client-side limit: body over max_frame not sent")
            with self.assertRaises(keycache.RequestError) as cm:
                c.encrypt(ALIAS, bytes(c.max_frame + 1))
            self.assertEqual(cm.exception.code, KE.KC_ETOOBIG)
            c.ping()  # the connection is still fine
            self.assertEqual(c.connects, 1)

        h.say("ENODATAKEY: a message from an agent with other keys")
        s2 = h.Setup({"elsewhere": {}})
        a2 = s2.start()
        try:
            with keycache.Client(s2.socket, timeout=5) as c2:
                foreign = c2.encrypt("elsewhere", b"x")
            with self.client() as c:
                expect_e = self.assertRaises(keycache.DecryptionError)
                with expect_e as cm:
                    c.decrypt(foreign, {})
                self.assertEqual(cm.exception.code, KE.KC_ENODATAKEY)
                h.say("  %-15s -> %s" % (cm.exception.name,
                                         type(cm.exception).__name__))
        finally:
            a2.stop()

        h.say("EDENIED: decrypt allowed to another uid only")
        s3 = h.Setup({ALIAS: {"allow_decrypt": "uid:%d" % (os.getuid() + 1)
                              if os.getuid() != 65534 else "uid:0"}})
        a3 = s3.start()
        try:
            with keycache.Client(s3.socket, timeout=5) as c3:
                ct = c3.encrypt(ALIAS, b"x", CTX)
                with self.assertRaises(keycache.PermissionDeniedError) as cm:
                    c3.decrypt(ct, CTX)
                self.assertEqual(cm.exception.code, KE.KC_EDENIED)
                h.say("  %-15s -> %s" % (cm.exception.name,
                                         type(cm.exception).__name__))
        finally:
            a3.stop()

        h.say("EBUSY: max_connections=1 refuses a second client")
        s4 = h.Setup({ALIAS: {}}, agent_opts={"max_connections": "1"})
        a4 = s4.start()
        try:
            # the harness's start probe may still hold the one slot for
            # a moment: retry the first client (bounded)
            for _ in range(100):
                try:
                    first = keycache.Client(s4.socket, timeout=5)
                    break
                except keycache.UnavailableError:
                    time.sleep(0.05)
            with first:
                first.ping()
                with self.assertRaises(keycache.UnavailableError) as cm:
                    keycache.Client(s4.socket, timeout=5)
                self.assertEqual(cm.exception.code, KE.KC_EBUSY)
                h.say("  %-15s -> %s" % (cm.exception.name,
                                         type(cm.exception).__name__))
                first.ping()
        finally:
            a4.stop()

        h.say("ECLOSED: the agent goes away under a connected client")
        s5 = h.Setup({ALIAS: {}})
        a5 = s5.start()
        c5 = keycache.Client(s5.socket, timeout=5)
        c5.ping()
        a5.stop()
        with self.assertRaises(keycache.KeycacheConnectionError) as cm:
            c5.ping()
        self.assertIn(cm.exception.code, (KE.KC_ECLOSED, KE.KC_ECONNECT))
        h.say("  %-15s -> %s" % (cm.exception.name,
                                 type(cm.exception).__name__))
        h.say("the same client reconnects once an agent serves again")
        a5 = s5.start()
        try:
            c5.ping()
            self.assertEqual(c5.connects, 2)
            c5.close()
        finally:
            a5.stop()

    def test_every_code_maps_to_its_family(self):
        h.say("fake agent replies with each of the 22 codes (and -99)")
        want = {
            KE.KC_EINVAL: keycache.RequestError,
            KE.KC_ENOMEM: keycache.AgentError,
            KE.KC_ESYS: keycache.AgentError,
            KE.KC_EPROTO: keycache.RequestError,
            KE.KC_ETOOBIG: keycache.RequestError,
            KE.KC_EVERSION: keycache.RequestError,
            KE.KC_EUNKNOWNOP: keycache.RequestError,
            KE.KC_ENOKEY: keycache.UnknownKeyError,
            KE.KC_EDENIED: keycache.PermissionDeniedError,
            KE.KC_EAUTH: keycache.DecryptionError,
            KE.KC_EFORMAT: keycache.DecryptionError,
            KE.KC_EUNSUPPORTED: keycache.DecryptionError,
            KE.KC_ECONTEXT: keycache.ContextMismatchError,
            KE.KC_EPROVIDER: keycache.ProviderError,
            KE.KC_ETIMEOUT: keycache.KeycacheTimeout,
            KE.KC_ECONNECT: keycache.KeycacheConnectionError,
            KE.KC_ECLOSED: keycache.KeycacheConnectionError,
            KE.KC_EBUSY: keycache.UnavailableError,
            KE.KC_ESHUTDOWN: keycache.UnavailableError,
            KE.KC_ENODATAKEY: keycache.DecryptionError,
            KE.KC_ECONFIG: keycache.AgentError,
            KE.KC_EKEYFILE: keycache.AgentError,
        }
        self.assertEqual(sorted(want), list(range(-22, 0)))
        with FakeAgent(error_handler) as fake, \
                keycache.Client(fake.path, timeout=5) as c:
            with c.pipeline() as p:
                replies = {code: p.request("ping", code=code)
                           for code in list(want) + [-99]}
            for code, r in replies.items():
                e = r.exception()
                cls = want.get(code, keycache.KeycacheError)
                self.assertIs(type(e), cls, (code, e))
                self.assertEqual(e.code, code)
                self.assertEqual(e.name, KE.CODE_NAMES.get(code,
                                                           "KC_EFUTURE"))
                self.assertEqual(e.message, "scripted error %d" % code)
                self.assertEqual(e.request_id, r.id)
                self.assertIsInstance(e, keycache.KeycacheError)
                e2 = pickle.loads(pickle.dumps(e))
                self.assertEqual((type(e2), e2.code, e2.message),
                                 (type(e), e.code, e.message))
            # every error answered on one healthy connection
            self.assertEqual(c.connects, 1)
            families = {cls.__name__ for cls in want.values()}
            h.say("%d codes -> %d classes: %s" % (len(want), len(families),
                                                   ", ".join(sorted(
                                                       families))))

        h.say("a refusal (id nil, then close) raises UnavailableError")
        with FakeAgent(refuse_handler) as fake:
            with self.assertRaises(keycache.UnavailableError) as cm:
                keycache.Client(fake.path, timeout=5)
            self.assertIsNone(cm.exception.request_id)

        h.say("the refusal still wins when the hello meets a closed pipe")
        send = socket.socket.send

        def late_send(sock, *args):
            time.sleep(0.5)  # the fake answers and closes meanwhile
            return send(sock, *args)

        with FakeAgent(refuse_handler) as fake:
            socket.socket.send = late_send
            try:
                with self.assertRaises(keycache.UnavailableError) as cm:
                    keycache.Client(fake.path, timeout=5)
            finally:
                socket.socket.send = send
            self.assertEqual(cm.exception.code, KE.KC_EBUSY)

    # --- fork, context manager

    def test_fork(self):
        h.say("fork: the child reconnects; the parent's stream is intact")
        c = self.client()
        ct = c.encrypt(ALIAS, b"before fork", CTX)
        inflight = [c.submit("decrypt", ciphertext=ct, context=CTX)
                    for _ in range(10)]
        # replies that already arrived (read while sending) are complete
        # in both processes; the others belong to the parent's stream
        done_before = [r.done() for r in inflight]
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # child: report by exit status only
            code = 0
            try:
                if c.decrypt(ct, CTX) != b"before fork":
                    code = 2
                elif c.connects != 2:
                    code = 3
                elif not all(
                        r.result()["plaintext"] == b"before fork" if done
                        else isinstance(r.exception(),
                                        keycache.KeycacheConnectionError)
                        for r, done in zip(inflight, done_before)):
                    code = 4
                else:
                    with c.pipeline() as p:
                        rs = [p.encrypt(ALIAS, b"c%d" % i, CTX)
                              for i in range(50)]
                    if [c.decrypt(x, CTX) for x in c.gather(rs)] != \
                            [b"c%d" % i for i in range(50)]:
                        code = 5
            except BaseException:  # noqa: B902 - child must not escape
                code = 6
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFEXITED(status), status)
        self.assertEqual(os.WEXITSTATUS(status), 0,
                         "child failed check %d" % os.WEXITSTATUS(status))
        for r in inflight:
            self.assertEqual(r.result()["plaintext"], b"before fork")
        self.assertEqual(c.decrypt(ct, CTX), b"before fork")
        self.assertEqual(c.connects, 1)
        h.say("parent got its 10 in-flight replies on its first "
              "connection; child used its own")
        c.close()

    def test_context_manager(self):
        with self.client() as c:
            c.ping()
            self.assertTrue(c.connected)
        self.assertFalse(c.connected)
        with self.assertRaises(keycache.KeycacheConnectionError):
            c.ping()
        h.say("closed by the with block; explicit connect() reopens")
        c.connect()
        c.ping()
        c.close()
        c.close()  # idempotent
        lazy = keycache.Client(self.path, connect=False)
        self.assertFalse(lazy.connected)
        lazy.ping()
        self.assertTrue(lazy.connected)
        lazy.close()

    # --- the decorator example

    def load_example(self):
        spec = importlib.util.spec_from_file_location("encrypted_field",
                                                      EXAMPLE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    def test_decorator_example(self):
        h.say("encrypted_field decorator on a sqlite3 repository")
        ex = self.load_example()
        c = self.client()
        ex._shared["client"] = c
        repo = ex.UserRepository(sqlite3.connect(":memory:"))
        users = [ex.User(i, "U%d" % i, "u%d@example.org" % i)
                 for i in range(1, 31)]
        repo.add(users[0])
        repo.add_many(users[1:])
        self.assertEqual(users[0].email, "u1@example.org")  # not mutated
        raw = repo.raw_email(1)
        self.assertNotIn("example.org", raw)
        import base64
        ct = base64.b64decode(raw)
        self.assertEqual(c.decrypt(ct, ex.EMAIL_CONTEXT),
                         b"u1@example.org")
        self.assertEqual(repo.get(1), users[0])
        self.assertIsNone(repo.get(999))
        self.assertEqual(repo.all(), users)
        for u in users:
            self.assertNotIn(u.email, repo.raw_email(u.id))
        repo.update_email(ex.User(2, "U2", "new@example.org"))
        self.assertEqual(repo.get(2).email, "new@example.org")

        h.say("dicts and sqlite3.Row records work too")

        @ex.encrypted_field("email", key=ALIAS, context=ex.EMAIL_CONTEXT,
                            client=c)
        def rows(conn):
            conn.row_factory = sqlite3.Row
            try:
                return conn.execute("SELECT id, name, email FROM users "
                                    "WHERE id <= 3 ORDER BY id").fetchall()
            finally:
                conn.row_factory = None

        got = rows(repo.conn)
        self.assertEqual([r["email"] for r in got],
                         ["u1@example.org", "new@example.org",
                          "u3@example.org"])

        h.say("a ciphertext moved to another column is refused")

        @ex.encrypted_field("name", key=ALIAS,
                            context={"table": "users", "column": "name"},
                            client=c)
        def read_name(conn, uid):
            r = conn.execute("SELECT id, name FROM users WHERE id = ?",
                             (uid,)).fetchone()
            return {"id": r[0], "name": r[1]}

        repo.conn.execute("UPDATE users SET name = email WHERE id = 1")
        with self.assertRaises(keycache.ContextMismatchError):
            read_name(repo.conn, 1)
        c.close()

        h.say("the example script itself, against the agent")
        env = dict(os.environ, KEYCACHE_SOCKET=self.path)
        p = subprocess.run([sys.executable, EXAMPLE, "--count", "40"],
                           env=env, capture_output=True, text=True,
                           timeout=60)
        sys.stdout.write("".join("    | " + line + "\n"
                                 for line in p.stdout.splitlines()))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("40 users written and read back, 0 differ, 0 stored "
                      "in plaintext", p.stdout)


if __name__ == "__main__":
    h.run_tests()
