"""Agent lifecycle, socket handling, configuration errors and logging."""

import base64
import os
import resource
import signal
import socket
import subprocess
import time
import unittest

import harness as h
from harness import Agent, Client, frame, pack, say

ALIAS = "users-email"


def start_failing(setup=None, config=None, sock=None, args=(), env=None):
    """Run an agent that must refuse to start; return (rc, log text)."""
    if setup is not None:
        config, sock = setup.config, setup.socket
    a = Agent(config, sock, args=args, env=env)
    a.spawn()
    rc = a.wait_exit()
    return rc, a.log()


class LifecycleTest(unittest.TestCase):
    def test_sigterm(self):
        say("SIGTERM: exit 0, socket unlinked")
        s = h.Setup()
        a = s.start()
        h.assert_serving(s.socket)
        a.stop(signal.SIGTERM)
        self.assertFalse(os.path.lexists(s.socket))

    def test_sigint(self):
        say("SIGINT: exit 0, socket unlinked")
        s = h.Setup()
        a = s.start()
        h.assert_serving(s.socket)
        a.stop(signal.SIGINT)
        self.assertFalse(os.path.lexists(s.socket))

    def test_sigterm_idle_connection(self):
        say("SIGTERM with an idle client connected still exits 0 promptly")
        s = h.Setup()
        a = s.start()
        c = Client(s.socket)
        c.ping()
        t0 = time.monotonic()
        a.stop(signal.SIGTERM, timeout=10)
        say("exited in %.2fs" % (time.monotonic() - t0))
        self.assertTrue(c.is_closed(timeout=2.0),
                        "idle connection not closed at shutdown")
        c.close()

    def test_sigterm_with_requests_in_flight(self):
        say("SIGTERM amid pipelined encrypts: every request already sent "
            "is answered before the connection closes; exit 0")
        s = h.Setup()
        a = s.start()
        c = Client(s.socket)
        n = 48
        c.send_raw(b"".join(
            frame(pack({"id": i, "op": "encrypt", "key": ALIAS,
                        "plaintext": os.urandom(2048)}))
            for i in range(n)))
        first = c.recv()
        self.assertIs(first["ok"], True, first)
        a.send_signal(signal.SIGTERM)
        seen = {first["id"]}
        while True:
            r = c.recv_or_closed(timeout=10)
            if r is None:
                break
            self.assertNotIn(r["id"], seen)
            seen.add(r["id"])
            if r["ok"] is False:
                h.expect_error(r, h.KC_ESHUTDOWN)
        say("%d of %d answered before close" % (len(seen), n))
        self.assertEqual(len(seen), n)
        c.close()
        a.stop()

    def test_sigterm_while_paused_by_backpressure(self):
        say("SIGTERM while the agent has stopped reading a client that "
            "does not read (replies past 256 KiB): every complete frame "
            "that reached the agent is still answered")
        s = h.Setup()
        a = s.start()
        c = Client(s.socket, timeout=20)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        n, pt = 400, os.urandom(4096)
        frames = [frame(pack({"id": i, "op": "encrypt", "key": ALIAS,
                              "plaintext": pt})) for i in range(n)]
        blob = b"".join(frames)
        c.sock.setblocking(False)
        sent, t0 = 0, time.monotonic()
        while sent < len(blob) and time.monotonic() - t0 < 5:
            try:
                sent += c.sock.send(blob[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        c.sock.setblocking(True)
        whole = sent // len(frames[0])
        say("the agent took %d of %d bytes: %d whole frames"
            % (sent, len(blob), whole))
        self.assertLess(whole, n, "the agent read everything: no pause")
        time.sleep(0.5)
        a.send_signal(signal.SIGTERM)
        seen = set()
        while True:
            r = c.recv_or_closed(timeout=15)
            if r is None:
                break
            self.assertIs(r["ok"], True, r)
            self.assertNotIn(r["id"], seen)
            seen.add(r["id"])
        say("%d answered before close" % len(seen))
        self.assertEqual(seen, set(range(whole)))
        c.close()
        a.stop()

    def test_socket_flag_and_env(self):
        s = h.Setup()
        alt = os.path.join(s.dir, "flag.sock")
        say("--socket overrides the config's socket")
        a = Agent(s.config, alt, args=["--socket", alt])
        a.start()
        self.assertFalse(os.path.exists(s.socket))
        h.assert_serving(alt)
        a.stop()
        say("KEYCACHE_SOCKET is used when the config names no socket")
        cfg = os.path.join(s.dir, "nosock.ini")
        agent_opts = dict(s.agent_opts)
        del agent_opts["socket"]
        h.write_config(cfg, agent_opts, s.key_sections)
        envsock = os.path.join(s.dir, "env.sock")
        a = Agent(cfg, envsock, env={"KEYCACHE_SOCKET": envsock})
        a.start()
        h.assert_serving(envsock)
        a.stop()


class SocketTest(unittest.TestCase):
    def test_stale_socket_replaced(self):
        say("a stale socket file (no listener) is replaced on start")
        s = h.Setup()
        old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old.bind(s.socket)
        old.close()
        self.assertTrue(os.path.exists(s.socket))
        a = s.start()
        h.assert_serving(s.socket)
        a.stop()

    def test_stale_socket_of_dead_process(self):
        say("a socket left by a killed process is replaced on start")
        s = h.Setup()
        p = subprocess.Popen(
            ["/usr/bin/python3", "-c",
             "import socket,sys,time\n"
             "s=socket.socket(socket.AF_UNIX)\n"
             "s.bind(sys.argv[1]); s.listen(1)\n"
             "print('up', flush=True); time.sleep(30)\n", s.socket],
            stdout=subprocess.PIPE)
        try:
            self.assertEqual(p.stdout.readline().strip(), b"up")
        finally:
            p.kill()
            p.wait(timeout=10)
            p.stdout.close()
        a = s.start()
        h.assert_serving(s.socket)
        a.stop()

    def test_live_socket_refused(self):
        say("a second agent on a live agent's socket: clear error, "
            "non-zero exit; the first keeps serving")
        s = h.Setup()
        a = s.start()
        rc, log = start_failing(s)
        say("second agent exit %d: %s" % (rc, log.strip()[-200:]))
        self.assertNotEqual(rc, 0)
        self.assertTrue(s.socket in log or "in use" in log.lower()
                        or "running" in log.lower(),
                        "error does not say the socket is in use:\n" + log)
        self.assertTrue(os.path.exists(s.socket))
        h.assert_serving(s.socket)
        a.stop()

    def test_path_too_long(self):
        say("socket path longer than sun_path: clear error, non-zero exit")
        s = h.Setup()
        d = s.dir
        while len(d) < 100:
            d = os.path.join(d, "d" * 20)
            os.mkdir(d)
        long_path = os.path.join(d, "x" * 40 + ".sock")
        self.assertGreater(len(long_path), 107)
        rc, log = start_failing(config=s.config, sock=long_path,
                                args=["--socket", long_path])
        say("exit %d: %s" % (rc, log.strip()[-200:]))
        self.assertNotEqual(rc, 0)
        self.assertIn("long", log.lower())
        self.assertFalse(os.path.exists(long_path))

    def test_socket_mode_default(self):
        say("socket mode defaults to 0660")
        s = h.Setup()
        a = s.start()
        self.assertEqual(h.mode_of(s.socket), 0o660,
                         "mode %o" % h.mode_of(s.socket))
        a.stop()

    def test_socket_mode_configured(self):
        say("socket_mode = 0600 gives a 0600 socket")
        s = h.Setup(agent_opts={"socket_mode": "0600"})
        a = s.start()
        self.assertEqual(h.mode_of(s.socket), 0o600,
                         "mode %o" % h.mode_of(s.socket))
        a.stop()


class SocketPathSafetyTest(unittest.TestCase):
    def test_regular_file_not_replaced(self):
        say("a regular file at the socket path is refused, not deleted")
        s = h.Setup()
        with open(s.socket, "w") as f:
            f.write("precious")
        rc, log = start_failing(s)
        say("exit %d: %s" % (rc, log.strip()[-160:]))
        self.assertNotEqual(rc, 0)
        with open(s.socket) as f:
            self.assertEqual(f.read(), "precious")

    def test_world_writable_dir_refused(self):
        say("a socket directory writable by others (no sticky bit) is "
            "refused")
        s = h.Setup()
        d = os.path.join(s.dir, "open")
        os.mkdir(d)
        os.chmod(d, 0o777)
        sock = os.path.join(d, "a.sock")
        rc, log = start_failing(config=s.config, sock=sock,
                                args=["--socket", sock])
        say("exit %d: %s" % (rc, log.strip()[-160:]))
        self.assertNotEqual(rc, 0)
        self.assertFalse(os.path.exists(sock))


NOBODY = 65534


def as_nobody(memlock=None):
    def fn():
        if memlock is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return fn


@unittest.skipUnless(os.geteuid() == 0, "needs root to switch to nobody")
class MemlockTest(unittest.TestCase):
    def nobody_setup(self):
        # The client below runs as root, the agent as nobody: allow root
        # explicitly (the default policy is the agent's own uid only).
        s = h.Setup({ALIAS: {"allow_encrypt": "uid:0",
                             "allow_decrypt": "uid:0"}},
                    agent_opts={"capacity": "100"})
        for root, dirs, files in os.walk(s.dir):
            for n in dirs + files + [""]:
                os.chown(os.path.join(root, n), NOBODY, NOBODY)
        return s

    def test_runs_unprivileged(self):
        say("as an unprivileged user with the default RLIMIT_MEMLOCK the "
            "agent starts and serves")
        s = self.nobody_setup()
        a = Agent(s.config, s.socket, preexec_fn=as_nobody())
        a.start()
        h.assert_serving(s.socket)
        a.stop()

    def test_memlock_zero(self):
        say("RLIMIT_MEMLOCK 0 (unprivileged): clear error at start, "
            "non-zero exit")
        s = self.nobody_setup()
        a = Agent(s.config, s.socket, preexec_fn=as_nobody(memlock=0))
        a.spawn()
        rc = a.wait_exit()
        log = a.log()
        say("exit %d: %s" % (rc, log.strip()[-200:]))
        self.assertNotEqual(rc, 0)
        self.assertIn("RLIMIT_MEMLOCK", log)
        self.assertFalse(os.path.exists(s.socket))


class ConfigErrorTest(unittest.TestCase):
    def expect_refusal(self, setup, *needles, args=()):
        rc, log = start_failing(setup, args=args)
        first = log.strip().splitlines()[-1] if log.strip() else ""
        say("exit %d: %s" % (rc, first[:200]))
        self.assertNotEqual(rc, 0, "agent started on a bad config")
        self.assertTrue(log.strip(), "no error message")
        low = log.lower()
        self.assertTrue(any(n.lower() in low for n in needles),
                        "error names none of %r:\n%s" % (needles, log))
        self.assertFalse(os.path.exists(setup.socket),
                         "refused agent left a socket")

    def test_key_file_world_readable(self):
        say("key file mode 0644 is refused")
        s = h.Setup()
        os.chmod(s.key_files[ALIAS], 0o644)
        self.expect_refusal(s, s.key_files[ALIAS], "mode", "permission")

    def test_key_file_group_readable(self):
        say("key file mode 0640 is refused")
        s = h.Setup()
        os.chmod(s.key_files[ALIAS], 0o640)
        self.expect_refusal(s, s.key_files[ALIAS], "mode", "permission")

    def test_key_file_missing(self):
        say("missing key file is a clear error")
        s = h.Setup()
        os.unlink(s.key_files[ALIAS])
        self.expect_refusal(s, s.key_files[ALIAS], "no such file")

    def test_key_file_wrong_size(self):
        say("31- and 33-byte key files are refused")
        for n in (31, 33, 0):
            s = h.Setup()
            with open(s.key_files[ALIAS], "wb") as f:
                f.write(os.urandom(n))
            os.chmod(s.key_files[ALIAS], 0o600)
            self.expect_refusal(s, s.key_files[ALIAS], "32", "size")

    def test_config_missing(self):
        say("missing config file is a clear error")
        s = h.Setup()
        os.unlink(s.config)
        self.expect_refusal(s, s.config)

    def bad_config(self, raw, *needles, agent=None, keys=None):
        s = h.Setup()
        agent_opts = dict(s.agent_opts)
        agent_opts.update(agent or {})
        keys_opts = {a: dict(o) for a, o in s.key_sections.items()}
        for a, o in (keys or {}).items():
            keys_opts.setdefault(a, {}).update(o)
        h.write_config(s.config, agent_opts, keys_opts, raw=raw)
        self.expect_refusal(s, *needles)

    def test_unknown_agent_key(self):
        say("unknown key in [agent] is refused, naming it")
        self.bad_config(None, "bogus_option", agent={"bogus_option": "1"})

    def test_unknown_key_option(self):
        say("unknown key in [key.ALIAS] is refused, naming it")
        self.bad_config(None, "ttl_seconds",
                        keys={ALIAS: {"ttl_seconds": "5"}})

    def test_bad_values(self):
        cases = [
            ({ALIAS: {"ttl": "abc"}}, None, "ttl"),
            ({ALIAS: {"ttl": "-5"}}, None, "ttl"),
            ({ALIAS: {"max_messages": "0"}}, None, "max_messages"),
            ({ALIAS: {"max_messages": "12x"}}, None, "max_messages"),
            ({ALIAS: {"max_bytes": "99999999999999999999999"}}, None,
             "max_bytes"),
            ({ALIAS: {"provider": "nosuch"}}, None, "provider"),
            (None, {"log_level": "chatty"}, "log_level"),
            (None, {"socket_mode": "999"}, "socket_mode"),
            (None, {"socket_mode": "0666"}, "socket_mode"),
            (None, {"capacity": "many"}, "capacity"),
        ]
        for keys, agent, needle in cases:
            say("bad value for %s is refused, naming it" % needle)
            self.bad_config(None, needle, agent=agent, keys=keys)

    def test_bad_alias(self):
        for alias in ("bad alias", "bad.alias", "bad/alias", "b\u00e4d", ""):
            say("alias %r is refused" % alias)
            s = h.Setup()
            raw = ("[key.%s]\nprovider = local\nkey_file = %s\n"
                   % (alias, s.key_files[ALIAS]))
            h.write_config(s.config, s.agent_opts, s.key_sections, raw=raw)
            self.expect_refusal(s, "alias", "[key.%s]" % alias,
                                "key.%s" % alias)

    def test_duplicate_alias(self):
        say("the same alias twice is refused")
        s = h.Setup()
        raw = ("[key.%s]\nprovider = local\nkey_file = %s\n"
               % (ALIAS, s.key_files[ALIAS]))
        h.write_config(s.config, s.agent_opts, s.key_sections, raw=raw)
        self.expect_refusal(s, ALIAS, "duplicate")

    def test_no_keys(self):
        say("a config with no key section is refused, or starts and "
            "answers KC_ENOKEY")
        s = h.Setup()
        h.write_config(s.config, s.agent_opts, {})
        a = Agent(s.config, s.socket)
        try:
            a.start()
        except AssertionError as e:
            say("refused: %s" % str(e).splitlines()[0])
            self.assertNotEqual(a.returncode, 0)
            return
        with Client(s.socket) as c:
            h.expect_error(c.request("encrypt", key=ALIAS, plaintext=b"x"),
                           h.KC_ENOKEY)
        a.stop()


class LogHygieneTest(unittest.TestCase):
    def test_no_secrets_in_debug_log(self):
        s = h.Setup({ALIAS: {"max_messages": 3}, "other": {}})
        a = s.start()
        plaintexts = [b"alice-secret-%02d@example.com" % i for i in range(8)]
        plaintexts.append(b"PLAINTEXT-MARKER-7f3a9c")
        ctx_value = "ctxvalue-MARKER-5be1"
        cts = []
        with Client(s.socket) as c:
            c.call("hello", versions=[1])
            for i, pt in enumerate(plaintexts):
                alias = ALIAS if i % 2 == 0 else "other"
                cts.append(c.encrypt(alias, pt, {"table": ctx_value}))
            for pt, ct in zip(plaintexts, cts):
                self.assertEqual(c.decrypt(ct, {"table": ctx_value})
                                 ["plaintext"], pt)
            h.expect_error(c.request("decrypt", ciphertext=cts[0],
                                     context={"table": "wrong-MARKER"}),
                           h.KC_ECONTEXT)
            c.stats()
            say("peer strings with control characters are not logged raw")
            h.expect_error(c.request("encrypt", key="x\nFAKE-LOG-LINE\x1b[31m",
                                     plaintext=b"x"), h.KC_ENOKEY)
            h.expect_error(c.request("x\rFAKE-OP-LINE"), h.KC_EUNKNOWNOP)
        a.stop()
        log = a.log_bytes()
        say("debug log is %d bytes" % len(log))
        self.assertTrue(log, "debug level produced no log at all")
        for alias, key in s.keys.items():
            for form, text in h.encodings(key).items():
                say("key %s (%s) not in the log" % (alias, form))
                self.assertNotIn(text, log)
        for pt in plaintexts:
            self.assertNotIn(pt, log, "plaintext in log")
            self.assertNotIn(base64.b64encode(pt), log)
            self.assertNotIn(pt.hex().encode(), log)
        say("no plaintext (raw, hex, base64) in the log")
        for ct in cts:
            self.assertNotIn(base64.b64encode(ct), log)
            self.assertNotIn(base64.b64encode(ct[-48:]), log)
            self.assertNotIn(ct[-32:].hex().encode(), log)
            self.assertNotIn(ct[-32:].hex().upper().encode(), log)
        say("no ciphertext payloads in the log")
        self.assertNotIn(ctx_value.encode(), log, "context value logged")
        self.assertNotIn(b"wrong-MARKER", log, "context value logged")
        say("no encryption-context values in the log")
        self.assertNotIn(b"\nFAKE-LOG-LINE", log, "newline injected in log")
        self.assertNotIn(b"\rFAKE-OP-LINE", log, "CR injected in log")
        self.assertNotIn(b"\x1b", log, "escape sequence in log")
        say("control characters from peers are escaped in the log")


if __name__ == "__main__":
    h.run_tests()
