"""The alibaba-kms provider against a fake Alibaba Cloud KMS on 127.0.0.1.

The fake (tests/fakes/fake_alibaba_kms.js, node) checks every request's
signature, V3 ACS3-HMAC-SHA256 and RPC v1 HMAC-SHA1, with npm
@alicloud/openapi-util (pinned in tests/fakes/package.json) and really
wraps data keys.  Shared cases are in kms_cases.py and run with the V3
signature; the v1 scheme gets its own round trip, retries and bad
signature.  Exits 77 (SKIP) when node or the npm package is missing
(install: npm ci --prefix tests/fakes).
"""
import unittest

import harness as h
import kms_helpers as k
from harness import say
from kms_cases import MAX_ATTEMPTS, KmsCases, fresh_ctx

TIMEOUT_MS = 2000


def ali_key(fake, ca, key_id, signature="v3", **extra):
    opts = {"provider": "alibaba-kms", "key_id": key_id,
            "region": "cn-hangzhou", "endpoint": fake.endpoint,
            "ca_file": ca, "signature": signature,
            "request_timeout": str(TIMEOUT_MS), "connect_timeout": "1000"}
    opts.update(extra)
    return opts


class AlibabaKmsTest(KmsCases, unittest.TestCase):
    alias = "ali"
    provider_id = "alibaba-kms"
    timeout_ms = TIMEOUT_MS
    codes = {"503": "ServiceUnavailableTemporary",
             "throttle": "Rejected.Throttling",
             "notfound": "Forbidden.KeyNotFound",
             "denied": "Forbidden.NoPermission"}

    @classmethod
    def setUpClass(cls):
        h.agent_path()
        k.need_node()
        cls.dir = h.scratch_dir()
        tls = k.make_tls(cls.dir)
        cls.ca = tls["ca"]
        cls.fake = k.AlibabaFake(cls.dir, tls, {
            "key-v3-0001": "app", "key-v1-0002": "legacy",
            "key-mk-0003": None}).start()
        cls.keys = {
            "ali": ali_key(cls.fake, cls.ca, "alias/app"),
            "ali1": ali_key(cls.fake, cls.ca, "key-v1-0002", "v1"),
            "loc": k.local_key(cls.dir, "loc"),
        }
        cls.agent, cls.sock = k.start_agent(cls.dir, cls.keys,
                                            k.alibaba_env())

    @classmethod
    def tearDownClass(cls):
        cls.agent.stop()
        cls.fake.stop()

    @staticmethod
    def context_of(sent):
        import json
        return json.loads(sent)

    def schemes(self):
        return self.fake.stats()["schemes"]

    def test_v1_round_trip(self):
        ctx = fresh_ctx("v1")
        before = self.schemes().get("RPC-HMAC-SHA1", 0)
        with h.Client(self.sock) as c:
            ct = c.encrypt("ali1", b"old scheme", ctx)
            self.assertEqual(c.decrypt(ct, ctx)["plaintext"], b"old scheme")
        pid, info, _ = h.parse_header(ct)["edks"][0]
        self.assertEqual((pid, info), (b"alibaba-kms", b"key-v1-0002"))
        after = self.schemes().get("RPC-HMAC-SHA1", 0)
        say("v1 (HMAC-SHA1) requests verified by openapi-util: %d"
            % (after - before))
        self.assertGreaterEqual(after - before, 1)

    def test_v3_and_v1_decrypt_in_fresh_agent(self):
        """Each scheme also drives Decrypt (fresh agent, empty cache)."""
        cts = {}
        for alias in ("ali", "ali1"):
            ctx = fresh_ctx("dec-" + alias)
            with h.Client(self.sock) as c:
                cts[alias] = (c.encrypt(alias, alias.encode(), ctx), ctx)
        d = h.scratch_dir()
        keys = {a: self.keys[a] for a in ("ali", "ali1")}
        # By id, so that each scheme makes exactly one request (an alias
        # costs a DescribeKey first: test_alias_key_survives_restart).
        keys["ali"] = dict(keys["ali"], key_id="key-v3-0001")
        a2, sock2 = k.start_agent(d, keys, k.alibaba_env())
        try:
            self.fake.reset_counts()
            with h.Client(sock2) as c:
                for alias, (ct, ctx) in cts.items():
                    r = c.decrypt(ct, ctx)
                    self.assertEqual(r["plaintext"], alias.encode())
            st = self.fake.stats()
            say("fresh agent decrypts: %r, schemes %r"
                % (st["calls"], st["schemes"]))
            self.assertEqual(st["calls"].get("Decrypt"), 2)
            self.assertEqual(st["schemes"].get("RPC-HMAC-SHA1"), 1)
            self.assertEqual(st["schemes"].get("ACS3-HMAC-SHA256"), 1)
        finally:
            a2.stop()

    def test_alias_key_survives_restart(self):
        """key_id = alias/app: a restarted agent (fresh process, empty
        cache) resolves the alias with one DescribeKey when an EDK first
        needs it, then decrypts what the first agent wrote.  Another
        key's message is refused without a Decrypt (KC_ENODATAKEY), and
        one relabelled to name the alias's key is refused when KMS
        answers for another key."""
        d = h.scratch_dir()
        keys = {"al": ali_key(self.fake, self.ca, "alias/app")}
        ctx = fresh_ctx("alias")
        a1, s1 = k.start_agent(d, keys, k.alibaba_env())
        try:
            with h.Client(s1) as c:
                ct = c.encrypt("al", b"under the alias", ctx)
        finally:
            a1.stop()
        self.assertEqual(h.parse_header(ct)["edks"][0][:2],
                         (b"alibaba-kms", b"key-v3-0001"))
        octx = fresh_ctx("alias-other")
        with h.Client(self.sock) as c:
            other = c.encrypt("ali1", b"not yours", octx)
        forged = k.relabel(other, "key-v1-0002", "key-v3-0001")

        a2, s2 = k.start_agent(d, keys, k.alibaba_env())  # the restart
        try:
            def step(what, msg, mctx, ok, describe, decrypt, errors):
                st0, ks0 = self.fake.stats(), k.key_stats(s2, "al")
                with h.Client(s2) as c:
                    r = c.request("decrypt", ciphertext=msg, context=mctx)
                st1, ks1 = self.fake.stats(), k.key_stats(s2, "al")
                got = tuple(st1["calls"].get(op, 0) - st0["calls"].get(op, 0)
                            for op in ("DescribeKey", "Decrypt"))
                pc = ks1["provider_calls"] - ks0["provider_calls"]
                pe = ks1["provider_errors"] - ks0["provider_errors"]
                say("restarted agent, %-26s %s; KMS DescribeKey %d, Decrypt "
                    "%d (agent provider_calls +%d, provider_errors +%d)%s" % (
                        what + ":", "ok" if r["ok"] else r["error"]["name"],
                        got[0], got[1], pc, pe,
                        "" if r["ok"] else ": " + r["error"]["message"][:110]))
                self.assertEqual(got, (describe, decrypt), r)
                self.assertEqual((pc, pe), (describe + decrypt, errors), r)
                if ok:
                    self.assertTrue(r["ok"], r)
                else:
                    h.expect_error(r, h.KC_ENODATAKEY)
                return r

            self.fake.reset_counts()
            # Unknown alias key: DescribeKey says it is not this EDK's.
            step("another key's message", other, octx, False, 1, 0, 0)
            r = step("the alias's message", ct, ctx, True, 0, 1, 0)
            self.assertEqual((r["plaintext"], r["key"]),
                             (b"under the alias", "al"))
            step("another key's message", other, octx, False, 0, 0, 0)
            # The EDK claims the alias's key; KMS answers for another.
            r = step("relabelled message", forged, octx, False, 0, 1, 1)
            self.assertIn("KeyMismatch", r["error"]["message"])
            step("the alias's message again", ct, ctx, True, 0, 0, 0)
            say("fake KMS calls for the restarted agent: %r"
                % self.fake.stats()["calls"])
        finally:
            a2.stop()

        # Concurrent first decrypts share one DescribeKey; a failed one
        # is not remembered (the next decrypt asks again).
        d3 = h.scratch_dir()
        a3, s3 = k.start_agent(d3, keys, k.alibaba_env())
        try:
            self.fake.reset_counts()
            self.fake.fault("notfound", count=1, op="DescribeKey")
            with h.Client(s3) as c:
                r = c.request("decrypt", ciphertext=ct, context=ctx)
            h.expect_error(r, h.KC_EPROVIDER)
            self.assertIn("Forbidden.KeyNotFound", r["error"]["message"])
            self.fake.fault("delay", count=1, op="DescribeKey", seconds=0.5)
            conns = [h.Client(s3, timeout=20) for _ in range(2)]
            for c, (msg, mctx) in zip(conns, ((ct, ctx), (other, octx))):
                c.send({"id": 1, "op": "decrypt", "ciphertext": msg,
                        "context": mctx})
            rs = [c.recv(20) for c in conns]
            for c in conns:
                c.close()
            st = self.fake.stats()
            say("fresh agent: DescribeKey refused once, then 2 concurrent "
                "decrypts: %s / %s; fake calls %r" % (
                    "ok" if rs[0]["ok"] else rs[0]["error"]["name"],
                    "ok" if rs[1]["ok"] else rs[1]["error"]["name"],
                    st["calls"]))
            self.assertEqual(rs[0]["plaintext"], b"under the alias")
            h.expect_error(rs[1], h.KC_ENODATAKEY)
            self.assertEqual(st["calls"], {"DescribeKey": 2, "Decrypt": 1})
            ks = k.key_stats(s3, "al")
            self.assertEqual((ks["provider_calls"], ks["provider_errors"]),
                             (3, 1))
        finally:
            a3.stop()

    def test_v1_retries(self):
        """The v1 scheme re-signs each attempt (fresh nonce; the fake
        refuses a reused one) and follows the same policy."""
        ctx = fresh_ctx("v1retry")
        n0 = self.fake.total_calls()
        self.fake.fault("503", count=2, op="GenerateDataKey")
        with h.Client(self.sock) as c:
            ct = c.encrypt("ali1", b"retried", ctx)
        self.assertEqual(self.fake.total_calls() - n0, 3)
        self.assertEqual(self.fake.stats()["auth"].get("SignatureNonceUsed"),
                         None)
        self.fake.fault("throttle", count=5, op="GenerateDataKey")
        with h.Client(self.sock) as c:
            r = c.request("encrypt", key="ali1", plaintext=b"x",
                          context=fresh_ctx("v1thr"))
        h.expect_error(r, h.KC_EPROVIDER)
        self.assertIn("Rejected.Throttling", r["error"]["message"])
        self.assertEqual(self.fake.total_calls() - n0, 3 + MAX_ATTEMPTS)
        self.assertTrue(ct)

    def test_wrong_secret_both_schemes(self):
        d = h.scratch_dir()
        env = dict(k.alibaba_env(), ALIBABA_CLOUD_ACCESS_KEY_SECRET="wrong")
        keys = {"ali": self.keys["ali"], "ali1": self.keys["ali1"]}
        a2, sock2 = k.start_agent(d, keys, env)
        try:
            for alias in keys:
                n0 = self.fake.stats()["auth"].get("SignatureDoesNotMatch", 0)
                with h.Client(sock2) as c:
                    r = c.request("encrypt", key=alias, plaintext=b"x",
                                  context=fresh_ctx("badsig"))
                n1 = self.fake.stats()["auth"].get("SignatureDoesNotMatch", 0)
                say("%s wrong secret: %s" % (alias,
                                             r["error"]["message"][:150]))
                h.expect_error(r, h.KC_EPROVIDER)
                self.assertIn("http 400, code SignatureDoesNotMatch",
                              r["error"]["message"])
                self.assertEqual(n1 - n0, 1)  # never retried
        finally:
            a2.stop()
        self.assertNotIn(k.ALI_TOKEN.encode(), a2.log_bytes())

    def test_multi_keyring(self):
        """Alibaba primary + also_wrap_with a local key (wrap goes through
        KMS Encrypt when the extra key is a KMS key: see AWS test)."""
        d = h.scratch_dir()
        loc = k.local_key(d, "extra")
        keys = {"am": ali_key(self.fake, self.ca, "key-mk-0003",
                              also_wrap_with="extra"),
                "extra": loc,
                "ali1": self.keys["ali1"]}
        keys2 = {"mk2": dict(k.local_key(d, "mk2"), also_wrap_with="ali1"),
                 "ali1": self.keys["ali1"]}
        ctx = fresh_ctx("multi")
        a2, sock2 = k.start_agent(d, keys, k.alibaba_env())
        try:
            with h.Client(sock2) as c:
                ct = c.encrypt("am", b"two keys", ctx)
        finally:
            a2.stop()
        d2 = h.scratch_dir()
        a2, sock2 = k.start_agent(d2, keys2, k.alibaba_env())
        try:
            n0 = self.fake.stats()["calls"].get("Encrypt", 0)
            with h.Client(sock2) as c:
                ct2 = c.encrypt("mk2", b"wrapped by Encrypt", ctx)
            self.assertEqual(self.fake.stats()["calls"].get("Encrypt", 0)
                             - n0, 1)
        finally:
            a2.stop()
        def alone(opts):
            return {o: v for o, v in opts.items() if o != "also_wrap_with"}

        for msg, pt, only in (
                (ct, b"two keys", {"am": alone(keys["am"])}),
                (ct, b"two keys", {"extra": loc}),
                (ct2, b"wrapped by Encrypt", {"ali1": self.keys["ali1"]}),
                (ct2, b"wrapped by Encrypt", {"mk2": alone(keys2["mk2"])})):
            pids = [e[0] for e in h.parse_header(msg)["edks"]]
            self.assertEqual(len(pids), 2)
            d3 = h.scratch_dir()
            a3, sock3 = k.start_agent(d3, only, k.alibaba_env())
            try:
                with h.Client(sock3) as c:
                    self.assertEqual(c.decrypt(msg, ctx)["plaintext"], pt)
                say("EDKs %r: decrypted with only %s" % (pids, list(only)))
            finally:
                a3.stop()

    def test_no_secrets_in_log(self):
        log = self.agent.log_bytes()
        for s in (k.ALI_SECRET, k.ALI_TOKEN):
            self.assertNotIn(s.encode(), log)


if __name__ == "__main__":
    h.run_tests()
