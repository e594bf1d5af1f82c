"""The aws-kms provider against a fake AWS KMS on 127.0.0.1 (TLS, test CA).

The fake (tests/fakes/fake_aws_kms.py) checks every request's SigV4
signature with Debian's python3-botocore and really wraps data keys, so
a round trip proves the signing, the JSON protocol and the EDK format.
Shared cases (round trip, single flight with 200 clients, every fault,
stall isolation, stats) are in kms_cases.py.
"""
import os
import unittest

import harness as h
import kms_helpers as k
from harness import say
from kms_cases import KmsCases, fresh_ctx

TIMEOUT_MS = 2000


def aws_key(fake, alias, **extra):
    opts = {"provider": "aws-kms", "key_id": fake.arns[alias],
            "region": "us-east-1", "endpoint": fake.endpoint,
            "ca_file": fake.tls_ca, "request_timeout": str(TIMEOUT_MS),
            "connect_timeout": "1000"}
    opts.update(extra)
    return opts


class AwsKmsTest(KmsCases, unittest.TestCase):
    alias = "aws"
    provider_id = "aws-kms"
    timeout_ms = TIMEOUT_MS
    codes = {"503": "ServiceUnavailableException",
             "throttle": "ThrottlingException",
             "notfound": "NotFoundException",
             "denied": "AccessDeniedException"}

    @classmethod
    def setUpClass(cls):
        h.agent_path()
        cls.dir = h.scratch_dir()
        tls = k.make_tls(cls.dir)
        cls.fake = k.AwsFakeAdapter(cls.dir, tls).start()
        cls.fake.tls_ca = tls["ca"]
        cls.tls = tls
        keys = {
            "aws": aws_key(cls.fake, "app"),
            "aws2": aws_key(cls.fake, "other"),
            "loc": k.local_key(cls.dir, "loc"),
        }
        cls.keys = keys
        cls.agent, cls.sock = k.start_agent(cls.dir, keys, k.aws_env())

    @classmethod
    def tearDownClass(cls):
        cls.agent.stop()
        cls.fake.stop()

    @staticmethod
    def context_of(sent):
        return sent

    def test_edk_is_esdk_kms_keyring_shape(self):
        ctx = fresh_ctx("shape")
        with h.Client(self.sock) as c:
            ct = c.encrypt(self.alias, b"x", ctx)
        pid, info, blob = h.parse_header(ct)["edks"][0]
        self.assertEqual(pid, b"aws-kms")
        self.assertEqual(info.decode(), self.fake.arns["app"])
        self.assertTrue(blob.startswith(b"FAKEKMS1"))  # raw blob, not b64

    def test_decrypt_in_fresh_agent_single_flight(self):
        """A second agent (empty cache) unwraps through KMS Decrypt; 200
        concurrent decrypts of one message cost one Decrypt call."""
        ctx = fresh_ctx("dec")
        with h.Client(self.sock) as c:
            ct = c.encrypt(self.alias, b"read me elsewhere", ctx)
        d = h.scratch_dir()
        a2, sock2 = k.start_agent(d, {"aws": self.keys["aws"]}, k.aws_env())
        try:
            n0 = self.fake.stats()["calls"].get("Decrypt", 0)
            self.fake.fault("delay", count=1, op="Decrypt", seconds=0.5)
            conns = [h.Client(sock2, timeout=20) for _ in range(200)]
            for c in conns:
                c.send({"id": 1, "op": "decrypt", "ciphertext": ct,
                        "context": ctx})
            rs = [c.recv(20) for c in conns]
            for c in conns:
                c.close()
            n1 = self.fake.stats()["calls"].get("Decrypt", 0)
            say("200 concurrent decrypts in a fresh agent: %d ok, %d "
                "Decrypt call(s) at the KMS" % (sum(r["ok"] for r in rs),
                                                n1 - n0))
            self.assertTrue(all(r["ok"] and r["plaintext"] ==
                                b"read me elsewhere" for r in rs))
            self.assertEqual(n1 - n0, 1)
            # The wrong context: KMS refuses, the client learns why.
            with h.Client(sock2) as c:
                r = c.request("decrypt", ciphertext=ct,
                              context=dict(ctx, test="other"))
            h.expect_error(r, (h.KC_ENODATAKEY, h.KC_ECONTEXT, h.KC_EAUTH))
        finally:
            a2.stop()

    def test_alias_key_survives_restart(self):
        """key_id = alias/app: a restarted agent (fresh process, empty
        cache) decrypts what the first one wrote, its Decrypt pinned to
        the alias.  Another key's message is refused by KMS
        (IncorrectKeyException: KC_ENODATAKEY, one attempt, nothing
        cached), and once KMS has named the alias's key it costs no call."""
        d = h.scratch_dir()
        keys = {"al": aws_key(self.fake, "app", key_id="alias/app")}
        ctx = fresh_ctx("alias")
        a1, s1 = k.start_agent(d, keys, k.aws_env())
        try:
            with h.Client(s1) as c:
                ct = c.encrypt("al", b"under the alias", ctx)
        finally:
            a1.stop()
        app, other_arn = self.fake.arns["app"], self.fake.arns["other"]
        self.assertEqual(h.parse_header(ct)["edks"][0][1].decode(), app)
        octx = fresh_ctx("alias-other")
        with h.Client(self.sock) as c:
            other = c.encrypt("aws2", b"not yours", octx)
        elsewhere = k.relabel(ct, app, app.replace(":us-east-1:",
                                                   ":eu-west-1:"))
        forged = k.relabel(other, other_arn, app)

        a2, s2 = k.start_agent(d, keys, k.aws_env())  # the restart
        try:
            def step(what, msg, mctx, ok, calls, errors, incorrect):
                st0, ks0 = self.fake.stats(), k.key_stats(s2, "al")
                with h.Client(s2) as c:
                    r = c.request("decrypt", ciphertext=msg, context=mctx)
                st1, ks1 = self.fake.stats(), k.key_stats(s2, "al")
                dec = (st1["calls"].get("Decrypt", 0)
                       - st0["calls"].get("Decrypt", 0))
                got = (dec, ks1["provider_calls"] - ks0["provider_calls"],
                       ks1["provider_errors"] - ks0["provider_errors"],
                       st1["incorrect_key"] - st0["incorrect_key"])
                say("restarted agent, %-28s %s; KMS Decrypt %d (agent "
                    "provider_calls +%d, provider_errors +%d), "
                    "IncorrectKeyException %d%s" % (
                        what + ":", "ok" if r["ok"] else r["error"]["name"],
                        got[0], got[1], got[2], got[3],
                        "" if r["ok"] else ": " + r["error"]["message"][:110]))
                self.assertEqual(got, (calls, calls, errors, incorrect), r)
                if ok:
                    self.assertTrue(r["ok"], r)
                else:
                    h.expect_error(r, h.KC_ENODATAKEY)
                return r

            self.fake.reset_counts()
            # Another region's key ARN: not even asked.
            step("EDK of another region", elsewhere, ctx, False, 0, 0, 0)
            # Another key, before the alias's key is known: KMS refuses,
            # once (not retried), and again next time (not cached).
            for i in range(2):
                r = step("another key's message", other, octx, False,
                         1, 1, 1)
                self.assertIn("IncorrectKeyException", r["error"]["message"])
            r = step("the alias's message", ct, ctx, True, 1, 0, 0)
            self.assertEqual(r["plaintext"], b"under the alias")
            self.assertEqual(r["key"], "al")
            # Now the alias's key is known: other keys cost no call...
            step("another key's message", other, octx, False, 0, 0, 0)
            # ...and an EDK relabelled with it is still refused by KMS.
            step("relabelled message", forged, octx, False, 1, 1, 1)
            step("the alias's message again", ct, ctx, True, 0, 0, 0)
            st = self.fake.stats()
            say("fake KMS calls for the restarted agent: %r, Decrypt "
                "KeyIds %r" % (st["calls"], st["decrypt_key_ids"]))
            self.assertEqual(st["decrypt_key_ids"], {"alias/app": 4})
            self.assertEqual(set(st["calls"]), {"Decrypt"})
        finally:
            a2.stop()

        # The alias as an ARN: its account must be the EDK's.
        arn_alias = app.split(":key/")[0] + ":alias/app"
        for key_id, ok in ((arn_alias, True),
                           (arn_alias.replace(":111122223333:",
                                              ":444455556666:"), False)):
            d3 = h.scratch_dir()
            a3, s3 = k.start_agent(
                d3, {"al": aws_key(self.fake, "app", key_id=key_id)},
                k.aws_env())
            try:
                n0 = self.fake.total_calls()
                with h.Client(s3) as c:
                    r = c.request("decrypt", ciphertext=ct, context=ctx)
                n = self.fake.total_calls() - n0
                say("fresh agent with key_id %s: %s, %d KMS call(s)"
                    % (key_id, "ok" if r["ok"] else r["error"]["name"], n))
                if ok:
                    self.assertEqual(r["plaintext"], b"under the alias")
                    self.assertEqual(n, 1)
                else:
                    h.expect_error(r, h.KC_ENODATAKEY)
                    self.assertEqual(n, 0)
            finally:
                a3.stop()

    def test_wrong_secret_not_retried(self):
        d = h.scratch_dir()
        env = dict(k.aws_env(), AWS_SECRET_ACCESS_KEY="wrong-secret")
        a2, sock2 = k.start_agent(d, {"aws": self.keys["aws"]}, env)
        try:
            n0 = self.fake.stats()["auth"].get("InvalidSignatureException", 0)
            with h.Client(sock2) as c:
                r = c.request("encrypt", key="aws", plaintext=b"x",
                              context=fresh_ctx("badsig"))
            n1 = self.fake.stats()["auth"].get("InvalidSignatureException", 0)
            say("wrong secret: %s; %d signature failure(s) at the KMS"
                % (r["error"]["message"][:140], n1 - n0))
            h.expect_error(r, h.KC_EPROVIDER)
            self.assertIn("InvalidSignatureException", r["error"]["message"])
            self.assertEqual(n1 - n0, 1)
            st = k.key_stats(sock2, "aws")
            self.assertEqual((st["provider_calls"], st["provider_errors"]),
                             (1, 1))
        finally:
            a2.stop()

    def test_credentials_file_and_profile(self):
        d = h.scratch_dir()
        cred = os.path.join(d, "credentials")
        with open(cred, "w") as f:
            f.write("[default]\naws_access_key_id = nope\n"
                    "aws_secret_access_key = nope\n\n[kc]\n"
                    "aws_access_key_id = %s\naws_secret_access_key = %s\n"
                    "aws_session_token = %s\n"
                    % (k.AWS_AKID, k.AWS_SECRET, k.AWS_TOKEN))
        os.chmod(cred, 0o600)
        keys = {"aws": dict(self.keys["aws"], credentials_file=cred,
                            profile="kc")}
        a2, sock2 = k.start_agent(d, keys, {"AWS_ACCESS_KEY_ID": "",
                                            "AWS_SECRET_ACCESS_KEY": ""})
        try:
            with h.Client(sock2) as c:
                ctx = fresh_ctx("file")
                ct = c.encrypt("aws", b"from file", ctx)
                self.assertEqual(c.decrypt(ct, ctx)["plaintext"],
                                 b"from file")
        finally:
            a2.stop()
        for s in (k.AWS_SECRET, k.AWS_TOKEN):
            self.assertNotIn(s.encode(), a2.log_bytes())

    def test_multi_keyring(self):
        """Local primary + also_wrap_with an AWS key: the message opens
        with either key alone."""
        d = h.scratch_dir()
        loc = k.local_key(d, "mk")
        keys = {"mk": dict(loc, also_wrap_with="aws2"),
                "aws2": self.keys["aws2"]}
        a2, sock2 = k.start_agent(d, keys, k.aws_env())
        ctx = fresh_ctx("multi")
        try:
            with h.Client(sock2) as c:
                ct = c.encrypt("mk", b"two keys", ctx)
        finally:
            a2.stop()
        pids = [e[0] for e in h.parse_header(ct)["edks"]]
        say("multi-keyring EDKs: %r" % pids)
        self.assertEqual(len(pids), 2)
        self.assertIn(b"aws-kms", pids)
        for only in ({"aws2": self.keys["aws2"]}, {"mk": loc}):
            d3 = h.scratch_dir()
            a3, sock3 = k.start_agent(d3, only, k.aws_env())
            try:
                with h.Client(sock3) as c:
                    r = c.decrypt(ct, ctx)
                self.assertEqual(r["plaintext"], b"two keys")
                say("decrypted with only %s" % list(only))
            finally:
                a3.stop()

    def test_no_secrets_in_log(self):
        log = self.agent.log_bytes()
        for s in (k.AWS_SECRET, k.AWS_TOKEN):
            self.assertNotIn(s.encode(), log)


if __name__ == "__main__":
    h.run_tests()
