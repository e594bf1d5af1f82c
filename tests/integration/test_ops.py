#!/usr/bin/python3
"""Operating the agent: metrics, health and readiness with pre-warm,
live reload, refresh-ahead in steady state.

Each test starts its own agent (harness.py) on a scratch socket.
"""
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa

ALIAS = "users-email"
say = h.say


def metrics_of(client):
    """Parse the agent's exposition text with prometheus_client."""
    text = client.call("metrics")["text"]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return text, fams


def sample(fams, family, name=None, **labels):
    for s in fams[family].samples:
        if (name is None or s.name == name) and all(
                s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError("%s %s %r" % (family, name, labels))


class MetricsTest(unittest.TestCase):
    def test_exposition_parses_and_counts(self):
        say("metrics: real exposition parser; counters follow traffic")
        s = h.Setup({ALIAS: {"max_messages": 5}})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                cts = [c.encrypt(ALIAS, b"v%d" % i, {"t": "u"})
                       for i in range(12)]
                for ct in cts:
                    c.decrypt(ct)
                r = c.request("encrypt", key=ALIAS, plaintext=b"x",
                              context={"aws-crypto-x": "1"})
                h.expect_error(r, h.KC_ECONTEXT)
                text, fams = metrics_of(c)
            for name in ("keycache_requests", "keycache_request_duration_seconds",
                         "keycache_cache_hits", "keycache_cache_misses",
                         "keycache_provider_calls", "keycache_provider_errors",
                         "keycache_cache_entries", "keycache_locked_bytes",
                         "keycache_data_key_age_seconds", "keycache_connections",
                         "keycache_inflight_requests", "keycache_uptime_seconds",
                         "keycache_build_info", "keycache_grace_uses",
                         "keycache_refreshes"):
                self.assertIn(name, fams, name)
            self.assertEqual(sample(fams, "keycache_requests",
                                    key=ALIAS, op="encrypt", result="ok"), 12)
            self.assertEqual(sample(fams, "keycache_requests",
                                    key=ALIAS, op="decrypt", result="ok"), 12)
            self.assertEqual(sample(fams, "keycache_requests", key=ALIAS,
                                    op="encrypt", result="KC_ECONTEXT"), 1)
            # 12 messages with max_messages 5: three data keys.
            self.assertEqual(sample(fams, "keycache_provider_calls",
                                    key=ALIAS), 3)
            self.assertEqual(sample(
                fams, "keycache_request_duration_seconds",
                "keycache_request_duration_seconds_count",
                key=ALIAS, op="encrypt"), 13)
            inf = sample(fams, "keycache_request_duration_seconds",
                         "keycache_request_duration_seconds_bucket",
                         key=ALIAS, op="decrypt", le="+Inf")
            self.assertEqual(inf, 12)
            self.assertEqual(sample(fams, "keycache_build_info",
                                    "keycache_build_info"), 1)
            say("parsed %d metric families, %d bytes" % (len(fams), len(text)))
        finally:
            a.stop()


class MetricsHttpTest(unittest.TestCase):
    def test_loopback_listener(self):
        say("metrics_listen: GET /metrics over HTTP on loopback; other "
            "paths 404; a non-loopback address is refused at start")
        import socket
        import urllib.error
        import urllib.request
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        s = h.Setup({ALIAS: {}},
                    agent_opts={"metrics_listen": "127.0.0.1:%d" % port})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                c.encrypt(ALIAS, b"x")
            url = "http://127.0.0.1:%d" % port
            with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
                self.assertEqual(r.status, 200)
                self.assertIn("version=0.0.4", r.headers["Content-Type"])
                text = r.read().decode()
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            self.assertEqual(sample(fams, "keycache_requests", key=ALIAS,
                                    op="encrypt", result="ok"), 1)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url + "/other", timeout=10)
            self.assertEqual(e.exception.code, 404)
        finally:
            a.stop()
        s = h.Setup({ALIAS: {}},
                    agent_opts={"metrics_listen": "0.0.0.0:%d" % port})
        a = s.agent()
        a.spawn()
        self.assertNotEqual(a.wait_exit(), 0)
        self.assertIn("loopback", a.log())


class HealthTest(unittest.TestCase):
    def test_ready_after_prewarm(self):
        say("health: live and ready; pre-warmed keys cost no request-path "
            "provider call")
        s = h.Setup({ALIAS: {"prewarm": "table=users,column=email | -"}})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                r = c.call("health")
                self.assertTrue(r["live"])
                self.assertTrue(r["ready"])
                self.assertEqual(r["warmup_pending"], 0)
                st = c.stats()["keys"][ALIAS]
                self.assertEqual(st["provider_calls"], 2)
                c.encrypt(ALIAS, b"a@b", {"table": "users", "column": "email"})
                c.encrypt(ALIAS, b"a@b")
                st = c.stats()["keys"][ALIAS]
                self.assertEqual(st["provider_calls"], 2)
                self.assertEqual(st["cache_misses"], 0)
        finally:
            a.stop()

    def test_bad_prewarm_is_a_config_error(self):
        say("a malformed prewarm line stops the agent at start")
        s = h.Setup({ALIAS: {"prewarm": "table"}})
        a = s.agent()
        a.spawn()
        self.assertNotEqual(a.wait_exit(), 0)
        self.assertIn("prewarm", a.log())


def ctl(sock, *args, timeout=20):
    import subprocess
    return subprocess.run([h.ctl_path(), "--socket", sock] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)


class CtlTest(unittest.TestCase):
    def test_metrics_health_reload_watch(self):
        say("keycachectl metrics / health --live --ready / reload / "
            "stats --watch")
        s = h.Setup({ALIAS: {}})
        a = s.start()
        try:
            r = ctl(s.socket, "metrics")
            self.assertEqual(r.returncode, 0, r.stderr)
            fams = {f.name for f in text_string_to_metric_families(
                r.stdout.decode())}
            self.assertIn("keycache_requests", fams)
            for flag in ("--live", "--ready"):
                r = ctl(s.socket, "health", flag)
                self.assertEqual(r.returncode, 0, r.stderr)
            r = ctl(s.socket, "reload")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(b"reloaded", r.stdout)
            import subprocess
            try:
                subprocess.run([h.ctl_path(), "--socket", s.socket, "stats",
                                "--watch", "--interval", "1"],
                               stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=2.5)
                self.fail("stats --watch returned")
            except subprocess.TimeoutExpired as e:
                out = e.stdout or b""
                self.assertGreaterEqual(out.count(b"\033[2J"), 2)
                self.assertIn(ALIAS.encode(), out)
        finally:
            a.stop()
        r = ctl(s.socket, "health", "--live", timeout=20)
        self.assertNotEqual(r.returncode, 0)

    def test_not_ready_while_prewarm_fails(self):
        say("a pre-warm key whose provider is unreachable keeps the agent "
            "live but not ready")
        s = h.Setup({ALIAS: {}, "remote": {
            "provider": "aws-kms", "key_id": "arn:aws:kms:eu-west-1:"
            "111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "region": "eu-west-1", "endpoint": "https://127.0.0.1:9",
            "connect_timeout": 200, "request_timeout": 500,
            "prewarm": "-"}})
        env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
               "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
        a = s.start(env=env)
        try:
            time.sleep(1.0)
            self.assertEqual(ctl(s.socket, "health", "--live").returncode, 0)
            r = ctl(s.socket, "health", "--ready")
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn(b"not ready", r.stdout)
            with h.Client(s.socket) as c:
                c.encrypt(ALIAS, b"local keys still serve")
        finally:
            a.stop()


class SystemdTest(unittest.TestCase):
    def test_notify_and_socket_activation(self):
        say("systemd: READY=1 on NOTIFY_SOCKET once ready; a socket passed "
            "by socket activation is served")
        import shutil
        import socket
        import subprocess
        activate = shutil.which("systemd-socket-activate")
        s = h.Setup({ALIAS: {"prewarm": "-"}})
        notify = os.path.join(s.dir, "notify.sock")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(notify)
        ns.settimeout(20)
        a = s.start(env={"NOTIFY_SOCKET": notify})
        try:
            msg = ns.recv(4096)
            self.assertIn(b"READY=1", msg)
        finally:
            a.stop()
            ns.close()
        if activate is None:
            say("systemd-socket-activate not installed: activation part "
                "not run")
            return
        act = os.path.join(s.dir, "act.sock")
        argv = [activate, "-l", act] + h.agent_wrapper() + [
            h.agent_path(), "--config", s.config]
        log = open(os.path.join(s.dir, "act.log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(act) and time.monotonic() < deadline:
                time.sleep(0.05)
            h.assert_serving(act)
            with open(os.path.join(s.dir, "act.log"), "rb") as f:
                self.assertIn(b"passed by systemd", f.read())
        finally:
            p.terminate()
            p.wait(timeout=20)
            log.close()


class ReloadTest(unittest.TestCase):
    def test_sighup_adds_removes_and_keeps_connections(self):
        say("SIGHUP: new alias served, removed alias gone and its keys "
            "wiped, open connection kept")
        s = h.Setup({ALIAS: {}, "old-key": {}})
        a = s.start()
        try:
            c = h.Client(s.socket)
            ct = c.encrypt(ALIAS, b"keep me")
            c.encrypt("old-key", b"x")
            # One entry per data key (it also serves decrypts).
            self.assertEqual(c.stats()["cache"]["entries"], 2)
            kf = os.path.join(s.dir, "new-key.key")
            h.write_key(kf)
            h.write_config(s.config, s.agent_opts, {
                ALIAS: s.key_sections[ALIAS],
                "new-key": {"provider": "local", "key_file": kf}})
            os.kill(a.proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if "new-key" in c.stats()["keys"]:
                    break
                time.sleep(0.05)
            st = c.stats()
            self.assertIn("new-key", st["keys"])
            self.assertNotIn("old-key", st["keys"])
            # The unchanged alias kept its keys and counters.
            self.assertEqual(st["keys"][ALIAS]["encrypt"], 1)
            self.assertEqual(st["cache"]["entries"], 1)
            self.assertEqual(c.decrypt(ct)["plaintext"], b"keep me")
            c.encrypt("new-key", b"y")
            h.expect_error(c.request("encrypt", key="old-key",
                                     plaintext=b"x"), h.KC_ENOKEY)
            self.assertIn("reloaded", a.log())
            c.close()
        finally:
            a.stop()

    def test_bad_config_keeps_running(self):
        say("reload of a broken file: running config kept, reason logged; "
            "the reload op reports it")
        s = h.Setup({ALIAS: {}})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                ct = c.encrypt(ALIAS, b"still here")
                with open(s.config, "a") as f:
                    f.write("[key.broken]\nprovider = nope\n")
                os.kill(a.proc.pid, signal.SIGHUP)
                time.sleep(0.3)
                self.assertTrue(a.alive())
                self.assertIn("reload failed", a.log())
                r = c.request("reload")
                h.expect_error(r, h.KC_ECONFIG)
                self.assertEqual(c.decrypt(ct)["plaintext"], b"still here")
                self.assertEqual(c.stats()["cache"]["entries"], 1)
        finally:
            a.stop()

    def test_changed_key_file_wipes_its_cache(self):
        say("an alias whose key changed loses its cached data keys")
        s = h.Setup({ALIAS: {}})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                c.encrypt(ALIAS, b"x")
                kf = os.path.join(s.dir, "rotated.key")
                h.write_key(kf)
                sec = dict(s.key_sections[ALIAS], key_file=kf)
                h.write_config(s.config, s.agent_opts, {ALIAS: sec})
                r = c.call("reload")
                self.assertTrue(r["applied"])
                self.assertEqual(c.stats()["cache"]["entries"], 0)
                c.encrypt(ALIAS, b"y")
                self.assertEqual(c.stats()["keys"][ALIAS]["provider_calls"],
                                 2)
        finally:
            a.stop()


class RefreshTest(unittest.TestCase):
    def test_steady_state_has_no_request_path_calls(self):
        say("refresh-ahead: steady traffic for 5 s over 1 s TTLs; after "
            "warm-up no request waits on the provider")
        s = h.Setup({ALIAS: {"ttl": 1, "refresh_ahead": 0.5,
                             "ttl_jitter": 0}})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                c.encrypt(ALIAS, b"warm")
                end = time.monotonic() + 5
                n = 0
                while time.monotonic() < end and n < 100000:
                    c.encrypt(ALIAS, b"x")
                    n += 1
                    time.sleep(0.01)
                st = c.stats()["keys"][ALIAS]
                say("%d encrypts, %d provider calls, %d request-path misses"
                    % (n + 1, st["provider_calls"], st["cache_misses"]))
                self.assertEqual(st["cache_misses"], 1)
                self.assertGreaterEqual(st["provider_calls"], 5)
        finally:
            a.stop()




class RegressionTest(unittest.TestCase):
    """Cases a reviewer broke once; each must stay fixed."""

    def check_config(self, s):
        import subprocess
        return subprocess.run(h.agent_wrapper() + [
            h.agent_path(), "--config", s.config, "--check"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=60)

    def test_blank_separated_policy_and_wrap_lists(self):
        say("policies and also_wrap_with split on blanks as well as commas "
            "(30 entries): parsed, no overflow")
        many = " ".join(["uid:1"] * 29)  # the INI reader caps lines at 200
        s = h.Setup({ALIAS: {"allow_encrypt": many + " uid:0",
                             "allow_decrypt": "uid:0 uid:1\tuid:2",
                             "also_wrap_with": "b c"},
                     "b": {}, "c": {}})
        r = self.check_config(s)
        self.assertEqual(r.returncode, 0, r.stderr)
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                ct = c.encrypt(ALIAS, b"x")
                self.assertEqual(len(h.parse_header(ct)["edks"]), 3)
        finally:
            a.stop()

    def test_key_rotated_in_place_is_noticed_by_reload(self):
        say("a master key file rewritten in place: reload wipes the "
            "alias's cached keys and new messages use the new key")
        s = h.Setup({ALIAS: {}})
        a = s.start()
        try:
            with h.Client(s.socket) as c:
                c.encrypt(ALIAS, b"old", {"c": "A"})
                kf = s.key_files[ALIAS]
                newkey = os.urandom(32)
                with open(kf, "wb") as f:
                    f.write(newkey)
                r = c.call("reload")
                self.assertTrue(r["applied"])
                self.assertEqual(c.stats()["cache"]["entries"], 0)
                ct = c.encrypt(ALIAS, b"new", {"c": "A"})
        finally:
            a.stop()
        b = s.start()   # a fresh agent holding only the new key
        try:
            with h.Client(s.socket) as c:
                self.assertEqual(c.decrypt(ct)["plaintext"], b"new")
        finally:
            b.stop()

    def test_fifo_key_file_does_not_hang(self):
        say("a FIFO at key_file is refused at once, not waited on")
        s = h.Setup({ALIAS: {}})
        kf = s.key_files[ALIAS]
        os.unlink(kf)
        os.mkfifo(kf, 0o600)
        r = self.check_config(s)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"not a regular file", r.stderr)

    def test_check_rejects_what_start_would(self):
        say("--check refuses a non-loopback metrics_listen and an unknown "
            "socket_group, as start does")
        for opt in ({"metrics_listen": "0.0.0.0:9999"},
                    {"metrics_listen": "localhost:9999"},
                    {"socket_group": "no-such-group-kc"}):
            s = h.Setup({ALIAS: {}}, agent_opts=opt)
            r = self.check_config(s)
            self.assertNotEqual(r.returncode, 0, opt)

    def test_read_timeout_after_length_prefix(self):
        say("a frame whose 4-byte length arrived but whose body trickles "
            "is closed at read_timeout, not idle_timeout")
        s = h.Setup({ALIAS: {}}, agent_opts={"read_timeout": 2,
                                             "idle_timeout": 60})
        a = s.start()
        try:
            c = h.Client(s.socket)
            t0 = time.monotonic()
            c.send_raw(b"\x00\x00\x00\x40")
            closed_after = None
            for _ in range(10):   # bounded: at most ~10 s
                time.sleep(1)
                try:
                    c.send_raw(b"\x80")
                except OSError:
                    closed_after = time.monotonic() - t0
                    break
                if c.is_closed(timeout=0.05):
                    closed_after = time.monotonic() - t0
                    break
            say("closed after %s s" % closed_after)
            self.assertIsNotNone(closed_after)
            self.assertLess(closed_after, 6)
            c.close()
            h.assert_serving(s.socket)
        finally:
            a.stop()

    def test_duplicate_request_keys_refused(self):
        say("a request map with a key twice is refused (KC_EPROTO)")
        import struct
        s = h.Setup({ALIAS: {}})
        a = s.start()
        try:
            c = h.Client(s.socket)
            # {"id": 1, "op": "ping", "op": "stats"} by hand.
            body = (b"\x83\xa2id\x01\xa2op\xa4ping\xa2op\xa5stats")
            c.send_raw(struct.pack(">I", len(body)) + body)
            r = c.recv()
            h.expect_error(r, h.KC_EPROTO, rid=None)
            c.ping()
            c.close()
        finally:
            a.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
