"""Helpers for the KMS provider tests: fake KMS servers on 127.0.0.1.

The fakes live in tests/fakes: fake_aws_kms.py runs inside the test
process (a thread); fake_alibaba_kms.js runs as a node child process,
driven through its /_fake/ control endpoints.  Both use TLS with a CA
made for the test in its scratch directory.  Nothing here contacts any
other host.
"""
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

import harness as h

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                     "fakes")
sys.path.insert(0, FAKES)

import tlsca  # noqa: E402

AWS_AKID = "AKIDKEYCACHETEST"
AWS_SECRET = "kc/test+secret=1234567890abcdefghij"
AWS_TOKEN = "FwoGZXIvYXdzEKeycacheSessionToken//+=="
ALI_AKID = "LTAI5tKeycacheTest"
ALI_SECRET = "ali/secret+with=odd&chars"
ALI_TOKEN = "STS.keycache-test-token"

_children = []


def _cleanup():
    for p in _children:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


import atexit  # noqa: E402
atexit.register(_cleanup)


def make_tls(directory):
    return tlsca.make_ca(directory)


def need_node():
    """Exit 77 (SKIP) when node or the pinned npm package is missing."""
    node = shutil.which("node")
    mod = os.path.join(FAKES, "node_modules", "@alicloud", "openapi-util")
    if node is None or not os.path.isdir(mod):
        print("SKIP: node or tests/fakes/node_modules/@alicloud/openapi-util"
              " missing (run: npm ci --prefix tests/fakes)", flush=True)
        sys.exit(77)
    return node


class AlibabaFake:
    """The node fake as a child process, plus its control channel."""

    def __init__(self, directory, tls, keys, credentials=None):
        self.dir = directory
        self.tls = tls
        self.credentials = credentials or {
            ALI_AKID: {"secret": ALI_SECRET, "token": ALI_TOKEN}}
        self.keys = keys  # {key id: alias or None}
        self.proc = None
        self.port = None
        self.ctx = ssl.create_default_context(cafile=tls["ca"])

    def start(self, timeout=20):
        node = need_node()
        cfg = os.path.join(self.dir, "alibaba-fake.json")
        with open(cfg, "w") as f:
            json.dump({"credentials": self.credentials, "keys": self.keys},
                      f)
        self.log = open(os.path.join(self.dir, "alibaba-fake.log"), "wb")
        self.proc = subprocess.Popen(
            [node, os.path.join(FAKES, "fake_alibaba_kms.js"),
             "--cert", self.tls["cert"], "--key", self.tls["key"],
             "--config", cfg],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        _children.append(self.proc)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                c = self.proc.stdout.read1(64)
                if not c:
                    break
                line += c
        if not line.startswith(b"PORT "):
            self.stop()
            raise AssertionError("alibaba fake did not start: %r" % line)
        self.port = int(line.split()[1])
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=5)

    @property
    def endpoint(self):
        return "https://127.0.0.1:%d" % self.port

    def _ctl(self, path, obj=None):
        data = None if obj is None else json.dumps(obj).encode()
        req = urllib.request.Request(self.endpoint + path, data=data,
                                     method="GET" if obj is None else "POST")
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            return json.loads(r.read())

    def fault(self, mode, count=1, op=None, seconds=None, retry_after=None):
        f = {"mode": mode, "count": count}
        if op is not None:
            f["op"] = op
        if seconds is not None:
            f["seconds"] = seconds
        if retry_after is not None:
            f["retry_after"] = retry_after
        self._ctl("/_fake/fault", f)

    def clear_faults(self):
        self._ctl("/_fake/clear", {})

    def reset_counts(self):
        self._ctl("/_fake/reset", {})

    def stats(self):
        return self._ctl("/_fake/stats")

    def total_calls(self):
        return sum(self.stats()["calls"].values())


class AwsFakeAdapter:
    """fake_aws_kms.FakeAwsKms with the AlibabaFake control method names."""

    def __init__(self, directory, tls, aliases=("app", "other")):
        from fake_aws_kms import FakeAwsKms
        self.fake = FakeAwsKms(tls, credentials={
            AWS_AKID: (AWS_SECRET, AWS_TOKEN)})
        self.arns = {a: self.fake.add_key(a) for a in aliases}

    def start(self):
        self.fake.start()
        return self

    def stop(self):
        self.fake.stop()

    @property
    def endpoint(self):
        return self.fake.endpoint

    def fault(self, mode, count=1, op=None, seconds=None, retry_after=None):
        self.fake.fault(mode, count, op, seconds, retry_after)

    def clear_faults(self):
        self.fake.clear_faults()

    def reset_counts(self):
        self.fake.reset_counts()

    def stats(self):
        f = self.fake
        with f.lock:
            return {"calls": dict(f.calls), "auth": dict(f.auth_failures),
                    "arrived": f.arrived,
                    "incorrect_key": f.incorrect_key,
                    "decrypt_key_ids": dict(f.decrypt_key_ids),
                    "contexts": list(f.contexts)}

    def total_calls(self):
        return self.fake.total_calls()


def aws_env():
    return {"AWS_ACCESS_KEY_ID": AWS_AKID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_SESSION_TOKEN": AWS_TOKEN,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true"}


def alibaba_env():
    return {"ALIBABA_CLOUD_ACCESS_KEY_ID": ALI_AKID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ALI_SECRET,
            "ALIBABA_CLOUD_SECURITY_TOKEN": ALI_TOKEN,
            "ALIBABA_CLOUD_CREDENTIALS_FILE": "/nonexistent"}


def start_agent(directory, keys, env, agent_opts=None):
    """Write a config with keys {alias: opts} and start an agent."""
    sock = os.path.join(directory, "a.sock")
    cfg = os.path.join(directory, "agent.ini")
    agent = {"socket": sock, "log_level": "debug"}
    agent.update(agent_opts or {})
    h.write_config(cfg, agent, keys)
    a = h.Agent(cfg, sock, env=env)
    a.start()
    return a, sock


def local_key(directory, alias):
    kf = os.path.join(directory, alias + ".key")
    h.write_key(kf)
    return {"provider": "local", "key_file": kf}


def key_stats(sock, alias):
    with h.Client(sock) as c:
        return c.stats()["keys"][alias]


def concurrent_encrypts(sock, alias, n, context, plaintext=b"x" * 32,
                        timeout=30):
    """n clients, each on its own connection, send one encrypt at once.

    Returns the list of responses (dicts), in connection order.
    """
    conns = [h.Client(sock, timeout=timeout) for _ in range(n)]
    try:
        for i, c in enumerate(conns):
            c.send({"id": 1, "op": "encrypt", "key": alias,
                    "plaintext": plaintext, "context": context})
        return [c.recv(timeout) for c in conns]
    finally:
        for c in conns:
            c.close()


def relabel(ct, old, new):
    """ct with its one occurrence of old (an EDK's key id or ARN) made
    new, of the same length: a message whose EDK names another key than
    the one its blob was made under (the header tag then no longer
    verifies, but the provider must refuse it before that)."""
    old, new = old.encode(), new.encode()
    assert len(old) == len(new) and ct.count(old) == 1, (old, new)
    return ct.replace(old, new)


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


class Background(threading.Thread):
    """Run fn in a thread; .result / .error afterwards."""

    def __init__(self, fn, *args, **kw):
        super().__init__(daemon=True)
        self.fn, self.args, self.kw = fn, args, kw
        self.result = self.error = None
        self.elapsed = None

    def run(self):
        t0 = time.monotonic()
        try:
            self.result = self.fn(*self.args, **self.kw)
        except Exception as e:  # reported by the test
            self.error = e
        self.elapsed = time.monotonic() - t0
