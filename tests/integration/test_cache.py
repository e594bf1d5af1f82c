"""Cache limits seen from outside: TTL, capacity (LRU), per-alias caps.

The exact-count and clock-controlled checks live in the cmocka cache
tests; these prove the same limits hold in a real agent on real time.
"""

import time
import unittest

import harness as h
from harness import Client, say

ALIAS = "users-email"


class CacheTest(unittest.TestCase):
    def test_ttl_expiry_gives_new_data_key(self):
        s = h.Setup({ALIAS: {"ttl": 1}})
        a = s.start()
        with Client(s.socket) as c:
            say("two encrypts within the 1 s TTL share a data key")
            first = [c.encrypt(ALIAS, b"a"), c.encrypt(ALIAS, b"b")]
            self.assertEqual(h.data_key_groups(first), [2])
            time.sleep(1.3)
            say("after the TTL the next encrypt gets a new data key")
            late = c.encrypt(ALIAS, b"c")
            self.assertEqual(h.data_key_groups(first + [late]), [2, 1])
            st = c.stats()
            self.assertEqual(st["keys"][ALIAS]["provider_calls"], 2)
            say("expirations counted: %d" % st["cache"]["expirations"])
            self.assertGreaterEqual(st["cache"]["expirations"], 1)
            say("messages under the expired key still decrypt")
            self.assertEqual(c.decrypt(first[0])["plaintext"], b"a")
        a.stop()

    def test_capacity_evicts_lru(self):
        aliases = {"k1": {}, "k2": {}, "k3": {}}
        s = h.Setup(aliases, agent_opts={"capacity": 2})
        a = s.start()
        with Client(s.socket) as c:
            say("capacity 2: encrypting under 3 aliases evicts one entry")
            m1 = c.encrypt("k1", b"1")
            c.encrypt("k2", b"2")
            c.encrypt("k3", b"3")
            st = c.stats()
            say("cache: %r" % st["cache"])
            self.assertLessEqual(st["cache"]["entries"], 2)
            self.assertEqual(st["cache"]["capacity"], 2)
            self.assertGreaterEqual(st["cache"]["evictions"], 1)
            say("the least recently used alias (k1) needs a new data key")
            m1b = c.encrypt("k1", b"1")
            self.assertEqual(h.data_key_groups([m1, m1b]), [1, 1])
            self.assertEqual(c.stats()["keys"]["k1"]["provider_calls"], 2)
            say("everything still decrypts")
            self.assertEqual(c.decrypt(m1)["plaintext"], b"1")
            self.assertEqual(c.decrypt(m1b)["plaintext"], b"1")
        a.stop()

    def test_caps_are_per_alias(self):
        s = h.Setup({"small": {"max_messages": 2},
                     "large": {"max_messages": 100}})
        a = s.start()
        with Client(s.socket) as c:
            say("interleaved aliases: each alias counts its own messages")
            small, large = [], []
            for i in range(6):
                small.append(c.encrypt("small", b"s"))
                large.append(c.encrypt("large", b"l"))
            self.assertEqual(h.data_key_groups(small), [2, 2, 2])
            self.assertEqual(h.data_key_groups(large), [6])
            st = c.stats()["keys"]
            self.assertEqual(st["small"]["provider_calls"], 3)
            self.assertEqual(st["large"]["provider_calls"], 1)
        a.stop()


if __name__ == "__main__":
    h.run_tests()
