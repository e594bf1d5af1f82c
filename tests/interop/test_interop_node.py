"""Interop with the official AWS Encryption SDK for JavaScript (Node).

Both directions, through a real keycache-agent on a scratch Unix socket:

  node -> keycache  @aws-crypto/client-node encrypts (suites 0x0478 and
                    0x0578, several frame lengths), the agent decrypts;
  keycache -> node  the agent encrypts (both suites, frame lengths 4096
                    and 777), the node SDK decrypts.

The node side is a raw AES keyring (AES256_GCM_IV12_TAG16_NO_PADDING) over
the same 256-bit key bytes, namespace and name as the agent's local key.
Every combination of encryption context (empty, ASCII, non-ASCII keys and
values, pairs whose UTF-16 and UTF-8 orders differ, mixed-case ASCII) and
plaintext (empty, 1 byte, binary, exactly two frames, multi-frame) is run;
every failure is collected and reported with the case and the hex of the
message header.

The node keyring is built with utf8Sorting: true, the mode that follows
the message-format spec.  The SDK's default (utf8Sorting unset) sorts the
context it authenticates when wrapping with localeCompare
(aws-encryption-sdk-javascript issue 428); a separate test characterises
that mode: it must interoperate whenever the two orders agree, and when
they differ keycache must refuse cleanly (never a wrong plaintext).

Needs node and tests/interop/node_modules (tests/interop/install.sh):
without them the test exits 77 so meson reports it skipped, never passed.

Environment: KC_AGENT, KC_CTL (as the integration tests), KC_NODE (node
binary, default: node on PATH), KC_KEEP (keep the scratch directory).
"""

import base64
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ESDK_JS = os.path.join(HERE, "esdk_node.js")
NODE_MODULES = os.path.join(HERE, "node_modules")
CLIENT_PKG = os.path.join(NODE_MODULES, "@aws-crypto", "client-node",
                          "package.json")
NODE_TIMEOUT = 600
CTL_TIMEOUT = 60

try:
    sys.stdout.reconfigure(errors="backslashreplace")
except (AttributeError, ValueError):
    pass


def _skip(msg):
    print("SKIP: " + msg, flush=True)
    sys.exit(77)


NODE = os.environ.get("KC_NODE") or shutil.which("node")
if not NODE or not os.access(NODE, os.X_OK):
    _skip("node is not installed (KC_NODE or node on PATH)")
if not os.path.isfile(CLIENT_PKG):
    _skip("%s is missing: run tests/interop/install.sh" % CLIENT_PKG)


def _load_harness():
    path = os.path.join(HERE, "..", "integration", "harness.py")
    spec = importlib.util.spec_from_file_location("harness", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = mod
    spec.loader.exec_module(mod)
    return mod


h = _load_harness()
say = h.say

# ------------------------------------------------------------- the matrix

NAMESPACE = "keycache-interop-пространство"
KEY_NAME = "users/email-ключ-🔑"   # non-ASCII: provider info is bytes
PUBKEY = "aws-crypto-public-key"

SUITE_COMMIT = 0x0478
SUITE_COMMIT_P384 = 0x0578

# alias -> (suite, frame length); all share one key file, namespace, name.
ALIASES = {
    "ic": (SUITE_COMMIT, 4096),
    "ic-sig": (SUITE_COMMIT_P384, 4096),
    "ic-f777": (SUITE_COMMIT, 777),
    "ic-sig-f777": (SUITE_COMMIT_P384, 777),
}

CONTEXTS = [
    ("empty", {}),
    ("ascii", {"purpose": "interop", "table": "users"}),
    ("non-ascii", {"имя": "значение", "键": "值", "emoji 😀": "🔐✓",
                   "ascii-key": ""}),
    # UTF-16 order: "a" < U+1F600 (D83D..) < U+E000 < U+FF61;
    # UTF-8 order:  "a" < U+E000 (EE..) < U+FF61 (EF..) < U+1F600 (F0..).
    ("utf16-vs-utf8", {"\uff61": "halfwidth stop", "😀": "grinning",
                       "\ue000": "private use", "a": "1",
                       "\u00e9t\u00e9": "\u00e9t\u00e9"}),
    # Byte order "B" < "Z1" < "_x" < "a"; localeCompare differs.
    ("mixed-case", {"B": "upper", "a": "lower", "_x": "underscore",
                    "Z1": "zed"}),
]


def _many_pairs(n=48):
    """n pairs whose keys mix scripts, planes, case and digits; values of
    growing length, one empty."""
    alphabet = ["a", "Z", "_", "0", "é", "ж", "中", "😀", "\uff61",
                "\ue000", "\u00ff", "𝔸"]
    ctx = {}
    for i in range(n):
        k = (alphabet[i % len(alphabet)] +
             alphabet[(i * 5 + 3) % len(alphabet)] + str(i))
        ctx[k] = ("v%d-" % i + alphabet[(i * 7) % len(alphabet)] * i)[:60]
    ctx[alphabet[1] * 3] = ""
    return ctx


CONTEXTS.append(("many-pairs", _many_pairs()))

PLAINTEXTS = [
    ("empty", b""),
    ("1B", b"\xa5"),
    ("binary256", bytes((i * 167 + 13) % 256 for i in range(256))),
    ("2frames-8192", bytes((i * 31 + 7) % 251 for i in range(8192))),
    ("multi-10000", os.urandom(10000)),
]

# The largest plaintext the agent takes by default (max_plaintext 1 MiB),
# run once per suite in each direction.
MAX_PLAINTEXT = ("max-1MiB", os.urandom(1 << 20))

# node->keycache frame lengths besides the default 4096, each run with
# the multi-frame and the 1-byte plaintexts and one non-ASCII context.
EXTRA_FRAME_LENGTHS = [1, 100, 1000, 5000, 65536]


def utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode("utf-8"))


# ------------------------------------------------------ message structure

def header_len(msg):
    """Length of a v2 message header including its authentication tag
    (v2: no stored IV).  Raises on truncation."""
    pos = 0

    def need(n):
        if pos + n > len(msg):
            raise ValueError("truncated header")

    need(1 + 2 + 32 + 2)
    if msg[0] != 2:
        raise ValueError("version %d" % msg[0])
    pos = 1 + 2 + 32
    (aad_len,) = struct.unpack(">H", msg[pos:pos + 2])
    pos += 2 + aad_len
    need(2)
    (n_edk,) = struct.unpack(">H", msg[pos:pos + 2])
    pos += 2
    for _ in range(n_edk):
        for _ in range(3):
            need(2)
            (n,) = struct.unpack(">H", msg[pos:pos + 2])
            pos += 2 + n
    pos += 1 + 4 + 32 + 16   # content type, frame length, commitment, tag
    need(0)
    return pos


def header_hex(msg):
    try:
        n = header_len(msg)
    except ValueError as e:
        return "(%s) first bytes %s" % (e, msg[:256].hex())
    return msg[:n].hex()


def frame_length_field(msg):
    hdr = h.parse_header(msg)
    pos = 1 + 2 + 32
    (aad_len,) = struct.unpack(">H", msg[pos:pos + 2])
    pos += 2 + aad_len + 2
    for _ in range(len(hdr["edks"])):
        for _ in range(3):
            (n,) = struct.unpack(">H", msg[pos:pos + 2])
            pos += 2 + n
    content_type = msg[pos]
    (fl,) = struct.unpack(">I", msg[pos + 1:pos + 5])
    return content_type, fl


def header_context(msg):
    """The header's context as (list of (str, str)) in stored order."""
    return [(k.decode("utf-8"), v.decode("utf-8"))
            for k, v in h.parse_header(msg)["context"]]


def check_structure(msg, suite, expect_frame_len=None):
    """Problems (a list of strings) with the message's header: version,
    suite, context sorted by UTF-8 bytes, public key iff signed, one raw
    AES EDK whose provider info is name || 128 || 12 || IV(12)."""
    problems = []
    try:
        hdr = h.parse_header(msg)
    except AssertionError as e:
        return ["header does not parse: %s" % e]
    if hdr["suite"] != suite:
        problems.append("suite 0x%04x, expected 0x%04x"
                        % (hdr["suite"], suite))
    keys = [k for k, _ in hdr["context"]]
    if keys != sorted(keys):
        problems.append("header context not sorted by UTF-8 bytes: %r"
                        % keys)
    has_pub = PUBKEY.encode() in keys
    if has_pub != (suite == SUITE_COMMIT_P384):
        problems.append("%s %s in the context" % (
            PUBKEY, "present" if has_pub else "absent"))
    if len(hdr["edks"]) != 1:
        problems.append("%d EDKs, expected 1" % len(hdr["edks"]))
    else:
        pid, pinfo, edk_ct = hdr["edks"][0]
        name = KEY_NAME.encode("utf-8")
        if pid != NAMESPACE.encode("utf-8"):
            problems.append("EDK provider id %r" % pid)
        if (len(pinfo) != len(name) + 4 + 4 + 12 or
                not pinfo.startswith(name) or
                pinfo[len(name):len(name) + 8] !=
                struct.pack(">II", 128, 12)):
            problems.append("EDK provider info %s" % pinfo.hex())
        if len(edk_ct) != 32 + 16:
            problems.append("EDK ciphertext %d bytes" % len(edk_ct))
    ctype, fl = frame_length_field(msg)
    if ctype != 2:
        problems.append("content type %d, expected 2 (framed)" % ctype)
    if expect_frame_len is not None and fl != expect_frame_len:
        problems.append("frame length %d, expected %d"
                        % (fl, expect_frame_len))
    return problems


# ------------------------------------------------------------------- node

def node_run(cmd, requests):
    """Run esdk_node.js CMD over a list of requests; returns the results."""
    p = subprocess.run([NODE, ESDK_JS, cmd],
                       input=json.dumps(requests).encode("utf-8"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=NODE_TIMEOUT, cwd=HERE)
    if p.returncode != 0:
        raise AssertionError("node esdk_node.js %s exited %d:\n%s"
                             % (cmd, p.returncode,
                                p.stderr.decode("utf-8", "replace")))
    out = json.loads(p.stdout.decode("utf-8"))
    if not isinstance(out, list) or len(out) != len(requests):
        raise AssertionError("esdk_node.js %s: %d results for %d requests"
                             % (cmd, len(out) if isinstance(out, list)
                                else -1, len(requests)))
    return out


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(s):
    return base64.b64decode(s.encode("ascii"))


def ctl(*args, sock, stdin=b""):
    argv = [h.ctl_path(), "--socket", sock] + list(args)
    env = dict(os.environ)
    env.pop("KEYCACHE_SOCKET", None)
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env,
                          timeout=CTL_TIMEOUT)


COUNTS = {"node->keycache": 0, "keycache->node": 0, "cli": 0,
          "default-keyring ok": 0, "default-keyring refused": 0,
          "tamper": 0}


def tearDownModule():
    print("interop summary: %d node→keycache, %d keycache→node passed "
          "(+%d keycachectl, %d tamper; node default keyring: %d "
          "interoperate, %d cleanly refused as localeCompare-ordered)"
          % (COUNTS["node->keycache"], COUNTS["keycache->node"],
             COUNTS["cli"], COUNTS["tamper"],
             COUNTS["default-keyring ok"],
             COUNTS["default-keyring refused"]), flush=True)


class NodeInteropTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        d = h.scratch_dir()
        kf = os.path.join(d, "shared.key")
        cls.key = h.write_key(kf)
        aliases = {}
        for alias, (suite, fl) in ALIASES.items():
            opts = {"key_file": kf, "namespace": NAMESPACE,
                    "name": KEY_NAME}
            if suite != SUITE_COMMIT:
                opts["suite"] = "0x%04x" % suite
            if fl != 4096:
                opts["frame_len"] = str(fl)
            aliases[alias] = opts
        cls.setup = h.Setup(aliases, directory=d)
        cls.agent = cls.setup.start()
        cls.sock = cls.setup.socket
        cls.client = h.Client(cls.sock, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.agent.stop()

    def keyreq(self, **kw):
        r = {"key_b64": b64(self.key), "namespace": NAMESPACE,
             "name": KEY_NAME}
        r.update(kw)
        return r

    def kc_decrypt(self, ct, context=None):
        f = {"ciphertext": ct}
        if context is not None:
            f["context"] = context
        return self.client.request("decrypt", **f)

    # ------------------------------------------------------------ checks

    def check_kc_plain(self, r, pt, ctx, msg):
        """Problems with a keycache decrypt response for message msg."""
        if r.get("ok") is not True:
            e = r.get("error", {})
            return ["keycache decrypt failed: %s %s" % (
                e.get("name"), e.get("message"))]
        problems = []
        if r.get("plaintext") != pt:
            problems.append("plaintext differs (%d bytes, expected %d)" % (
                len(r.get("plaintext") or b""), len(pt)))
        got = dict(r.get("context") or {})
        if got != dict(header_context(msg)):
            problems.append("returned context %r != header's %r"
                            % (got, header_context(msg)))
        got.pop(PUBKEY, None)
        if got != ctx:
            problems.append("context %r, expected %r" % (got, ctx))
        if r.get("key") not in ALIASES:
            problems.append("key alias %r" % r.get("key"))
        return problems

    def report(self, failures, total, what):
        if failures:
            lines = ["%d of %d %s cases failed:" % (len(failures), total,
                                                    what)]
            for case, problems, msg in failures:
                lines.append("  CASE %s" % case)
                for p in problems:
                    lines.append("    - %s" % p)
                if msg is not None:
                    lines.append("    header: %s" % header_hex(msg))
            self.fail("\n".join(lines))

    # ------------------------------------------------------------- tests

    def test_0_pinned_version(self):
        with open(os.path.join(HERE, "package.json"), encoding="utf-8") as f:
            pin = json.load(f)["dependencies"]["@aws-crypto/client-node"]
        p = subprocess.run([NODE, ESDK_JS, "version"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120, cwd=HERE)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        v = json.loads(p.stdout)
        say("@aws-crypto/client-node %s (pinned %s) on node %s"
            % (v["client_node"], pin, v["node"]))
        self.assertEqual(v["client_node"], pin,
                         "node_modules is stale: run tests/interop/"
                         "install.sh")

    def test_0_matrix_is_meaningful(self):
        """The contexts exercise what they claim: one orders differently
        by UTF-16 code units and by UTF-8 bytes; the multi-frame
        plaintexts span several 4096-byte frames."""
        ctx = dict(CONTEXTS)["utf16-vs-utf8"]
        self.assertNotEqual(
            sorted(ctx, key=lambda k: k.encode("utf-16-be")),
            utf8_sorted(ctx))
        self.assertGreater(len(dict(PLAINTEXTS)["multi-10000"]), 2 * 4096)
        self.assertEqual(len(dict(PLAINTEXTS)["2frames-8192"]), 2 * 4096)

    def test_node_to_keycache(self):
        cases = []
        for suite in (SUITE_COMMIT, SUITE_COMMIT_P384):
            for cname, ctx in CONTEXTS:
                for pname, pt in PLAINTEXTS:
                    cases.append((suite, cname, ctx, pname, pt, None))
            for fl in EXTRA_FRAME_LENGTHS:
                for pname, pt in PLAINTEXTS:
                    if pname in ("1B", "multi-10000"):
                        cases.append((suite, "non-ascii", CONTEXTS[2][1],
                                      pname, pt, fl))
            cases.append((suite, "non-ascii", CONTEXTS[2][1],
                          MAX_PLAINTEXT[0], MAX_PLAINTEXT[1], None))
        reqs = []
        for suite, _, ctx, _, pt, fl in cases:
            r = self.keyreq(plaintext_b64=b64(pt), context=ctx, suite=suite)
            if fl is not None:
                r["frame_length"] = fl
            reqs.append(r)
        say("node encrypts %d messages" % len(reqs))
        results = node_run("encrypt", reqs)

        failures = []
        passed = 0
        for (suite, cname, ctx, pname, pt, fl), res in zip(cases, results):
            case = ("node→keycache suite=0x%04x ctx=%s pt=%s frame=%s"
                    % (suite, cname, pname, fl or 4096))
            if not res.get("ok"):
                failures.append((case, ["node encrypt failed: %s"
                                        % res.get("error")], None))
                continue
            msg = unb64(res["ciphertext_b64"])
            problems = check_structure(msg, suite, fl or 4096)
            r = self.kc_decrypt(msg)
            problems += self.check_kc_plain(r, pt, ctx, msg)
            if not problems and ctx:
                # The same message with the caller's expected context.
                r2 = self.kc_decrypt(msg, context=ctx)
                problems += ["with required context: " + p for p in
                             self.check_kc_plain(r2, pt, ctx, msg)]
            if problems:
                failures.append((case, problems, msg))
            else:
                passed += 1
        COUNTS["node->keycache"] += passed
        say("node→keycache: %d of %d passed" % (passed, len(cases)))
        self.report(failures, len(cases), "node→keycache")

    def test_keycache_to_node(self):
        cases = []
        for alias, (suite, fl) in ALIASES.items():
            for cname, ctx in CONTEXTS:
                for pname, pt in PLAINTEXTS:
                    cases.append((alias, suite, fl, cname, ctx, pname, pt))
            if fl == 4096:
                cases.append((alias, suite, fl, "non-ascii", CONTEXTS[2][1],
                              MAX_PLAINTEXT[0], MAX_PLAINTEXT[1]))
        failures = []
        msgs = []
        for alias, suite, fl, cname, ctx, pname, pt in cases:
            msgs.append(self.client.encrypt(alias, pt, ctx))
        say("keycache encrypted %d messages; node decrypts them"
            % len(msgs))
        results = node_run("decrypt", [self.keyreq(ciphertext_b64=b64(m))
                                       for m in msgs])
        passed = 0
        for (alias, suite, fl, cname, ctx, pname, pt), msg, res in zip(
                cases, msgs, results):
            case = ("keycache→node alias=%s suite=0x%04x frame=%d ctx=%s "
                    "pt=%s" % (alias, suite, fl, cname, pname))
            problems = check_structure(msg, suite, fl)
            if not res.get("ok"):
                problems.append("node decrypt failed: %s" % res.get("error"))
            else:
                if unb64(res["plaintext_b64"]) != pt:
                    problems.append("node plaintext differs")
                got = dict(res["context"])
                if got != dict(header_context(msg)):
                    problems.append("node context %r != header's" % got)
                pub = got.pop(PUBKEY, None)
                if (pub is not None) != (suite == SUITE_COMMIT_P384):
                    problems.append("node context public key: %r" % pub)
                if got != ctx:
                    problems.append("node context %r, expected %r"
                                    % (got, ctx))
                if res["suite"] != suite or res["frame_length"] != fl:
                    problems.append("node read suite %r frame length %r"
                                    % (res["suite"], res["frame_length"]))
            if problems:
                failures.append((case, problems, msg))
            else:
                passed += 1
        COUNTS["keycache->node"] += passed
        say("keycache→node: %d of %d passed" % (passed, len(cases)))
        self.report(failures, len(cases), "keycache→node")

    def test_node_multi_keyring(self):
        """node wraps the data key for several keyrings: one EDK per
        keyring, ours first or last among raw AES keys keycache does not
        know; keycache finds and unwraps its own.  With only foreign EDKs
        keycache refuses with KC_ENODATAKEY."""
        other = {"key_b64": b64(os.urandom(32)), "namespace": NAMESPACE,
                 "name": "another-key"}
        other2 = {"key_b64": b64(os.urandom(32)),
                  "namespace": "other-namespace", "name": KEY_NAME}
        pt = PLAINTEXTS[4][1]
        ctx = CONTEXTS[3][1]
        cases = []
        for s in (SUITE_COMMIT, SUITE_COMMIT_P384):
            for first in (False, True):
                cases.append((s, first))
        reqs = [self.keyreq(plaintext_b64=b64(pt), context=ctx, suite=s,
                            others=[other, other2], others_first=first)
                for s, first in cases]
        failures = []
        for (s, first), res in zip(cases, node_run("encrypt", reqs)):
            case = ("node(multi-keyring, ours %s)→keycache suite=0x%04x"
                    % ("last" if first else "first", s))
            self.assertTrue(res.get("ok"), res)
            msg = unb64(res["ciphertext_b64"])
            edks = h.parse_header(msg)["edks"]
            problems = []
            if len(edks) != 3:
                problems.append("%d EDKs, expected 3" % len(edks))
            problems += self.check_kc_plain(self.kc_decrypt(msg), pt, ctx,
                                            msg)
            if problems:
                failures.append((case, problems, msg))
            else:
                COUNTS["node->keycache"] += 1
        say("multi-keyring: %d of %d read" % (len(cases) - len(failures),
                                              len(cases)))
        # Only keys keycache does not have: a clean refusal.
        foreign = dict(other)
        foreign.update(plaintext_b64=b64(pt), context=ctx,
                       suite=SUITE_COMMIT, others=[other2])
        res = node_run("encrypt", [foreign])[0]
        self.assertTrue(res.get("ok"), res)
        r = self.kc_decrypt(unb64(res["ciphertext_b64"]))
        say("only foreign EDKs -> %s" % r.get("error", {}).get("name"))
        h.expect_error(r, h.KC_ENODATAKEY)
        self.report(failures, len(cases), "multi-keyring")

    def test_keycachectl(self):
        """The CLI path: keycachectl decrypts node's messages, and node
        decrypts keycachectl's."""
        ctx = CONTEXTS[2][1]
        pt = PLAINTEXTS[4][1]
        ctx_args = []
        for k, v in sorted(ctx.items()):
            ctx_args += ["--context", "%s=%s" % (k, v)]
        reqs = [self.keyreq(plaintext_b64=b64(pt), context=ctx, suite=s)
                for s in (SUITE_COMMIT, SUITE_COMMIT_P384)]
        for s, res in zip((SUITE_COMMIT, SUITE_COMMIT_P384),
                          node_run("encrypt", reqs)):
            self.assertTrue(res.get("ok"), res)
            msg = unb64(res["ciphertext_b64"])
            say("keycachectl decrypt of node's 0x%04x message" % s)
            p = ctl("decrypt", *ctx_args, sock=self.sock, stdin=msg)
            self.assertEqual(p.returncode, 0, "keycachectl decrypt: %s\n"
                             "header: %s" % (p.stderr.decode(
                                 errors="replace"), header_hex(msg)))
            self.assertEqual(p.stdout, pt)
            COUNTS["cli"] += 1
        msgs = []
        for alias in ("ic", "ic-sig"):
            say("keycachectl encrypt --key %s, node decrypts" % alias)
            p = ctl("encrypt", "--key", alias, *ctx_args, sock=self.sock,
                    stdin=pt)
            self.assertEqual(p.returncode, 0, p.stderr.decode(
                errors="replace"))
            msgs.append(p.stdout)
        for msg, res in zip(msgs, node_run(
                "decrypt", [self.keyreq(ciphertext_b64=b64(m))
                            for m in msgs])):
            self.assertTrue(res.get("ok"), "%s\nheader: %s"
                            % (res, header_hex(msg)))
            self.assertEqual(unb64(res["plaintext_b64"]), pt)
            got = dict(res["context"])
            got.pop(PUBKEY, None)
            self.assertEqual(got, ctx)
            COUNTS["cli"] += 1

    def test_tampered_node_messages_fail(self):
        """Not vacuous: node's messages with one byte flipped (header
        context, body, signature) are refused, with no plaintext."""
        pt = PLAINTEXTS[4][1]
        ctx = CONTEXTS[2][1]
        reqs = [self.keyreq(plaintext_b64=b64(pt), context=ctx, suite=s)
                for s in (SUITE_COMMIT, SUITE_COMMIT_P384)]
        for s, res in zip((SUITE_COMMIT, SUITE_COMMIT_P384),
                          node_run("encrypt", reqs)):
            self.assertTrue(res.get("ok"), res)
            msg = unb64(res["ciphertext_b64"])
            hl = header_len(msg)
            spots = {"header context": 1 + 2 + 32 + 2 + 2 + 2 + 1,
                     "header auth tag": hl - 1,
                     "body": hl + 40}
            if s == SUITE_COMMIT_P384:
                spots["signature"] = len(msg) - 1
            for where, off in spots.items():
                bad = bytearray(msg)
                bad[off] ^= 0x01
                r = self.kc_decrypt(bytes(bad))
                say("0x%04x, byte %d (%s) flipped -> %s" % (
                    s, off, where, r.get("error", {}).get("name", "ok")))
                h.expect_error(r, (h.KC_EAUTH, h.KC_EFORMAT,
                                   h.KC_ENODATAKEY, h.KC_ECONTEXT))
                COUNTS["tamper"] += 1

    def test_node_default_keyring_context_order(self):
        """The node keyring's default (utf8Sorting unset) authenticates
        the context sorted by localeCompare.  Where that order equals the
        UTF-8 byte order, both directions must work; where it differs
        (known SDK bug), keycache must refuse cleanly and never return a
        wrong plaintext.  Counts are reported."""
        pt = PLAINTEXTS[2][1]
        cases = [(s, cname, ctx) for s in (SUITE_COMMIT, SUITE_COMMIT_P384)
                 for cname, ctx in CONTEXTS]
        enc = node_run("encrypt", [
            self.keyreq(plaintext_b64=b64(pt), context=ctx, suite=s,
                        utf8_sorting=False) for s, _, ctx in cases])
        failures = []
        for (s, cname, ctx), res in zip(cases, enc):
            case = ("node(default keyring)→keycache suite=0x%04x ctx=%s"
                    % (s, cname))
            self.assertTrue(res.get("ok"), res)
            msg = unb64(res["ciphertext_b64"])
            r = self.kc_decrypt(msg)
            same = res["locale_order_matches_utf8"]
            if same:
                problems = self.check_kc_plain(r, pt, ctx, msg)
                if problems:
                    failures.append((case + " (orders agree)", problems,
                                     msg))
                else:
                    COUNTS["default-keyring ok"] += 1
            elif r.get("ok"):
                problems = self.check_kc_plain(r, pt, ctx, msg)
                if problems:
                    failures.append((case, problems, msg))
                else:
                    COUNTS["default-keyring ok"] += 1
                    say("%s: orders differ, yet keycache read it" % case)
            else:
                code = r["error"]["code"]
                say("%s: orders differ -> keycache %s" % (
                    case, r["error"]["name"]))
                if code not in (h.KC_ENODATAKEY, h.KC_EAUTH):
                    failures.append((case, ["refused with %s, expected "
                                            "KC_ENODATAKEY" % r["error"]],
                                     msg))
                else:
                    COUNTS["default-keyring refused"] += 1

        aliases = {SUITE_COMMIT: "ic", SUITE_COMMIT_P384: "ic-sig"}
        msgs = [self.client.encrypt(aliases[s], pt, ctx)
                for s, _, ctx in cases]
        dec = node_run("decrypt", [
            self.keyreq(ciphertext_b64=b64(m), utf8_sorting=False)
            for m in msgs])
        # Whether the orders agree, judged on the message's full context.
        order = node_run("order", [{"context": dict(header_context(m))}
                                   for m in msgs])
        for (s, cname, ctx), msg, res, o in zip(cases, msgs, dec, order):
            case = ("keycache→node(default keyring) suite=0x%04x ctx=%s"
                    % (s, cname))
            self.assertTrue(o.get("ok"), o)
            same = o["locale_order_matches_utf8"]
            if res.get("ok"):
                if unb64(res["plaintext_b64"]) != pt:
                    failures.append((case, ["node plaintext differs"], msg))
                else:
                    COUNTS["default-keyring ok"] += 1
            elif same is True:
                failures.append((case + " (orders agree)",
                                 ["node decrypt failed: %s"
                                  % res.get("error")], msg))
            else:
                say("%s: node refuses (%s)" % (case, res.get("error")))
                COUNTS["default-keyring refused"] += 1
        say("default keyring: %d interoperate, %d refused (orders differ)"
            % (COUNTS["default-keyring ok"],
               COUNTS["default-keyring refused"]))
        self.report(failures, 2 * len(cases), "default-keyring")


if __name__ == "__main__":
    h.run_tests(needs=("KC_AGENT", "KC_CTL"))
