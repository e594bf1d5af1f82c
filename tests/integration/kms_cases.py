"""Test cases shared by the AWS and Alibaba KMS provider tests.

A subclass sets up (in setUpClass) a fake KMS (cls.fake, with the
kms_helpers control methods), an agent (cls.agent, cls.sock) whose
config has the KMS alias cls.alias (request_timeout cls.timeout_ms), a
local key "loc", and fills cls.codes with the provider's error codes.
Every test uses a fresh encryption context, so each one starts with a
cache miss for its own context and needs no state from the others.
"""
import os
import time
import uuid

import harness as h
import kms_helpers as k
from harness import say

MAX_ATTEMPTS = 3


def fresh_ctx(tag):
    return {"test": tag, "run": uuid.uuid4().hex, "note": "a b+/=\u00e9"}


class KmsCases:
    alias = None
    fake = None
    sock = None
    agent = None
    codes = {}
    timeout_ms = 2000

    # ------------------------------------------------------------ helpers
    def setUp(self):
        self.fake.clear_faults()

    def tearDown(self):
        self.fake.clear_faults()
        self.assertTrue(self.agent.alive(), "agent died:\n" +
                        self.agent.log_tail())

    def counts(self):
        s = k.key_stats(self.sock, self.alias)
        return (self.fake.total_calls(), s["provider_calls"],
                s["provider_errors"])

    def encrypt_raw(self, ctx, alias=None, timeout=None):
        with h.Client(self.sock, timeout=timeout or h.IO_TIMEOUT) as c:
            return c.request("encrypt", key=alias or self.alias,
                             plaintext=b"secret data", context=ctx)

    def assert_serving_local(self):
        """The local key answers quickly while the KMS misbehaves."""
        with h.Client(self.sock) as c:
            t0 = time.monotonic()
            ct = c.encrypt("loc", b"local", {"probe": "x"})
            self.assertEqual(c.decrypt(ct, {"probe": "x"})["plaintext"],
                             b"local")
            self.assertLess(time.monotonic() - t0, 1.0)

    def run_fault(self, mode, count, expect_ok, expect_calls, seconds=None,
                  retry_after=None, code=None, resend=False):
        """Inject mode for count requests, encrypt once under a fresh
        context, check the result and the call counts, then check that
        nothing was cached: the same context again makes a new call.

        resend: libcurl transparently sends a request once more when a
        reused keep-alive connection dies before any byte of the answer
        (no option turns that off).  With resets, the fake may then see
        one request more than the agent's attempts, or the agent one
        attempt less for the same number of requests."""
        ctx = fresh_ctx(mode)
        calls0, pc0, pe0 = self.counts()
        self.fake.fault(mode, count=count, op="GenerateDataKey",
                        seconds=seconds, retry_after=retry_after)
        r, took = k.timed(self.encrypt_raw, ctx)
        calls1, pc1, pe1 = self.counts()
        say("%-9s x%d: %s after %.2fs, %d KMS calls (agent: %d calls, "
            "%d errors)%s" % (
                mode, count, "ok" if r["ok"] else r["error"]["name"], took,
                calls1 - calls0, pc1 - pc0, pe1 - pe0,
                "" if r["ok"] else ": " + r["error"]["message"][:160]))
        if resend and expect_ok:
            self.assertEqual(calls1 - calls0, expect_calls)
            self.assertIn(pc1 - pc0, (expect_calls - 1, expect_calls))
        elif resend:
            self.assertIn(calls1 - calls0, (expect_calls, expect_calls + 1))
            self.assertEqual(pc1 - pc0, expect_calls)
        else:
            self.assertEqual(calls1 - calls0, expect_calls,
                             "KMS calls for %s: %r" % (mode, r))
            self.assertEqual(pc1 - pc0, expect_calls)
        if expect_ok:
            self.assertTrue(r["ok"], r)
            self.assertEqual(pe1 - pe0, pc1 - pc0 - 1)
            with h.Client(self.sock) as c:
                self.assertEqual(c.decrypt(r["ciphertext"], ctx)["plaintext"],
                                 b"secret data")
        else:
            h.expect_error(r, h.KC_EPROVIDER)
            self.assertEqual(pe1 - pe0, expect_calls)
            msg = r["error"]["message"]
            if code is not None:
                self.assertIn(code, msg)
                self.assertRegex(msg, r"request id [0-9A-Fa-f-]{16,}")
            self.fake.clear_faults()
            self.assert_serving_local()
            # Nothing bad was cached: the same context asks the KMS again.
            r2 = self.encrypt_raw(ctx)
            self.assertTrue(r2["ok"], r2)
            self.assertEqual(self.fake.total_calls() - calls1, 1)
        return r, took

    # -------------------------------------------------------------- tests
    def test_round_trip_and_context(self):
        ctx = fresh_ctx("rt")
        with h.Client(self.sock) as c:
            ct = c.encrypt(self.alias, b"round trip", ctx)
            hdr = h.parse_header(ct)
            self.assertEqual(len(hdr["edks"]), 1)
            pid, info, blob = hdr["edks"][0]
            say("EDK provider id %r, info %r, %d-byte ciphertext"
                % (pid, info, len(blob)))
            self.assertEqual(pid.decode(), self.provider_id)
            self.assertEqual(c.decrypt(ct, ctx)["plaintext"], b"round trip")
            # Same context again: cached data key, no new KMS call.
            n0 = self.fake.total_calls()
            c.encrypt(self.alias, b"again", ctx)
            self.assertEqual(self.fake.total_calls(), n0)
        sent = [e for op, e in self.fake.stats()["contexts"]
                if e is not None and ctx["run"] in str(e)]
        self.assertTrue(sent, "KMS never saw the encryption context")
        self.assertEqual(self.context_of(sent[-1]), ctx)

    def test_single_flight_200(self):
        ctx = fresh_ctx("sf")
        n0 = self.fake.stats()["calls"].get("GenerateDataKey", 0)
        pc0 = k.key_stats(self.sock, self.alias)["provider_calls"]
        # Hold the one KMS answer so every client is surely waiting.
        self.fake.fault("delay", count=1, op="GenerateDataKey", seconds=0.5)
        rs, took = k.timed(k.concurrent_encrypts, self.sock, self.alias, 200,
                           ctx)
        n1 = self.fake.stats()["calls"].get("GenerateDataKey", 0)
        pc1 = k.key_stats(self.sock, self.alias)["provider_calls"]
        ok = [r for r in rs if r["ok"]]
        edks = {tuple(h.parse_header(r["ciphertext"])["edks"][0])
                for r in ok}
        say("200 concurrent encrypts: %d ok in %.2fs, %d GenerateDataKey "
            "at the KMS, agent provider_calls +%d, %d distinct EDKs"
            % (len(ok), took, n1 - n0, pc1 - pc0, len(edks)))
        self.assertEqual(len(ok), 200, [r for r in rs if not r["ok"]][:3])
        self.assertEqual(n1 - n0, 1)
        self.assertEqual(pc1 - pc0, 1)
        self.assertEqual(len(edks), 1)

    def test_single_flight_shared_error(self):
        ctx = fresh_ctx("sferr")
        n0 = self.fake.total_calls()
        self.fake.fault("notfound", count=1, op="GenerateDataKey")
        rs = k.concurrent_encrypts(self.sock, self.alias, 50, ctx)
        calls = self.fake.total_calls() - n0
        say("50 concurrent encrypts against a not-found key: %d errors, "
            "%d KMS call(s)" % (sum(not r["ok"] for r in rs), calls))
        self.assertLessEqual(calls, 2)
        self.assertTrue(any(not r["ok"] for r in rs))
        for r in rs:
            if not r["ok"]:
                h.expect_error(r, h.KC_EPROVIDER)
                self.assertIn(self.codes["notfound"], r["error"]["message"])

    def test_fault_500_retried(self):
        self.run_fault("500", 1, True, 2)

    def test_fault_503_twice_retried(self):
        self.run_fault("503", 2, True, 3)

    def test_fault_503_exhausts_attempts(self):
        self.run_fault("503", 5, False, MAX_ATTEMPTS,
                       code=self.codes["503"])

    def test_fault_retry_after_honoured(self):
        r, took = self.run_fault("503", 1, True, 2, retry_after=1)
        self.assertGreaterEqual(took, 0.95)

    def test_fault_throttle_retried(self):
        self.run_fault("throttle", 1, True, 2)

    def test_fault_throttle_exhausts_attempts(self):
        self.run_fault("throttle", 5, False, MAX_ATTEMPTS,
                       code=self.codes["throttle"])

    def test_fault_reset_retried(self):
        self.run_fault("reset", 1, True, 2)

    def test_fault_reset_every_time(self):
        r, _ = self.run_fault("reset", 5, False, MAX_ATTEMPTS)
        self.assertIn("KC_ECLOSED", r["error"]["message"])

    def test_fault_truncated_body_retried(self):
        self.run_fault("truncate", 1, True, 2)

    def test_fault_malformed_json_not_retried(self):
        self.run_fault("badjson", 1, False, 1, code="MalformedResponse")

    def test_fault_wrong_content_type_not_retried(self):
        self.run_fault("ctype", 1, False, 1, code="MalformedResponse")

    def test_fault_slow_trickle_within_deadline(self):
        r, took = self.run_fault("trickle", 1, True, 1, seconds=0.03)
        self.assertGreater(took, 0.2)

    def test_fault_not_found_not_retried(self):
        self.run_fault("notfound", 5, False, 1, code=self.codes["notfound"])

    def test_fault_denied_not_retried(self):
        self.run_fault("denied", 5, False, 1, code=self.codes["denied"])

    def test_fault_stall_past_deadline(self):
        r, took = self.run_fault("stall", 5, False, 1, seconds=8)
        self.assertIn("KC_ETIMEOUT", r["error"]["message"])
        self.assertLess(took, self.timeout_ms / 1000.0 + 1.5)
        self.assertGreater(took, self.timeout_ms / 1000.0 - 0.3)

    def test_stall_does_not_block_other_keys(self):
        cached = fresh_ctx("cached")
        with h.Client(self.sock) as c:
            c.encrypt(self.alias, b"warm", cached)  # cache this one
        self.fake.fault("stall", count=5, op="GenerateDataKey", seconds=8)
        bg = k.Background(self.encrypt_raw, fresh_ctx("stalled"))
        bg.start()
        time.sleep(0.2)  # the stalled call is in the air
        lat = []
        with h.Client(self.sock) as c:
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline and len(lat) < 400:
                for alias, ctx in (("loc", {"p": "1"}), (self.alias, cached)):
                    t0 = time.monotonic()
                    ct = c.encrypt(alias, b"meanwhile", ctx)
                    self.assertEqual(c.decrypt(ct, ctx)["plaintext"],
                                     b"meanwhile")
                    lat.append(time.monotonic() - t0)
        stalled_alive = bg.is_alive()
        bg.join(timeout=10)
        lat.sort()
        say("while one KMS call stalled: %d local/cached round trips, "
            "p50 %.1f ms, max %.1f ms; stalled request: %s after %.2fs"
            % (len(lat), lat[len(lat) // 2] * 1e3, lat[-1] * 1e3,
               bg.result["error"]["name"] if bg.result and
               not bg.result["ok"] else bg.result, bg.elapsed or -1))
        self.assertTrue(stalled_alive, "stalled request finished too soon")
        self.assertGreater(len(lat), 20)
        self.assertLess(lat[-1], 0.25)
        self.assertIsNone(bg.error)
        h.expect_error(bg.result, h.KC_EPROVIDER)
        self.assertIn("KC_ETIMEOUT", bg.result["error"]["message"])

    def test_stats_json(self):
        ctl = os.environ.get("KC_CTL")
        if not ctl or not os.access(ctl, os.X_OK):
            self.skipTest("KC_CTL not set")
        import json
        import subprocess
        out = subprocess.run([ctl, "--socket", self.sock, "stats", "--json"],
                             capture_output=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        s = json.loads(out.stdout)
        keys = s.get("keys", s.get("stats", {}).get("keys"))
        ks = keys[self.alias]
        say("stats --json %s: provider_calls %d, provider_errors %d"
            % (self.alias, ks["provider_calls"], ks["provider_errors"]))
        self.assertIn("provider_calls", ks)
        self.assertIn("provider_errors", ks)
        self.assertEqual(ks["provider_calls"],
                         k.key_stats(self.sock, self.alias)["provider_calls"])
