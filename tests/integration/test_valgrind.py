"""Integration tests with every agent under valgrind (memcheck).

Runs a selection of the integration tests with KC_AGENT_WRAPPER set so
the harness starts each agent as
  valgrind --error-exitcode=99 --leak-check=full ... keycache-agent ...
and then requires, for every agent valgrind ran: a log with an
"ERROR SUMMARY: 0 errors" line (no invalid reads/writes, no use of
uninitialised values, no definite or indirect leaks).

Needs a build WITHOUT sanitizers (ASan and valgrind do not mix): exits
77 (skip) when the agent is sanitized or valgrind is missing.  meson
registers it (suite 'valgrind') only in builds with b_sanitize=none.

Environment: KC_AGENT (required), KC_VALGRIND_TESTS to override the
selection (space-separated "file.py:Class.test" / "file.py:Class").
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import time

import harness as h

HERE = os.path.dirname(os.path.abspath(__file__))

# Chosen to cover every op, both suites, authz, audit, caps, eviction,
# expiry, timeouts, refusals and framing errors, and to finish in a few
# minutes under valgrind.  Tests that measure RSS or latency closely, or
# that SIGKILL the agent on purpose, are left out.
SELECTION = [
    ("test_protocol.py", []),  # the whole file
    ("test_hardening.py", [
        "AuthzMatrixTest",
        "AuditTest.test_text_audit_lines",
        "AuditTest.test_json_lines",
        "SecretsTest",
        "ProcessHardeningTest.test_root_agent_limits",
        "ProcessHardeningTest.test_peer_gone_mid_reply",
        "TimeoutTest.test_slowloris",
        "TimeoutTest.test_idle_timeout",
        "FloodTest.test_flood_1000_over_max_connections_200",
        "BackpressureTest.test_max_inflight_pipeline",
    ]),
    ("test_agent.py", [
        "LifecycleTest.test_sigterm",
        "LifecycleTest.test_sigterm_with_requests_in_flight",
        "LogHygieneTest",
    ]),
]

VALGRIND_OPTS = [
    "--error-exitcode=99",
    "--leak-check=full",
    "--show-leak-kinds=definite,indirect",
    "--errors-for-leak-kinds=definite,indirect",
    "--num-callers=30",
    "--track-fds=no",
]


def selection():
    env = os.environ.get("KC_VALGRIND_TESTS")
    if not env:
        return SELECTION
    out = {}
    for item in env.split():
        f, _, t = item.partition(":")
        out.setdefault(f, [])
        if t:
            out[f].append(t)
    return list(out.items())


def is_sanitized(path):
    p = subprocess.run(["ldd", path], capture_output=True, text=True)
    return bool(re.search(r"lib(asan|ubsan|tsan|msan)", p.stdout))


def main():
    agent = os.environ.get("KC_AGENT")
    if not agent or not os.access(agent, os.X_OK):
        print("SKIP: KC_AGENT is not set to an executable", flush=True)
        sys.exit(77)
    vg = shutil.which("valgrind")
    if vg is None:
        print("SKIP: valgrind is not installed", flush=True)
        sys.exit(77)
    if is_sanitized(agent):
        print("SKIP: %s is built with sanitizers; valgrind needs a plain "
              "build (meson setup -Db_sanitize=none)" % agent, flush=True)
        sys.exit(77)
    logdir = h.scratch_dir()
    wrapper = " ".join([vg] + VALGRIND_OPTS +
                       ["--log-file=%s/vg.%%p.log" % logdir])
    env = dict(os.environ)
    env["KC_AGENT_WRAPPER"] = wrapper
    env.setdefault("KC_START_TIMEOUT", "60")
    env.setdefault("KC_STOP_TIMEOUT", "60")
    env.setdefault("KC_IO_TIMEOUT", "30")
    print("agent wrapper: %s" % wrapper, flush=True)
    failed = []
    t0 = time.monotonic()
    for fname, tests in selection():
        argv = ["/usr/bin/python3", os.path.join(HERE, fname)] + tests
        t = time.monotonic()
        print("==> %s %s" % (fname, " ".join(tests) or "(all)"), flush=True)
        try:
            p = subprocess.run(argv, env=env, cwd=HERE, timeout=600)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        print("<== %s: exit %s in %.1fs" % (fname, rc,
                                            time.monotonic() - t),
              flush=True)
        if rc != 0:
            failed.append("%s exited %s" % (fname, rc))
    logs = sorted(glob.glob(os.path.join(logdir, "vg.*.log")))
    clean = 0
    for path in logs:
        with open(path, errors="replace") as f:
            text = f.read()
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        if m is None:
            failed.append("%s: no ERROR SUMMARY (agent killed?)" % path)
            print(text[-2000:])
        elif m.group(1) != "0":
            failed.append("%s: %s errors" % (path, m.group(1)))
            print(text[-8000:])
        else:
            clean += 1
    print("valgrind: %d agent runs, %d with 0 errors, %d problems; %.0fs"
          % (len(logs), clean, len(failed), time.monotonic() - t0),
          flush=True)
    for f in failed:
        print("  FAIL " + f, flush=True)
    if not logs:
        print("  FAIL no agent ran under valgrind", flush=True)
        sys.exit(1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
