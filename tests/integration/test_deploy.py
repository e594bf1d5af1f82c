"""deploy/: the systemd unit and the example configuration.

  test_deploy.py unit     the unit has the sandboxing issue 5 asks for and
                          `systemd-analyze verify` accepts it without a
                          single warning; exit 77 (skip) when
                          systemd-analyze is not installed
  test_deploy.py config   the example config names every option the agent
                          documents (agent/config.h) and passes
                          `keycache-agent --check`, as shipped and with
                          every optional setting enabled (paths moved to
                          a scratch directory, user/group names mapped to
                          ones that exist here)

Both work on copies in a scratch directory; nothing is installed.
"""

import os
import re
import shutil
import subprocess
import sys
import unittest

import harness as h
from harness import say

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
UNIT = os.path.join(ROOT, "deploy", "keycache-agent.service")
EXAMPLE = os.path.join(ROOT, "deploy", "keycache.ini.example")
CONFIG_H = os.path.join(ROOT, "agent", "config.h")


def unit_settings(path):
    """{(section, key): [values]} of a unit file."""
    out = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            k, _, v = line.partition("=")
            out.setdefault((section, k.strip()), []).append(v.strip())
    return out


class UnitTest(unittest.TestCase):
    def setUp(self):
        self.s = unit_settings(UNIT)

    def val(self, key):
        v = self.s.get(("Service", key))
        self.assertIsNotNone(v, "[Service] %s= missing" % key)
        return v[-1]

    def test_sandboxing_directives(self):
        say("the unit sets the sandboxing the issue asks for")
        want = {
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "NoNewPrivileges": "yes",
            "MemoryDenyWriteExecute": "yes",
            "LockPersonality": "yes",
            "ProtectHome": "yes",
            "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes",
            "ProtectControlGroups": "yes",
            "RestrictNamespaces": "yes",
            "RestrictSUIDSGID": "yes",
            "PrivateDevices": "yes",
            "LimitCORE": "0",
            "RuntimeDirectory": "keycache",
            "CapabilityBoundingSet": "",
        }
        for k, v in want.items():
            self.assertEqual(self.val(k), v, k)
        fam = set(self.val("RestrictAddressFamilies").split())
        self.assertEqual(fam, {"AF_UNIX", "AF_INET", "AF_INET6"})
        self.assertIn("@system-service", self.s[("Service",
                                                 "SystemCallFilter")])
        self.assertTrue(self.val("LimitMEMLOCK"))
        self.assertNotIn(self.val("User"), ("", "root", "0"))
        self.assertTrue(self.val("Group"))
        self.assertIn("/run/keycache/", " ".join(
            open(EXAMPLE, encoding="utf-8").read().split()),
            "example config does not put the socket in the "
            "RuntimeDirectory")
        say("%d [Service] settings checked" % (len(want) + 5))

    def test_systemd_analyze_verify(self):
        exe = shutil.which("systemd-analyze")
        if exe is None:
            raise unittest.SkipTest("systemd-analyze not installed")
        agent = h.agent_path()
        d = h.scratch_dir()
        unit = os.path.join(d, "keycache-agent.service")
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        # verify insists that ExecStart's program exists: point it at
        # this build's agent; everything else is checked as shipped.
        text = text.replace("/usr/sbin/keycache-agent", agent)
        with open(unit, "w", encoding="utf-8") as f:
            f.write(text)
        say("systemd-analyze verify %s" % unit)
        p = subprocess.run([exe, "verify", "--man=no", unit],
                           capture_output=True, text=True, timeout=60)
        out = (p.stdout + p.stderr).strip()
        say("exit %d, output: %r" % (p.returncode, out))
        # verify exits 0 even for unknown keys and unparsable values
        # ("..., ignoring"), so any output at all is a failure.
        self.assertEqual(p.returncode, 0, out)
        self.assertEqual(out, "")
        p = subprocess.run([exe, "security", "--offline=yes", unit],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)",
                      p.stdout)
        if m:
            say("systemd-analyze security: exposure %s %s"
                % (m.group(1), m.group(2)))
            self.assertLessEqual(float(m.group(1)), 2.5)
        else:
            say("systemd-analyze security --offline unavailable: %s"
                % (p.stderr.strip()[:200]))


def documented_options():
    """Option names from the example block at the top of config.h."""
    with open(CONFIG_H, encoding="utf-8") as f:
        head = f.read().split("*/", 1)[0]
    return sorted(set(re.findall(r"^ \*   ([a-z_]+) = ", head, re.M)))


def example_options(text):
    return set(re.findall(r"^(?:[;#] ?)?([a-z_]+) = ", text, re.M))


class ConfigTest(unittest.TestCase):
    def test_every_option_documented(self):
        say("every option in agent/config.h appears in the example")
        opts = documented_options()
        self.assertGreater(len(opts), 20)
        with open(EXAMPLE, encoding="utf-8") as f:
            have = example_options(f.read())
        missing = [o for o in opts if o not in have]
        say("%d options documented in config.h, %d missing from the "
            "example" % (len(opts), len(missing)))
        self.assertEqual(missing, [])

    def localize(self, enable_optional):
        """A copy of the example with its paths in a scratch dir, key
        files created, and names mapped to root; optionally with every
        ';name = value' line enabled."""
        d = h.scratch_dir()
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        text = text.replace("/etc/keycache", d).replace("/run/keycache", d)
        text = re.sub(r"\b(user|group):[A-Za-z_][A-Za-z0-9_-]*",
                      lambda m: m.group(1) + ":root", text)
        if enable_optional:
            text = re.sub(r"^;([a-z_]+ = )", r"\1", text, flags=re.M)
        # The agent checks that socket_group exists: use one that does.
        text = re.sub(r"^socket_group = \S+", "socket_group = root", text,
                      flags=re.M)
        for path in re.findall(r"^key_file = (\S+)$", text, re.M):
            h.write_key(path)
        cfg = os.path.join(d, "keycache.ini")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(text)
        n = len(re.findall(r"^[a-z_]+ = ", text, re.M))
        return cfg, n

    def check(self, cfg):
        p = subprocess.run(h.agent_wrapper() +
                           [h.agent_path(), "--config", cfg, "--check"],
                           capture_output=True, text=True, timeout=120)
        say("--check: exit %d: %s" % (p.returncode,
                                      (p.stdout + p.stderr).strip()[-300:]))
        self.assertEqual(p.returncode, 0)

    def test_check_as_shipped(self):
        cfg, n = self.localize(False)
        say("example as shipped (%d settings in use)" % n)
        self.check(cfg)

    def test_check_all_optional_enabled(self):
        cfg, n = self.localize(True)
        say("example with every optional setting enabled (%d settings)"
            % n)
        self.check(cfg)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    names = {"unit": ["UnitTest"], "config": ["ConfigTest"],
             "all": ["UnitTest", "ConfigTest"]}.get(mode)
    if names is None:
        print("usage: test_deploy.py [unit|config|all]")
        sys.exit(2)
    if mode == "unit" and shutil.which("systemd-analyze") is None:
        # Never report a pass for a check that could not run.
        print("SKIP: systemd-analyze is not installed (apt-get install "
              "systemd)", flush=True)
        sys.exit(77)
    p = os.environ.get("KC_AGENT")
    if not p or not os.access(p, os.X_OK):
        print("SKIP: KC_AGENT is not set to an executable", flush=True)
        sys.exit(77)
    sys.argv[1:] = names
    h.run_tests()


if __name__ == "__main__":
    main()
