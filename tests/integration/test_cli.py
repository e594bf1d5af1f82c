"""keycachectl against a real agent: encrypt/decrypt, stats, ping/health,
keygen, --help."""

import base64
import json
import os
import subprocess
import unittest

import harness as h
from harness import Client, say

ALIAS = "users-email"
CTL_TIMEOUT = 60


def ctl(*args, sock=None, stdin=b"", env=None):
    """Run keycachectl; returns CompletedProcess (bytes)."""
    argv = [h.ctl_path()]
    if sock is not None:
        argv += ["--socket", sock]
    argv += list(args)
    e = dict(os.environ)
    e.pop("KEYCACHE_SOCKET", None)
    e.update(env or {})
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=e,
                          timeout=CTL_TIMEOUT)


class CliCase(unittest.TestCase):
    def ok(self, p):
        self.assertEqual(p.returncode, 0, "keycachectl failed: %r" %
                         p.stderr.decode(errors="replace"))
        return p.stdout

    def fails(self, p, what):
        err = p.stderr.decode(errors="replace").strip()
        say("%s -> exit %d: %s" % (what, p.returncode, err[:160]))
        self.assertNotEqual(p.returncode, 0, what + " succeeded")
        self.assertTrue(err, what + ": no message on stderr")
        self.assertNotIn("\n", err, what + ": stderr is not one line")
        return err


class CliCryptoTest(CliCase):
    @classmethod
    def setUpClass(cls):
        cls.s = h.Setup({ALIAS: {}, "other": {}})
        cls.agent = cls.s.start()
        cls.sock = cls.s.socket

    @classmethod
    def tearDownClass(cls):
        cls.agent.stop()

    def test_binary_round_trip(self):
        for pt in (b"", b"\x00", b"alice@example.com\n",
                   bytes(range(256)) * 3, os.urandom(100000)):
            say("binary stdin->stdout round trip, %d bytes" % len(pt))
            ct = self.ok(ctl("encrypt", "--key", ALIAS, sock=self.sock,
                             stdin=pt))
            hdr = h.parse_header(ct)
            self.assertEqual(hdr["suite"], 0x0478)
            back = self.ok(ctl("decrypt", sock=self.sock, stdin=ct))
            self.assertEqual(back, pt)

    def test_base64(self):
        say("--base64: encrypt prints Base64 text, decrypt reads it")
        pt = b"bob@example.com"
        out = self.ok(ctl("encrypt", "--key", ALIAS, "--base64",
                          sock=self.sock, stdin=pt))
        text = out.decode("ascii").strip()
        self.assertNotIn("\n", text)
        raw = base64.b64decode(text, validate=True)
        self.assertEqual(h.parse_header(raw)["suite"], 0x0478)
        self.assertEqual(self.ok(ctl("decrypt", "--base64", sock=self.sock,
                                     stdin=out)), pt)
        say("and without the trailing newline too")
        self.assertEqual(self.ok(ctl("decrypt", "--base64", sock=self.sock,
                                     stdin=text.encode())), pt)
        say("the ciphertext decrypts over the raw protocol as well")
        with Client(self.sock) as c:
            self.assertEqual(c.decrypt(raw)["plaintext"], pt)

    def test_context(self):
        say("--context repeated is stored in the message")
        pt = b"carol@example.com"
        ct = self.ok(ctl("encrypt", "--key", ALIAS, "--context",
                         "table=users", "--context", "column=email",
                         "--context", "note=a=b", sock=self.sock, stdin=pt))
        with Client(self.sock) as c:
            r = c.decrypt(ct)
            self.assertEqual(r["context"], {"table": "users",
                                            "column": "email",
                                            "note": "a=b"})
        say("decrypt with a matching subset succeeds")
        self.assertEqual(self.ok(ctl("decrypt", "--context", "table=users",
                                     sock=self.sock, stdin=ct)), pt)
        self.assertEqual(self.ok(ctl("decrypt", "--context", "table=users",
                                     "--context", "column=email",
                                     sock=self.sock, stdin=ct)), pt)
        p = ctl("decrypt", "--context", "table=orders", sock=self.sock,
                stdin=ct)
        self.fails(p, "decrypt with mismatched --context")
        self.assertEqual(p.stdout, b"", "plaintext printed on failure")
        p = ctl("decrypt", "--context", "tenant=x", sock=self.sock,
                stdin=ct)
        self.fails(p, "decrypt with an extra --context pair")
        self.assertEqual(p.stdout, b"")
        p = ctl("encrypt", "--key", ALIAS, "--context", "novalue",
                sock=self.sock, stdin=pt)
        self.fails(p, "--context without '='")

    def test_errors(self):
        p = ctl("encrypt", "--key", "no-such-alias", sock=self.sock,
                stdin=b"x")
        self.fails(p, "encrypt under an unknown alias")
        self.assertEqual(p.stdout, b"")
        self.fails(ctl("encrypt", sock=self.sock, stdin=b"x"),
                   "encrypt without --key")
        p = ctl("decrypt", sock=self.sock, stdin=os.urandom(80))
        self.fails(p, "decrypt of garbage")
        self.assertEqual(p.stdout, b"")
        p = ctl("decrypt", "--base64", sock=self.sock, stdin=b"!!notb64!!")
        self.fails(p, "decrypt --base64 of invalid Base64")
        self.fails(ctl("frobnicate", sock=self.sock), "unknown command")
        self.fails(ctl("encrypt", "--key", ALIAS, "--bogus",
                       sock=self.sock, stdin=b"x"), "unknown option")

    def test_socket_from_env(self):
        say("KEYCACHE_SOCKET is honoured when --socket is absent")
        p = ctl("ping", env={"KEYCACHE_SOCKET": self.sock})
        self.assertEqual(p.returncode, 0, p.stderr)
        ct = self.ok(ctl("encrypt", "--key", "other",
                         env={"KEYCACHE_SOCKET": self.sock}, stdin=b"e"))
        self.assertEqual(self.ok(ctl("decrypt", sock=self.sock, stdin=ct)),
                         b"e")


class CliStatsTest(CliCase):
    def test_stats_counts(self):
        s = h.Setup({ALIAS: {"max_messages": 10},
                     "one-shot": {"max_messages": 1},
                     "bytes-cap": {"max_bytes": 100, "max_messages": 1000}})
        a = s.start()
        sock = s.socket
        ctx = ["--context", "table=users", "--context", "column=email"]

        say("25 encrypts with max_messages=10 use data keys 10, 10, 5")
        cts = []
        for i in range(25):
            cts.append(self.ok(ctl("encrypt", "--key", ALIAS, *ctx,
                                   sock=sock, stdin=b"u%02d@x.org" % i)))
        self.assertEqual(h.data_key_groups(cts), [10, 10, 5])

        say("5 encrypts with max_messages=1 use 5 data keys")
        with Client(sock) as c:
            one = [c.encrypt("one-shot", b"z") for _ in range(5)]
            self.assertEqual(h.data_key_groups(one), [1] * 5)
            say("10 x 25-byte encrypts with max_bytes=100: keys 4, 4, 2")
            bc = [c.encrypt("bytes-cap", b"b" * 25) for _ in range(10)]
            self.assertEqual(h.data_key_groups(bc), [4, 4, 2])

        say("stats --json shape and counters")
        out = self.ok(ctl("stats", "--json", sock=sock))
        st = json.loads(out)
        self.assertEqual(set(st) & {"keys", "cache"}, {"keys", "cache"})
        for alias in (ALIAS, "one-shot", "bytes-cap"):
            k = st["keys"][alias]
            for f in ("encrypt", "decrypt", "cache_hits", "cache_misses",
                      "provider_calls"):
                self.assertIsInstance(k[f], int, "%s.%s" % (alias, f))
        for f in ("entries", "locked_bytes"):
            self.assertIsInstance(st["cache"][f], int, "cache." + f)
        k = st["keys"][ALIAS]
        say("%s: %r" % (ALIAS, k))
        self.assertEqual(k["encrypt"], 25)
        self.assertEqual(k["decrypt"], 0)
        self.assertEqual(k["provider_calls"], 3)
        self.assertEqual(k["cache_misses"], 3)
        self.assertEqual(k["cache_hits"], 22)
        self.assertEqual(st["keys"]["one-shot"]["provider_calls"], 5)
        self.assertEqual(st["keys"]["one-shot"]["encrypt"], 5)
        self.assertEqual(st["keys"]["bytes-cap"]["provider_calls"], 3)
        self.assertGreater(st["cache"]["entries"], 0)
        self.assertGreater(st["cache"]["locked_bytes"], 0)

        say("decrypting the 25 counts 25 decrypts, at most 3 unwraps")
        with Client(sock) as c:
            for i, ct in enumerate(cts):
                self.assertEqual(c.decrypt(ct)["plaintext"],
                                 b"u%02d@x.org" % i)
        st = json.loads(self.ok(ctl("stats", "--json", sock=sock)))
        k = st["keys"][ALIAS]
        say("%s: %r" % (ALIAS, k))
        self.assertEqual(k["decrypt"], 25)
        self.assertLessEqual(k["provider_calls"], 6)

        say("stats without --json prints a table naming each alias")
        txt = self.ok(ctl("stats", sock=sock)).decode()
        for alias in (ALIAS, "one-shot", "bytes-cap"):
            self.assertIn(alias, txt)
        a.stop()


class CliLivenessTest(CliCase):
    def test_ping_health(self):
        s = h.Setup()
        a = s.start()
        for cmd in ("ping", "health"):
            say("%s with the agent up: exit 0" % cmd)
            self.ok(ctl(cmd, sock=s.socket))
        a.stop()
        for cmd in ("ping", "health", "stats"):
            self.fails(ctl(cmd, sock=s.socket), "%s with the agent down"
                       % cmd)
        self.fails(ctl("encrypt", "--key", ALIAS, sock=s.socket,
                       stdin=b"x"), "encrypt with the agent down")
        self.fails(ctl("ping", sock=os.path.join(s.dir, "x" * 120)),
                   "ping on a path longer than sun_path")


class CliKeygenTest(CliCase):
    def test_keygen(self):
        d = h.scratch_dir()
        path = os.path.join(d, "master.key")
        say("keygen writes 32 bytes with mode 0600")
        old = os.umask(0)
        try:
            self.ok(ctl("keygen", path))
        finally:
            os.umask(old)
        self.assertEqual(os.path.getsize(path), 32)
        self.assertEqual(h.mode_of(path), 0o600)
        with open(path, "rb") as f:
            key = f.read()
        self.assertNotEqual(key, b"\x00" * 32)
        say("a second keygen on the same path refuses to overwrite")
        self.fails(ctl("keygen", path), "keygen over an existing file")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), key)
        self.assertEqual(h.mode_of(path), 0o600)
        self.fails(ctl("keygen", os.path.join(d, "nodir", "k")),
                   "keygen into a missing directory")
        self.fails(ctl("keygen"), "keygen without a path")

        say("two keygens give different keys")
        path2 = os.path.join(d, "second.key")
        self.ok(ctl("keygen", path2))
        with open(path2, "rb") as f:
            self.assertNotEqual(f.read(), key)

        say("the agent accepts a keygen'd key and round-trips with it")
        s = h.Setup({ALIAS: {"key_file": path}}, directory=d)
        a = s.start()
        ct = self.ok(ctl("encrypt", "--key", ALIAS, sock=s.socket,
                         stdin=b"k"))
        self.assertEqual(self.ok(ctl("decrypt", sock=s.socket, stdin=ct)),
                         b"k")
        a.stop()


class CliHelpTest(CliCase):
    def test_help(self):
        cmds = [[], ["encrypt"], ["decrypt"], ["stats"], ["ping"],
                ["health"], ["keygen"]]
        for cmd in cmds:
            p = ctl(*(cmd + ["--help"]))
            say("keycachectl %s --help -> exit %d"
                % (" ".join(cmd), p.returncode))
            self.assertEqual(p.returncode, 0, p.stderr)
            out = (p.stdout + p.stderr).decode(errors="replace")
            self.assertTrue(out.strip(), "empty help")
            if cmd:
                self.assertIn(cmd[0], out)


if __name__ == "__main__":
    h.run_tests(needs=("KC_AGENT", "KC_CTL"))
