"""Wire-protocol tests against a real agent (proto/PROTOCOL.md).

Every abusive case is followed by a check that the agent is still alive
and that a second, well-behaved client still gets served.
"""

import os
import socket
import struct
import time
import unittest

import harness as h
from harness import Client, expect_error, frame, pack, say

ALIAS = "users-email"


class ProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.setup = h.Setup({ALIAS: {"max_messages": 1000},
                             "other-key": {}})
        cls.agent = cls.setup.start()
        cls.path = cls.setup.socket

    @classmethod
    def tearDownClass(cls):
        cls.agent.stop()

    def tearDown(self):
        # After every case: the agent is alive and serves a new client.
        self.assertTrue(self.agent.alive(),
                        "agent died:\n" + self.agent.log_tail())
        h.assert_serving(self.path, ALIAS)

    def client(self):
        c = Client(self.path)
        self.addCleanup(c.close)
        return c

    # ------------------------------------------------------------ framing

    def test_example_frame_bytes(self):
        say("the ping frame from PROTOCOL.md section 6, byte for byte")
        c = self.client()
        c.send_raw(bytes.fromhex(
            "0000000d82a26964" "07a26f70a470696e67"))
        r = c.recv()
        self.assertEqual(r["id"], 7)
        self.assertIs(r["ok"], True)

    def test_frame_split_into_single_bytes(self):
        say("two frames sent one byte per write are both answered")
        c = self.client()
        data = frame(pack({"id": 11, "op": "ping"}))
        data += frame(pack({"id": 12, "op": "encrypt", "key": ALIAS,
                            "plaintext": b"split"}))
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for i in range(len(data)):
            c.send_raw(data[i:i + 1])
            if i % 7 == 0:
                time.sleep(0.001)
        got = {c.recv()["id"], c.recv()["id"]}
        self.assertEqual(got, {11, 12})

    def test_many_frames_in_one_write(self):
        say("100 ping frames in one write: 100 answers, matching ids")
        c = self.client()
        blob = b"".join(frame(pack({"id": 1000 + i, "op": "ping"}))
                        for i in range(100))
        c.send_raw(blob)
        ids = set()
        for _ in range(100):
            r = c.recv()
            self.assertIs(r["ok"], True)
            ids.add(r["id"])
        self.assertEqual(ids, set(range(1000, 1100)))

    def test_pipelined_64(self):
        say("64 pipelined mixed requests answered once each, by id")
        c = self.client()
        reqs = []
        for i in range(64):
            if i % 4 == 0:
                reqs.append({"op": "ping"})
            elif i % 4 == 3:
                reqs.append({"op": "stats"})
            else:
                reqs.append({"op": "encrypt", "key": ALIAS,
                             "plaintext": b"p%d" % i,
                             "context": {"n": str(i)}})
        ids, got = c.pipeline(reqs)
        self.assertEqual(set(got), set(ids))
        cts = {}
        for rid, req in zip(ids, reqs):
            self.assertIs(got[rid]["ok"], True, got[rid])
            if req["op"] == "encrypt":
                cts[rid] = (got[rid]["ciphertext"], req)
        say("their ciphertexts decrypt, pipelined, to the right plaintexts")
        dreqs = [{"op": "decrypt", "ciphertext": ct,
                  "context": req["context"]} for ct, req in cts.values()]
        dids, dgot = c.pipeline(dreqs)
        for rid, (ct, req) in zip(dids, cts.values()):
            self.assertEqual(dgot[rid]["plaintext"], req["plaintext"])

    def test_large_ids_echoed(self):
        say("ids 0 and 2^64-1 are echoed unchanged")
        c = self.client()
        for rid in (0, 2 ** 32, 2 ** 64 - 1):
            c.send({"id": rid, "op": "ping"})
            r = c.recv()
            self.assertEqual(r["id"], rid)
            self.assertIs(r["ok"], True)

    def test_oversized_length_prefix(self):
        say("length prefix 0xFFFFFFF0: KC_ETOOBIG (id nil) or close, "
            "without allocating it")
        peak0 = self.agent.vm_kib("VmPeak")
        c = self.client()
        c.send_raw(struct.pack(">I", 0xFFFFFFF0))
        r = c.recv_or_closed()
        if r is not None:
            expect_error(r, h.KC_ETOOBIG, rid=None)
            say("got KC_ETOOBIG; now the connection must close")
            c.expect_closed()
        peak1 = self.agent.vm_kib("VmPeak")
        say("agent VmPeak grew by %d KiB" % (peak1 - peak0))
        self.assertLess(peak1 - peak0, 512 * 1024,
                        "agent address space grew: did it allocate?")

    def test_length_just_over_max_frame(self):
        say("length max_frame+1 refused with KC_ETOOBIG or close")
        c = self.client()
        c.send_raw(struct.pack(">I", h.DEFAULT_MAX_FRAME + 1) + b"\x80")
        r = c.recv_or_closed()
        if r is not None:
            expect_error(r, h.KC_ETOOBIG, rid=None)
            c.expect_closed()

    def test_length_at_max_frame_is_read(self):
        say("a body of exactly max_frame bytes is accepted as a frame")
        c = self.client()
        probe = pack({"id": 5, "op": "ping", "pad": b"x" * 70000})
        n = 70000 + h.DEFAULT_MAX_FRAME - len(probe)
        body = pack({"id": 5, "op": "ping", "pad": b"x" * n})
        self.assertEqual(len(body), h.DEFAULT_MAX_FRAME)
        c.send_body(body)
        r = c.recv()
        self.assertEqual(r["id"], 5)
        self.assertIs(r["ok"], True, r)

    def test_zero_length(self):
        say("length 0 gets an error (id nil) or a close")
        c = self.client()
        c.send_raw(b"\x00\x00\x00\x00")
        r = c.recv_or_closed()
        if r is not None:
            expect_error(r, (h.KC_EPROTO, h.KC_EINVAL), rid=None)
            if not c.is_closed():
                say("connection kept: it must still serve")
                self.assertIs(c.request("ping")["ok"], True)

    def test_replies_before_a_framing_error(self):
        say("three pings and a zero-length frame in one write: the three "
            "replies arrive, then the framing error, then the close")
        c = self.client()
        c.send_raw(b"".join(frame(pack({"id": i, "op": "ping"}))
                            for i in (1, 2, 3)) + b"\x00\x00\x00\x00")
        self.assertEqual([c.recv()["id"] for _ in range(3)], [1, 2, 3])
        expect_error(c.recv(), h.KC_EPROTO, rid=None)
        c.expect_closed()

    def test_burst_larger_than_a_flush(self):
        say("150 encrypts of 1 KiB in one write (replies past the 16 KiB "
            "flush mark): every reply arrives, each once")
        c = self.client()
        c.send_raw(b"".join(
            frame(pack({"id": i, "op": "encrypt", "key": ALIAS,
                        "plaintext": os.urandom(1024)}))
            for i in range(150)))
        ids = sorted(c.recv()["id"] for _ in range(150))
        self.assertEqual(ids, list(range(150)))
        self.assertIs(c.request("ping")["ok"], True)

    def test_malformed_msgpack(self):
        say("invalid MessagePack: KC_EPROTO, id nil, connection usable")
        c = self.client()
        for bad in (b"\xc1", b"\x82\xa2id", b"\xdf\xff\xff\xff\xff",
                    b"\x81\xa2id\xcf\x00"):
            c.send_body(bad)
            expect_error(c.recv(), h.KC_EPROTO, rid=None)
        self.assertIs(c.request("ping")["ok"], True)

    def test_hostile_msgpack_lengths(self):
        say("msgpack headers claiming 4 Gi elements/bytes in a tiny body: "
            "KC_EPROTO, no allocation, conn usable")
        c = self.client()
        prefix = b"\x83\xa2id\x01\xa2op\xa4ping\xa1x"
        for tail in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                     b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                     b"\xc9\xff\xff\xff\xff\x01"):
            c.send_body(prefix + tail)
            expect_error(c.recv(), (h.KC_EPROTO, h.KC_ETOOBIG), rid=None)
        self.assertIs(c.request("ping")["ok"], True)

    def test_deep_nesting(self):
        say("100000-deep nested arrays: an error, no stack overflow")
        c = self.client()
        c.send_body(b"\x83\xa2id\x01\xa2op\xa4ping\xa1x" +
                    b"\x91" * 100000 + b"\xc0")
        expect_error(c.recv(), (h.KC_EPROTO, h.KC_ETOOBIG, h.KC_EINVAL))
        self.assertIs(c.request("ping")["ok"], True)

    def test_duplicate_context_key(self):
        say("a context map with a duplicated key: KC_ECONTEXT")
        c = self.client()
        c.send_body(b"\x85\xa2id\x05\xa2op\xa7encrypt"
                    b"\xa3key\xab" + ALIAS.encode() +
                    b"\xa9plaintext\xc4\x01x"
                    b"\xa7context\x82\xa1a\xa11\xa1a\xa12")
        expect_error(c.recv(), h.KC_ECONTEXT, rid=5)

    def test_empty_strings_everywhere(self):
        say("a request map whose keys are two empty strings: KC_EPROTO "
            "(found by request_fuzz)")
        c = self.client()
        c.send_body(b"\x82\xa0\xa0\xa0\xa0")
        expect_error(c.recv(), h.KC_EPROTO, rid=None)
        say("empty op, alias, plaintext and ciphertext: clear errors")
        expect_error(c.request(""), h.KC_EUNKNOWNOP)
        expect_error(c.request("encrypt", key="", plaintext=b"x"),
                     (h.KC_ENOKEY, h.KC_EINVAL))
        expect_error(c.request("decrypt", ciphertext=b""),
                     (h.KC_EFORMAT, h.KC_EINVAL))
        say("an empty plaintext round trips")
        ct = c.encrypt(ALIAS, b"", {"k": ""})
        self.assertEqual(c.decrypt(ct)["plaintext"], b"")
        self.assertIs(c.request("ping")["ok"], True)

    def test_huge_context_is_cheap(self):
        say("a context of 45000 pairs (frame < max_frame) is refused "
            "quickly: no quadratic work on the event loop")
        c = self.client()
        ctx = {"%x" % i: "" for i in range(45000)}
        body = pack({"id": 41, "op": "encrypt", "key": ALIAS,
                     "plaintext": b"x", "context": ctx})
        self.assertLess(len(body), h.DEFAULT_MAX_FRAME)
        t0 = time.monotonic()
        c.send_body(body)
        r = c.recv(timeout=120)
        took = time.monotonic() - t0
        say("answered %s in %.2fs" % (r.get("error", {}).get("name"), took))
        expect_error(r, (h.KC_ETOOBIG, h.KC_ECONTEXT, h.KC_EINVAL))
        self.assertLess(took, 1.0, "one request held the event loop for "
                        "%.1fs" % took)

    def test_client_that_never_reads(self):
        say("a client that sends 24 MB of encrypts and never reads: the "
            "agent stops reading it and keeps serving others")
        rss0 = self.agent.vm_kib("VmRSS")
        c = self.client()
        c.sock.setblocking(False)
        one = os.urandom(60000)
        blob = b"".join(frame(pack({"id": i, "op": "encrypt", "key": ALIAS,
                                    "plaintext": one}))
                        for i in range(400))
        sent = 0
        t0 = time.monotonic()
        while sent < len(blob) and time.monotonic() - t0 < 3:
            try:
                sent += c.sock.send(blob[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        say("agent took %d of %d bytes" % (sent, len(blob)))
        t1 = time.monotonic()
        h.assert_serving(self.path, ALIAS)
        say("another client served in %.3fs" % (time.monotonic() - t1))
        grew = self.agent.vm_kib("VmRSS") - rss0
        say("agent RSS grew %d KiB" % grew)
        self.assertLess(grew, 256 * 1024)

    def test_truncated_frame_then_close(self):
        say("a client closing mid-frame does not disturb the agent")
        for part in (b"\x00", b"\x00\x00\x00\x20", b"\x00\x00\x00\x20\x82"):
            c = Client(self.path)
            c.send_raw(part)
            c.close()
        h.assert_serving(self.path, ALIAS)

    def test_trailing_bytes_in_body(self):
        say("bytes after the map inside a body: KC_EPROTO")
        c = self.client()
        c.send_body(pack({"id": 3, "op": "ping"}) + b"\xc0")
        expect_error(c.recv(), h.KC_EPROTO)
        self.assertIs(c.request("ping")["ok"], True)

    def test_body_not_a_map(self):
        say("bodies that are not maps: KC_EPROTO, id nil, conn usable")
        c = self.client()
        for obj in ([1, "ping"], "ping", 7, None, b"\x00"):
            c.send(obj)
            expect_error(c.recv(), h.KC_EPROTO, rid=None)
        self.assertIs(c.request("ping")["ok"], True)

    def test_wrong_types(self):
        c = self.client()
        say("id as a string: KC_EINVAL with id nil")
        c.send({"id": "1", "op": "ping"})
        expect_error(c.recv(), h.KC_EINVAL, rid=None, field="id")
        say("negative id: KC_EINVAL with id nil")
        c.send({"id": -1, "op": "ping"})
        expect_error(c.recv(), h.KC_EINVAL, rid=None, field="id")
        say("missing id: error with id nil")
        c.send({"op": "ping"})
        expect_error(c.recv(), h.KC_EINVAL, rid=None, field="id")
        say("missing op: KC_EINVAL, id echoed")
        c.send({"id": 21})
        expect_error(c.recv(), h.KC_EINVAL, rid=21, field="op")
        say("op as an int: KC_EINVAL, id echoed")
        c.send({"id": 22, "op": 3})
        expect_error(c.recv(), h.KC_EINVAL, rid=22, field="op")
        say("key as an int: KC_EINVAL naming 'key'")
        c.send({"id": 23, "op": "encrypt", "key": 5, "plaintext": b"x"})
        expect_error(c.recv(), h.KC_EINVAL, rid=23, field="key")
        say("plaintext as a map: KC_EINVAL naming 'plaintext'")
        c.send({"id": 24, "op": "encrypt", "key": ALIAS,
                "plaintext": {"a": "b"}})
        expect_error(c.recv(), h.KC_EINVAL, rid=24, field="plaintext")
        say("missing plaintext: KC_EINVAL naming 'plaintext'")
        c.send({"id": 25, "op": "encrypt", "key": ALIAS})
        expect_error(c.recv(), h.KC_EINVAL, rid=25, field="plaintext")
        say("context as an array: KC_EINVAL naming 'context'")
        c.send({"id": 26, "op": "encrypt", "key": ALIAS, "plaintext": b"x",
                "context": ["a", "b"]})
        expect_error(c.recv(), (h.KC_EINVAL, h.KC_ECONTEXT), rid=26)
        say("context value an int: KC_EINVAL or KC_ECONTEXT")
        c.send({"id": 27, "op": "encrypt", "key": ALIAS, "plaintext": b"x",
                "context": {"a": 1}})
        expect_error(c.recv(), (h.KC_EINVAL, h.KC_ECONTEXT), rid=27)
        say("ciphertext as an int: KC_EINVAL naming 'ciphertext'")
        c.send({"id": 28, "op": "decrypt", "ciphertext": 9})
        expect_error(c.recv(), h.KC_EINVAL, rid=28, field="ciphertext")
        say("hello versions not an array: KC_EINVAL")
        c.send({"id": 29, "op": "hello", "versions": 1})
        expect_error(c.recv(), h.KC_EINVAL, rid=29, field="versions")
        say("the same connection still serves")
        self.assertIs(c.request("ping")["ok"], True)

    def test_unknown_fields_ignored(self):
        say("unknown request fields are ignored")
        c = self.client()
        r = c.request("ping", future_field={"x": [1, 2]})
        self.assertIs(r["ok"], True)

    def test_unknown_op(self):
        say("unknown op: KC_EUNKNOWNOP with id echoed, conn usable")
        c = self.client()
        expect_error(c.request("frobnicate"), h.KC_EUNKNOWNOP)
        c.send({"id": 77, "op": ""})
        expect_error(c.recv(), (h.KC_EUNKNOWNOP, h.KC_EINVAL), rid=77)
        self.assertIs(c.request("ping")["ok"], True)

    # -------------------------------------------------------------- hello

    def test_hello_unknown_version(self):
        say("hello versions [99]: KC_EVERSION, connection still usable")
        c = self.client()
        expect_error(c.request("hello", versions=[99]), h.KC_EVERSION)
        expect_error(c.request("hello", versions=[]), h.KC_EVERSION)
        self.assertIs(c.request("ping")["ok"], True)
        say("then hello [1] on the same connection works")
        self.assertEqual(c.call("hello", versions=[1])["version"], 1)

    def test_hello_v1(self):
        say("hello [1]: version 1, agent, max_frame, ops")
        c = self.client()
        r = c.call("hello", versions=[1])
        self.assertEqual(r["version"], 1)
        self.assertIsInstance(r["agent"], str)
        self.assertTrue(r["agent"].startswith("keycache-agent"), r)
        self.assertEqual(r["max_frame"], h.DEFAULT_MAX_FRAME)
        for op in ("hello", "ping", "encrypt", "decrypt", "stats"):
            self.assertIn(op, r["ops"])
        say("hello [99, 1, 7] picks 1")
        self.assertEqual(c.call("hello", versions=[99, 1, 7])["version"], 1)

    # ------------------------------------------------------------- crypto

    def test_round_trip(self):
        c = self.client()
        ctx = {"table": "users", "column": "email"}
        for pt in (b"", b"a", b"alice@example.com", bytes(range(256)),
                   os.urandom(70000)):
            say("encrypt/decrypt round trip, %d bytes" % len(pt))
            ct = c.encrypt(ALIAS, pt, ctx)
            self.assertIsInstance(ct, bytes)
            hdr = h.parse_header(ct)
            self.assertEqual(hdr["suite"], 0x0478)
            if len(pt) > 8:
                self.assertNotIn(pt, ct)
            r = c.decrypt(ct, ctx)
            self.assertEqual(r["plaintext"], pt)
            self.assertEqual(r["key"], ALIAS)
            self.assertEqual(r["context"], ctx)

    def test_one_mib_and_over(self):
        say("1 MiB plaintext round trips; 1 MiB + 1 is KC_ETOOBIG")
        c = self.client()
        pt = os.urandom(1 << 20)
        ct = c.encrypt(ALIAS, pt)
        self.assertEqual(c.decrypt(ct)["plaintext"], pt)
        r = c.request("encrypt", key=ALIAS, plaintext=pt + b"x")
        expect_error(r, h.KC_ETOOBIG)

    def test_str_accepted_for_bin(self):
        say("str accepted where bin is expected (plaintext)")
        c = self.client()
        ct = c.call("encrypt", key=ALIAS, plaintext="hello")["ciphertext"]
        self.assertEqual(c.decrypt(ct)["plaintext"], b"hello")

    def test_context_rules(self):
        c = self.client()
        ct = c.encrypt(ALIAS, b"secret", {"a": "1", "b": ""})
        say("decrypt with a subset of the context succeeds")
        self.assertEqual(c.decrypt(ct, {"a": "1"})["plaintext"], b"secret")
        self.assertEqual(c.decrypt(ct, {})["plaintext"], b"secret")
        say("decrypt with a wrong value: KC_ECONTEXT, no plaintext")
        expect_error(c.request("decrypt", ciphertext=ct,
                               context={"a": "2"}), h.KC_ECONTEXT)
        say("decrypt with an extra pair: KC_ECONTEXT")
        expect_error(c.request("decrypt", ciphertext=ct,
                               context={"a": "1", "z": "1"}), h.KC_ECONTEXT)
        say("reserved aws-crypto- key refused: KC_ECONTEXT")
        expect_error(c.request("encrypt", key=ALIAS, plaintext=b"x",
                               context={"aws-crypto-public-key": "x"}),
                     h.KC_ECONTEXT)
        say("empty context key refused")
        expect_error(c.request("encrypt", key=ALIAS, plaintext=b"x",
                               context={"": "x"}),
                     (h.KC_ECONTEXT, h.KC_EINVAL))
        say("non-ASCII context round trips")
        ctx = {"t\u00e4ble": "\u7528\u6237", "e": ""}
        ct = c.encrypt(ALIAS, b"x", ctx)
        self.assertEqual(c.decrypt(ct, ctx)["context"], ctx)
        say("contexts around 512 serialized bytes (the agent's stack "
            "buffer) and far past it round trip, 9+ pairs too")
        for size in (500, 507, 508, 509, 600, 20000):
            ctx = {"k": "v" * (size - 8)}  # 2 + 2 + 1 + 2 + value bytes
            ct = c.encrypt(ALIAS, b"y", ctx)
            self.assertEqual(c.decrypt(ct, ctx)["plaintext"], b"y")
        ctx = {"k%02d" % i: "v" * 60 for i in range(12)}
        ct = c.encrypt(ALIAS, b"z", ctx)
        self.assertEqual(c.decrypt(ct, ctx)["context"], ctx)

    def test_unknown_alias(self):
        say("unknown key alias: KC_ENOKEY, id echoed")
        c = self.client()
        c.send({"id": 31, "op": "encrypt", "key": "no-such-key",
                "plaintext": b"x"})
        expect_error(c.recv(), h.KC_ENOKEY, rid=31)

    def test_aliases_are_separate(self):
        say("a message records which alias unwrapped it")
        c = self.client()
        ct = c.encrypt("other-key", b"o")
        r = c.decrypt(ct)
        self.assertEqual(r["key"], "other-key")
        self.assertEqual(r["plaintext"], b"o")

    def test_bad_ciphertexts(self):
        c = self.client()
        ct = c.encrypt(ALIAS, b"tamper me please", {"k": "v"})
        say("garbage, empty and truncated ciphertexts fail cleanly")
        for bad in (b"", b"\x02", b"\x01\x00\x78", os.urandom(64),
                    ct[:len(ct) // 2], ct[:-1]):
            r = c.request("decrypt", ciphertext=bad)
            expect_error(r, (h.KC_EFORMAT, h.KC_EAUTH, h.KC_EUNSUPPORTED,
                             h.KC_EINVAL))
        say("single-byte flips across the message fail cleanly")
        step = max(1, len(ct) // 40)
        for i in list(range(0, len(ct), step)) + [len(ct) - 1]:
            bad = bytearray(ct)
            bad[i] ^= 0x01
            r = c.request("decrypt", ciphertext=bytes(bad))
            self.assertIs(r["ok"], False,
                          "flip at byte %d decrypted: %r" % (i, r))
            h.check_error_shape(r)
            self.assertNotIn("plaintext", r)
        say("unsupported suite byte: error, not a crash")
        bad = bytearray(ct)
        bad[1:3] = b"\x00\x14"
        expect_error(c.request("decrypt", ciphertext=bytes(bad)),
                     (h.KC_EUNSUPPORTED, h.KC_EFORMAT, h.KC_EAUTH))

    # -------------------------------------------------------- connections

    def test_many_clients(self):
        say("40 simultaneous connections each get answers")
        cs = [Client(self.path) for _ in range(40)]
        try:
            for i, c in enumerate(cs):
                c.send({"id": i, "op": "ping"})
            for i, c in enumerate(cs):
                self.assertEqual(c.recv()["id"], i)
        finally:
            for c in cs:
                c.close()

    def test_client_vanishes_with_requests_in_flight(self):
        say("a client that sends 32 encrypts and leaves does no harm")
        for _ in range(5):
            c = Client(self.path)
            c.send_raw(b"".join(
                frame(pack({"id": i, "op": "encrypt", "key": ALIAS,
                            "plaintext": os.urandom(4096)}))
                for i in range(32)))
            c.close()
        h.assert_serving(self.path, ALIAS)

    def test_stats_shape(self):
        say("stats has keys/cache/agent maps with counters")
        c = self.client()
        s = c.stats()
        self.assertIn(ALIAS, s["keys"])
        for k in ("encrypt", "decrypt", "errors", "cache_hits",
                  "cache_misses", "provider_calls", "provider_errors",
                  "entries", "locked_bytes"):
            self.assertIsInstance(s["keys"][ALIAS][k], int, k)
        for k in ("entries", "capacity", "locked_bytes", "evictions",
                  "expirations"):
            self.assertIsInstance(s["cache"][k], int, k)
        self.assertIsInstance(s["agent"]["version"], str)


class SmallFrameTest(unittest.TestCase):
    """An agent with max_frame = 4096."""

    def test_configured_max_frame(self):
        setup = h.Setup({ALIAS: {}}, agent_opts={"max_frame": 4096})
        agent = setup.start()
        try:
            with Client(setup.socket) as c:
                say("hello reports max_frame 4096")
                r = c.call("hello", versions=[1])
                self.assertEqual(r["max_frame"], 4096)
                say("a 4000-byte body is served")
                r = c.request("encrypt", key=ALIAS, plaintext=b"y" * 3900)
                self.assertIs(r["ok"], True, r)
                say("a 5000-byte body: KC_ETOOBIG (id nil) or close")
                c.send({"id": 9, "op": "encrypt", "key": ALIAS,
                        "plaintext": b"y" * 5000})
                r = c.recv_or_closed()
                if r is not None:
                    expect_error(r, h.KC_ETOOBIG, rid=None)
                    c.expect_closed()
            h.assert_serving(setup.socket, ALIAS)
        finally:
            agent.stop()


if __name__ == "__main__":
    h.run_tests()
