"""Shared helpers for keycache integration tests.

Everything here runs against an agent this harness starts itself, in a
scratch directory under /tmp, on a Unix socket it creates.  Nothing is
sent anywhere else.

Environment:
  KC_AGENT  path of keycache-agent (required)
  KC_CTL    path of keycachectl (required by the CLI tests)
  KC_KEEP   if set, scratch directories are kept for inspection
  KC_AGENT_WRAPPER  optional command prefix for every agent this harness
            starts (e.g. "valgrind --error-exitcode=99 ..."); empty: none
"""

import atexit
import base64
import os
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import msgpack

# Error codes from proto/PROTOCOL.md section 5.
KC_EINVAL = -1
KC_ENOMEM = -2
KC_ESYS = -3
KC_EPROTO = -4
KC_ETOOBIG = -5
KC_EVERSION = -6
KC_EUNKNOWNOP = -7
KC_ENOKEY = -8
KC_EDENIED = -9
KC_EAUTH = -10
KC_EFORMAT = -11
KC_EUNSUPPORTED = -12
KC_ECONTEXT = -13
KC_EPROVIDER = -14
KC_ETIMEOUT = -15
KC_ECONNECT = -16
KC_ECLOSED = -17
KC_EBUSY = -18
KC_ESHUTDOWN = -19
KC_ENODATAKEY = -20
KC_ECONFIG = -21
KC_EKEYFILE = -22

ERR_NAMES = {v: k for k, v in globals().items() if k.startswith("KC_E")}

DEFAULT_MAX_FRAME = 1114112
START_TIMEOUT = float(os.environ.get("KC_START_TIMEOUT", "20"))
STOP_TIMEOUT = float(os.environ.get("KC_STOP_TIMEOUT", "20"))
IO_TIMEOUT = float(os.environ.get("KC_IO_TIMEOUT", "10"))

_live_agents = []
_scratch_dirs = []
_secrets = []     # every master key this process wrote or read
_agent_logs = []  # every agent log file this process captured


def say(msg):
    """Print one line of what the test is checking (unbuffered)."""
    print("  - " + msg, flush=True)


def agent_path():
    p = os.environ.get("KC_AGENT")
    if not p or not os.access(p, os.X_OK):
        raise unittest.SkipTest("KC_AGENT not set or not executable")
    return p


def agent_wrapper():
    """KC_AGENT_WRAPPER split into words: a command the agent runs under,
    e.g. "valgrind --error-exitcode=99 --leak-check=full" (empty: none)."""
    w = os.environ.get("KC_AGENT_WRAPPER", "").strip()
    return shlex.split(w) if w else []


def ctl_path():
    p = os.environ.get("KC_CTL")
    if not p or not os.access(p, os.X_OK):
        raise unittest.SkipTest("KC_CTL not set or not executable")
    return p


# ---------------------------------------------------------------- cleanup

def _cleanup():
    for a in list(_live_agents):
        a.kill()
    if not os.environ.get("KC_KEEP"):
        for d in _scratch_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _on_signal(signum, frame):
    # meson sends SIGTERM on timeout: turn it into an exit so atexit runs
    # and no agent outlives the test.
    _cleanup()
    os._exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def scratch_dir():
    """A fresh short directory under /tmp (sun_path is only 108 bytes)."""
    d = tempfile.mkdtemp(prefix="kc", dir="/tmp")
    _scratch_dirs.append(d)
    return d


# ------------------------------------------------------------ key and config

def write_key(path, key=None, mode=0o600):
    """Write a 32-byte master key file with the given mode; return bytes."""
    if key is None:
        key = os.urandom(32)
    _secrets.append(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return key


def write_config(path, agent=None, keys=None, raw=None):
    """Write an INI config.

    agent: dict for [agent]; keys: {alias: dict} for [key.ALIAS];
    raw: text appended verbatim (for deliberately broken configs).
    """
    lines = []
    if agent is not None:
        lines.append("[agent]")
        for k, v in agent.items():
            lines.append("%s = %s" % (k, v))
        lines.append("")
    for alias, opts in (keys or {}).items():
        lines.append("[key.%s]" % alias)
        for k, v in opts.items():
            lines.append("%s = %s" % (k, v))
        lines.append("")
    if raw:
        lines.append(raw)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Setup:
    """A scratch dir with master keys and a config for one agent.

    aliases: {alias: {extra key options}}; each alias gets its own key
    file <dir>/<alias>.key unless 'key_file' is given.
    """

    def __init__(self, aliases=None, agent_opts=None, sock_name="a.sock",
                 directory=None):
        self.dir = directory or scratch_dir()
        self.socket = os.path.join(self.dir, sock_name)
        self.keys = {}
        self.key_files = {}
        if aliases is None:
            aliases = {"users-email": {}}
        key_sections = {}
        for alias, extra in aliases.items():
            opts = {"provider": "local"}
            kf = extra.get("key_file")
            if kf is not None and os.path.isfile(kf):
                with open(kf, "rb") as f:
                    _secrets.append(f.read())
            if kf is None:
                kf = os.path.join(self.dir, alias + ".key")
                if not os.path.exists(kf):
                    self.keys[alias] = write_key(kf)
                else:
                    with open(kf, "rb") as f:
                        self.keys[alias] = f.read()
                    _secrets.append(self.keys[alias])
            self.key_files[alias] = kf
            opts["key_file"] = kf
            opts.update({k: v for k, v in extra.items() if k != "key_file"})
            key_sections[alias] = opts
        agent = {"socket": self.socket, "log_level": "debug"}
        agent.update(agent_opts or {})
        self.agent_opts = agent
        self.key_sections = key_sections
        self.config = os.path.join(self.dir, "agent.ini")
        write_config(self.config, agent, key_sections)

    def agent(self, **kw):
        return Agent(self.config, self.socket, **kw)

    def start(self, **kw):
        a = self.agent(**kw)
        a.start()
        return a


# ------------------------------------------------------------------ agent

class Agent:
    """One keycache-agent process, stderr captured to a log file."""

    counter = 0

    def __init__(self, config, socket_path, args=(), env=None,
                 log_path=None, preexec_fn=None):
        self.config = config
        self.socket = socket_path
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.pop("KEYCACHE_SOCKET", None)
        if env:
            self.env.update(env)
        Agent.counter += 1
        self.log_path = log_path or os.path.join(
            os.path.dirname(config), "agent%d.log" % Agent.counter)
        self.proc = None
        self.returncode = None
        self.signalled = None
        self.preexec_fn = preexec_fn
        _agent_logs.append(self.log_path)

    def argv(self):
        return (agent_wrapper() + [agent_path(), "--config", self.config]
                + self.args)

    def spawn(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=self.env,
                preexec_fn=self.preexec_fn)
        _live_agents.append(self)
        return self

    def start(self, timeout=START_TIMEOUT):
        """Spawn and wait until the socket accepts a connection."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise AssertionError(
                    "agent exited with %d during start:\n%s"
                    % (rc, self.log_tail()))
            if os.path.exists(self.socket):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.settimeout(1.0)
                    s.connect(self.socket)
                    return self
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.02)
        self.kill()
        raise AssertionError("agent did not accept on %s within %.0fs:\n%s"
                             % (self.socket, timeout, self.log_tail()))

    def wait_exit(self, timeout=START_TIMEOUT):
        """For agents expected to fail: wait for exit, return the code."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("agent did not exit within %.0fs:\n%s"
                                 % (timeout, self.log_tail()))
        self._reap()
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, signum):
        self.signalled = signum
        self.proc.send_signal(signum)

    def stop(self, signum=signal.SIGTERM, timeout=STOP_TIMEOUT,
             check=True):
        """Signal, wait; with check, assert exit 0 and socket unlinked."""
        if self.proc is None:
            return None
        # Signal once: a second signal while the agent is already shutting
        # down would test something else.
        if self.proc.poll() is None and self.signalled is None:
            self.send_signal(signum)
        signum = self.signalled or signum
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("agent ignored signal %d for %.0fs:\n%s"
                                 % (signum, timeout, self.log_tail()))
        self._reap()
        if check:
            if rc != 0:
                raise AssertionError("agent exited %d after signal %d:\n%s"
                                     % (rc, signum, self.log_tail()))
            if os.path.lexists(self.socket):
                raise AssertionError("agent left its socket %s behind"
                                     % self.socket)
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def _reap(self):
        if self.proc is not None and self.proc.poll() is not None:
            self.returncode = self.proc.returncode
        if self in _live_agents and not self.alive():
            _live_agents.remove(self)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_bytes(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def log_tail(self, n=40):
        lines = self.log().splitlines()
        return "\n".join("    | " + l for l in lines[-n:])

    def vm_kib(self, field):
        """A field of /proc/PID/status in KiB (VmPeak, VmRSS, VmHWM)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0


# ----------------------------------------------------------------- client

class Closed(Exception):
    """The agent closed the connection."""


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def frame(body):
    """4-byte big-endian length + body (bytes)."""
    return struct.pack(">I", len(body)) + body


class Client:
    """A raw-frame client speaking proto/PROTOCOL.md."""

    def __init__(self, path, timeout=IO_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.next_id = 1
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # --- bytes
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_body(self, body):
        self.sock.sendall(frame(body))

    def send(self, obj):
        self.send_body(pack(obj))

    def _recv_exact(self, n, timeout):
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for %d bytes" % n)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                raise Closed("connection reset")
            if not chunk:
                if buf:
                    raise AssertionError(
                        "agent closed mid-frame (%d of %d bytes)"
                        % (len(buf), n))
                raise Closed("connection closed")
            buf += chunk
        return bytes(buf)

    def recv(self, timeout=None):
        """One response frame decoded; raises Closed on EOF."""
        t = self.timeout if timeout is None else timeout
        hdr = self._recv_exact(4, t)
        (n,) = struct.unpack(">I", hdr)
        if n == 0 or n > 64 << 20:
            raise AssertionError("agent sent a bad frame length %d" % n)
        body = self._recv_exact(n, t)
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
        if not isinstance(obj, dict):
            raise AssertionError("agent sent a non-map body: %r" % (obj,))
        for k in ("id", "ok"):
            if k not in obj:
                raise AssertionError("response lacks %r: %r" % (k, obj))
        if obj["ok"] is not True and obj["ok"] is not False:
            raise AssertionError("response 'ok' not a bool: %r" % (obj,))
        if obj["ok"] is False:
            check_error_shape(obj)
        return obj

    def recv_or_closed(self, timeout=None):
        """A response, or None when the agent closed the connection."""
        try:
            return self.recv(timeout)
        except Closed:
            return None

    def expect_closed(self, timeout=None):
        """Assert the agent closes the connection (within timeout)."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("agent did not close the connection")
            try:
                r = self.recv(left)
            except Closed:
                return
            except socket.timeout:
                raise AssertionError("agent did not close the connection")
            raise AssertionError("expected close, got %r" % (r,))

    def is_closed(self, timeout=0.5):
        """True when the agent has closed (EOF/reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(1, socket.MSG_PEEK)
            return d == b""
        except ConnectionResetError:
            return True
        except (socket.timeout, BlockingIOError):
            return False
        finally:
            self.sock.settimeout(self.timeout)

    # --- requests
    def new_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def request(self, op, timeout=None, **fields):
        """Send one request and return its response (checks the id)."""
        rid = self.new_id()
        msg = {"id": rid, "op": op}
        msg.update(fields)
        self.send(msg)
        r = self.recv(timeout)
        if r["id"] != rid:
            raise AssertionError("response id %r for request %r: %r"
                                 % (r["id"], rid, r))
        return r

    def call(self, op, **fields):
        """A request that must succeed; returns the response."""
        r = self.request(op, **fields)
        if r["ok"] is not True:
            raise AssertionError("%s failed: %r" % (op, r))
        return r

    def ping(self):
        return self.call("ping")

    def encrypt(self, key, plaintext, context=None):
        f = {"key": key, "plaintext": plaintext}
        if context is not None:
            f["context"] = context
        return self.call("encrypt", **f)["ciphertext"]

    def decrypt(self, ciphertext, context=None):
        f = {"ciphertext": ciphertext}
        if context is not None:
            f["context"] = context
        return self.call("decrypt", **f)

    def stats(self):
        return self.call("stats")["stats"]

    def pipeline(self, requests, timeout=None):
        """Send all requests (dicts without id) in one write; return
        {id: response} once every id has been answered."""
        ids = []
        out = bytearray()
        for req in requests:
            rid = self.new_id()
            m = {"id": rid}
            m.update(req)
            ids.append(rid)
            out += frame(pack(m))
        self.send_raw(bytes(out))
        got = {}
        while len(got) < len(ids):
            r = self.recv(timeout)
            if r["id"] not in ids:
                raise AssertionError("unexpected id in response %r" % (r,))
            if r["id"] in got:
                raise AssertionError("id %r answered twice" % r["id"])
            got[r["id"]] = r
        return ids, got


def check_error_shape(r):
    e = r.get("error")
    if not isinstance(e, dict):
        raise AssertionError("error response without error map: %r" % (r,))
    for k, t in (("code", int), ("name", str), ("message", str)):
        if not isinstance(e.get(k), t):
            raise AssertionError("error.%s missing or not %s: %r"
                                 % (k, t.__name__, r))
    if e["code"] >= 0:
        raise AssertionError("error code not negative: %r" % (r,))
    known = ERR_NAMES.get(e["code"])
    if known is not None and known != e["name"]:
        raise AssertionError("error name %r does not match code %d (%s)"
                             % (e["name"], e["code"], known))


def err_code(r):
    if r.get("ok") is not False:
        raise AssertionError("expected an error response, got %r" % (r,))
    return r["error"]["code"]


def expect_error(r, code, rid="any", field=None):
    """Assert r is an error with the given code (or one of a tuple)."""
    codes = code if isinstance(code, tuple) else (code,)
    c = err_code(r)
    if c not in codes:
        raise AssertionError("expected %s, got %s: %r" % (
            "/".join(ERR_NAMES.get(x, str(x)) for x in codes),
            ERR_NAMES.get(c, str(c)), r))
    if rid != "any" and r["id"] != rid:
        raise AssertionError("expected id %r in error, got %r" % (rid, r))
    if "plaintext" in r:
        raise AssertionError("error response carries plaintext: %r" % (r,))
    if field is not None and field not in r["error"]["message"]:
        raise AssertionError("error message does not name field %r: %r"
                             % (field, r["error"]["message"]))
    return r


def assert_serving(path, alias="users-email"):
    """A fresh client gets ping and an encrypt/decrypt round trip."""
    with Client(path) as c:
        c.ping()
        pt = os.urandom(17)
        ct = c.encrypt(alias, pt, {"probe": "1"})
        r = c.decrypt(ct, {"probe": "1"})
        if r["plaintext"] != pt:
            raise AssertionError("second client: round trip mismatch")


# ------------------------------------------------------- message parsing

def parse_header(msg):
    """Minimal parse of an AWS Encryption SDK v2 message header.

    Returns {version, suite, message_id, context (list of (k, v) bytes),
    edks: [(provider_id, provider_info, ciphertext)]}.  Only what the
    tests need to tell data keys apart; not a validating parser.
    """
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(msg):
            raise AssertionError("ciphertext header truncated")
        b = msg[pos:pos + n]
        pos += n
        return b

    def u16():
        return struct.unpack(">H", take(2))[0]

    version = take(1)[0]
    if version != 2:
        raise AssertionError("message version %d, expected 2" % version)
    suite = u16()
    message_id = take(32)
    aad_len = u16()
    aad = take(aad_len)
    ctx = []
    if aad_len:
        q = 0
        (count,) = struct.unpack(">H", aad[0:2])
        q = 2
        for _ in range(count):
            (kl,) = struct.unpack(">H", aad[q:q + 2])
            k = aad[q + 2:q + 2 + kl]
            q += 2 + kl
            (vl,) = struct.unpack(">H", aad[q:q + 2])
            v = aad[q + 2:q + 2 + vl]
            q += 2 + vl
            ctx.append((k, v))
    edks = []
    for _ in range(u16()):
        pid = take(u16())
        pinfo = take(u16())
        ct = take(u16())
        edks.append((pid, pinfo, ct))
    return {"version": version, "suite": suite, "message_id": message_id,
            "context": ctx, "edks": edks}


def data_key_groups(ciphertexts):
    """Sizes of runs of consecutive messages sharing one wrapped data key."""
    groups = []
    last = None
    for ct in ciphertexts:
        edk = tuple(parse_header(ct)["edks"])
        if edk == last:
            groups[-1] += 1
        else:
            groups.append(1)
            last = edk
    return groups


def encodings(secret):
    """The forms a secret could take in a log line."""
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret),
        "base64url": base64.urlsafe_b64encode(secret),
        "base64-nopad": base64.b64encode(secret).rstrip(b"="),
    }
    return forms


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def run_tests(needs=("KC_AGENT",)):
    """unittest main with verbose output; exit code tells.

    When a program the tests need is not given, exit 77 so meson reports
    the test as skipped rather than passed.
    """
    for var in needs:
        p = os.environ.get(var)
        if not p or not os.access(p, os.X_OK):
            print("SKIP: %s is not set to an executable" % var, flush=True)
            sys.exit(77)
    prog = unittest.main(verbosity=2, buffer=False, exit=False)
    ok = prog.result.wasSuccessful()
    for a in list(_live_agents):
        a.kill()
    leaks = scan_logs()
    if leaks:
        ok = False
    sys.exit(0 if ok else 1)


SANITIZER_MARKS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                   b"runtime error:", b"WARNING: AddressSanitizer")


def sanitizer_reports(path, text):
    """A finding (and the report printed) for each sanitizer report in an
    agent log: a report fails the run even if no assertion noticed."""
    found = []
    for mark in SANITIZER_MARKS:
        i = text.find(mark)
        if i < 0:
            continue
        start = text.rfind(b"\n", 0, i) + 1
        report = text[start:start + 6000].decode("utf-8", "replace")
        print("---- sanitizer report in %s ----" % path)
        print("\n".join(report.splitlines()[:60]), flush=True)
        found.append("%s: sanitizer report (%s)" % (path, mark.decode()))
    return found


def scan_logs():
    """Search every captured agent log for every master key this process
    used, raw and encoded (STYLE 3.5).  Returns a list of findings."""
    findings = []
    logs = sorted(set(_agent_logs))
    for path in logs:
        try:
            with open(path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        for key in _secrets:
            if len(key) < 16:
                continue
            for form, enc in encodings(key).items():
                if enc in text:
                    findings.append("%s: master key (%s)" % (path, form))
        findings += sanitizer_reports(path, text)
    print("log scan: %d agent logs, %d keys, %d findings"
          % (len(logs), len(set(_secrets)), len(findings)), flush=True)
    for f in findings:
        print("  FOUND " + f, flush=True)
    return findings
