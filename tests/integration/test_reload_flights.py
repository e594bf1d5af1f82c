#!/usr/bin/python3
"""Reloads and pre-warm while KMS calls are in the air (fake AWS KMS on
127.0.0.1 with an injected delay).

- A reload that arrives on a connection whose earlier request is still
  waiting on the KMS must neither crash the agent nor wait for traffic
  to stop: it applies at once, and the in-air call finishes on the old
  configuration without caching its key.
- Pre-warm must become ready even when a client's request for the same
  context is already in the air, and duplicate pre-warm contexts are a
  config error.
"""
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import kms_helpers as k  # noqa: E402

say = h.say


class Env:
    def __init__(self, agent_opts=None, aws_extra=None):
        self.dir = h.scratch_dir()
        self.tls = k.make_tls(self.dir)
        self.fake = k.AwsFakeAdapter(self.dir, self.tls).start()
        aws = {"provider": "aws-kms", "key_id": self.fake.arns["app"],
               "region": "us-east-1", "endpoint": self.fake.endpoint,
               "ca_file": self.tls["ca"], "request_timeout": "5000",
               "connect_timeout": "1000"}
        aws.update(aws_extra or {})
        self.keys = {"aws": aws, "loc": k.local_key(self.dir, "loc")}
        self.opts = {"socket": os.path.join(self.dir, "a.sock"),
                     "log_level": "debug"}
        self.opts.update(agent_opts or {})
        self.cfg = os.path.join(self.dir, "agent.ini")
        h.write_config(self.cfg, self.opts, self.keys)
        self.agent = h.Agent(self.cfg, self.opts["socket"], env=k.aws_env())

    def stop(self):
        if self.agent.alive():
            self.agent.stop()
        self.fake.stop()

    def encrypt_in_background(self, **fields):
        """Start an 'aws' encrypt on its own connection; returns the
        thread and a dict that gets its reply under "r"."""
        result = {}

        def run():
            with h.Client(self.agent.socket, timeout=15) as c:
                result["r"] = c.request("encrypt", key="aws", **fields)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, result


class ReloadDuringFlightTest(unittest.TestCase):
    def test_reload_pipelined_behind_a_waiting_request(self):
        say("encrypt waiting 1 s on KMS, then reload on the same paused "
            "connection: both answered, agent alive")
        e = Env(agent_opts={"max_inflight": "1"})
        e.agent.start()
        try:
            e.fake.fault("delay", count=1, op="GenerateDataKey", seconds=1.0)
            c = h.Client(e.agent.socket, timeout=15)
            c.send_raw(h.frame(h.pack({"id": 1, "op": "encrypt", "key": "aws",
                                       "plaintext": b"x",
                                       "context": {"t": "1"}})) +
                       h.frame(h.pack({"id": 2, "op": "reload"})))
            got = {}
            for _ in range(2):
                r = c.recv(15)
                got[r["id"]] = r
            self.assertTrue(got[2]["ok"], got[2])
            self.assertIn(1, got)
            time.sleep(0.3)
            self.assertTrue(e.agent.alive())
            h.assert_serving(e.agent.socket, alias="loc")
            c.close()
        finally:
            e.stop()

    def test_reload_applies_while_calls_are_in_the_air(self):
        say("a reload removing alias 'aws' applies at once although an "
            "'aws' KMS call is in the air; its key is not cached")
        e = Env()
        e.agent.start()
        try:
            e.fake.fault("delay", count=1, op="GenerateDataKey", seconds=1.5)
            t, result = e.encrypt_in_background(plaintext=b"x")
            time.sleep(0.4)  # the GenerateDataKey is now in the air
            h.write_config(e.cfg, e.opts, {"loc": e.keys["loc"]})
            t0 = time.monotonic()
            with h.Client(e.agent.socket) as c:
                self.assertTrue(c.call("reload")["applied"])
                took = time.monotonic() - t0
                h.expect_error(c.request("encrypt", key="aws",
                                         plaintext=b"q"), h.KC_ENOKEY)
            say("reload answered in %.2f s" % took)
            self.assertLess(took, 1.0)
            t.join(15)
            self.assertIn("r", result)
            say("the in-air request got: %r" % (
                result["r"].get("error", {}).get("name") or "ok"))
            with h.Client(e.agent.socket) as c:
                st = c.stats()
                self.assertNotIn("aws", st["keys"])
                self.assertEqual(st["cache"]["entries"], 0)
            self.assertTrue(e.agent.alive())
        finally:
            e.stop()


class ReloadKeepsFlightTest(unittest.TestCase):
    def test_key_fetched_across_an_unchanging_reload_is_cached(self):
        say("reloads that leave alias 'aws' as it was, while its KMS call "
            "is in the air: the key is cached, the waiting encrypt gets "
            "it, and the next one needs no KMS call")
        e = Env()
        e.agent.start()
        try:
            e.fake.fault("delay", count=1, op="GenerateDataKey", seconds=1.2)
            t, result = e.encrypt_in_background(plaintext=b"x",
                                                context={"t": "1"})
            time.sleep(0.3)  # the GenerateDataKey is now in the air
            with h.Client(e.agent.socket) as c:
                for _ in range(3):  # a burst of reloads, nothing changed
                    self.assertTrue(c.call("reload")["applied"])
                    time.sleep(0.2)
            t.join(15)
            self.assertTrue(result["r"]["ok"], result["r"])
            with h.Client(e.agent.socket) as c:
                self.assertEqual(c.stats()["cache"]["entries"], 1)
                r = c.request("encrypt", key="aws", plaintext=b"y",
                              context={"t": "1"})
                self.assertTrue(r["ok"], r)
                back = c.decrypt(result["r"]["ciphertext"],
                                 context={"t": "1"})
                self.assertEqual(back["plaintext"], b"x")
            self.assertEqual(e.fake.stats()["calls"].get("GenerateDataKey"), 1)
            self.assertTrue(e.agent.alive())
        finally:
            e.stop()


class BatchWaitTest(unittest.TestCase):
    def test_batch_with_a_waiting_item_in_the_middle(self):
        say("batch: local items answered at once, an 'aws' item waiting "
            "0.5 s on KMS in the middle, a bad item; one reply, results in "
            "item order, every ciphertext decrypts to its own plaintext")
        e = Env()
        e.agent.start()
        try:
            e.fake.fault("delay", count=1, op="GenerateDataKey", seconds=0.5)
            items = [
                {"op": "encrypt", "key": "loc", "plaintext": b"first"},
                {"op": "encrypt", "key": "loc", "plaintext": b"second",
                 "context": {"t": "2"}},
                {"op": "encrypt", "key": "aws", "plaintext": b"third"},
                {"op": "sign", "key": "loc", "plaintext": b"x"},
                {"op": "encrypt", "key": "loc", "plaintext": b"fifth"},
                {"op": "encrypt", "key": "aws", "plaintext": b"sixth"},
            ]
            with h.Client(e.agent.socket, timeout=15) as c:
                t0 = time.monotonic()
                r = c.call("batch", items=items)
                took = time.monotonic() - t0
                res = r["results"]
                self.assertEqual(len(res), len(items))
                self.assertGreater(took, 0.4)  # it did wait on the KMS
                self.assertFalse(res[3]["ok"])
                self.assertEqual(res[3]["error"]["code"], h.KC_EUNKNOWNOP)
                for i, it in enumerate(items):
                    if i == 3:
                        continue
                    self.assertTrue(res[i]["ok"], (i, res[i]))
                    back = c.decrypt(res[i]["ciphertext"],
                                     context=it.get("context"))
                    self.assertEqual(back["plaintext"], it["plaintext"])
                # And once the key is cached, the same batch is answered
                # without waiting, in the same order.
                r = c.call("batch", items=items)["results"]
                self.assertEqual([x["ok"] for x in r],
                                 [True, True, True, False, True, True])
                for i in (0, 1, 2, 4, 5):
                    back = c.decrypt(r[i]["ciphertext"],
                                     context=items[i].get("context"))
                    self.assertEqual(back["plaintext"], items[i]["plaintext"])
            self.assertEqual(e.fake.stats()["calls"].get("GenerateDataKey"), 1)
        finally:
            e.stop()


class PrewarmTest(unittest.TestCase):
    def test_duplicate_prewarm_context_is_a_config_error(self):
        say("the same pre-warm context twice is refused by --check")
        d = h.scratch_dir()
        cfg = os.path.join(d, "agent.ini")
        key = k.local_key(d, "loc")
        key["prewarm"] = "t=1 | t=1"
        h.write_config(cfg, {"socket": os.path.join(d, "a.sock")},
                       {"loc": key})
        p = subprocess.run([h.agent_path(), "--config", cfg, "--check"],
                           capture_output=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"prewarm", p.stderr)

    def test_ready_when_a_client_fetch_was_in_the_air(self):
        say("pre-warm fails once, a client's fetch of the same context is "
            "in the air at the retry: the agent still becomes ready")
        e = Env(aws_extra={"prewarm": "t=1"})
        e.fake.fault("500", count=3, op="GenerateDataKey")
        e.agent.start()
        try:
            time.sleep(0.6)
            with h.Client(e.agent.socket) as c:
                self.assertFalse(c.call("health")["ready"])
            e.fake.clear_faults()
            e.fake.fault("delay", count=1, op="GenerateDataKey", seconds=6)

            def client():
                with h.Client(e.agent.socket, timeout=20) as c:
                    c.request("encrypt", key="aws", plaintext=b"x",
                              context={"t": "1"})
            t = threading.Thread(target=client, daemon=True)
            t.start()
            ready = False
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not ready:
                time.sleep(0.25)
                with h.Client(e.agent.socket) as c:
                    ready = c.call("health")["ready"]
            t.join(20)
            self.assertTrue(ready)
        finally:
            e.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
