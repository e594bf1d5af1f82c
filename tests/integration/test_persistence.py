"""Ciphertexts outlive the agent: a restarted agent with the same key
files decrypts everything written before."""

import os
import unittest

import harness as h
from harness import Agent, Client, say

ALIAS = "users-email"


class PersistenceTest(unittest.TestCase):
    def test_restart_decrypts_everything(self):
        s = h.Setup({ALIAS: {"max_messages": 4}, "orders-note": {}})
        rows = []
        a = s.start()
        with Client(s.socket) as c:
            for i in range(30):
                alias = ALIAS if i % 3 else "orders-note"
                pt = os.urandom(i * 37) if i % 5 == 0 else \
                    ("user%d@example.com" % i).encode()
                ctx = {"table": "users", "row": str(i)}
                rows.append((alias, pt, ctx, c.encrypt(alias, pt, ctx)))
        say("encrypted %d values under 2 aliases; stopping" % len(rows))
        a.stop()

        say("a new agent with the same key files decrypts all of them")
        a = s.start()
        with Client(s.socket) as c:
            for alias, pt, ctx, ct in rows:
                r = c.decrypt(ct, ctx)
                self.assertEqual(r["plaintext"], pt)
                self.assertEqual(r["key"], alias)
                self.assertEqual(r["context"], ctx)
            say("and the wrong context still fails after restart")
            h.expect_error(c.request("decrypt", ciphertext=rows[0][3],
                                     context={"row": "999"}),
                           h.KC_ECONTEXT)
        a.stop()

        say("a third start, via a fresh config file naming the same keys, "
            "under a different socket")
        cfg = os.path.join(s.dir, "again.ini")
        sock = os.path.join(s.dir, "b.sock")
        opts = dict(s.agent_opts, socket=sock)
        h.write_config(cfg, opts, s.key_sections)
        a = Agent(cfg, sock)
        a.start()
        with Client(sock) as c:
            for alias, pt, ctx, ct in rows[::7]:
                self.assertEqual(c.decrypt(ct)["plaintext"], pt)
        a.stop()

    def test_other_master_key_cannot_decrypt(self):
        say("an agent with a different master key under the same alias "
            "cannot decrypt (KC_ENODATAKEY or KC_EAUTH), no plaintext")
        s1 = h.Setup({ALIAS: {}})
        a = s1.start()
        with Client(s1.socket) as c:
            ct = c.encrypt(ALIAS, b"only for key one")
        a.stop()
        s2 = h.Setup({ALIAS: {}})
        a = s2.start()
        with Client(s2.socket) as c:
            h.expect_error(c.request("decrypt", ciphertext=ct),
                           (h.KC_ENODATAKEY, h.KC_EAUTH))
        a.stop()


if __name__ == "__main__":
    h.run_tests()
