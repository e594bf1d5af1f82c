#!/usr/bin/python3
"""PostgreSQL: the libpq demo and the resumable column migration.

Starts its own PostgreSQL (Debian's postgresql package: initdb + pg_ctl)
on a temporary data directory, listening on a Unix socket in that
directory only (no TCP), as the `postgres` user (the server refuses
root), and a keycache-agent with two key aliases.  Then:

1. users_pg (deploy/demo/users_pg.c) stores encrypted emails in a real
   table and reads every row back.
2. kc_migrate (deploy/migrate/kc_migrate.c) encrypts a 100 000-row
   plaintext column in place; the test SIGKILLs it mid-run, checks the
   table is exactly "committed batches encrypted, the rest untouched",
   resumes it, and checks every row decrypts to its original with the
   column's context and none is encrypted twice.  Prints rows/second and
   the resume evidence.
3. kc_migrate reencrypt moves the column to a second key alias; every
   row then decrypts under the new alias.

Exit 77 (skip) when the PostgreSQL server binaries are not installed.
Environment: KC_AGENT, KC_USERS_PG, KC_MIGRATE (meson sets them);
KC_PG_BINDIR overrides where initdb/pg_ctl are looked for.
"""

import base64
import glob
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import unittest

import harness as h

try:
    import keycache
except ImportError:  # pragma: no cover - meson sets PYTHONPATH
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                    "client", "python"))
    import keycache

ALIAS = "users-email"
ALIAS2 = "users-email-v2"
PREFIX = "kc1:"
ROWS = int(os.environ.get("KC_PG_ROWS", "100000"))
NULL_EVERY = 1000     # every 1000th email is NULL (must stay NULL)
EMPTY_EVERY = 777     # some are '' (encrypted like any other value)
KILL_AT = ROWS // 4   # SIGKILL once at least this many rows are done


def pg_bindir():
    d = os.environ.get("KC_PG_BINDIR")
    if d:
        return d if os.access(os.path.join(d, "initdb"), os.X_OK) else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4])
                   if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


class Postgres:
    """A throwaway PostgreSQL server: data dir and socket in a scratch dir
    under /tmp, no TCP listener, stopped at exit."""

    PORT = 5432  # only names the socket file; nothing listens on TCP

    def __init__(self, bindir):
        self.bindir = bindir
        self.dir = h.scratch_dir()
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.prefix = []
        if os.getuid() == 0:
            user = "postgres"
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                user, pw = "nobody", pwd.getpwnam("nobody")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", user, "--"]
            self.user = user
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
        self.dsn = "host=%s port=%d user=postgres dbname=postgres" % (
            self.dir, self.PORT)
        self.running = False

    def run(self, argv, **kw):
        return subprocess.run(self.prefix + argv, check=True,
                              stdin=subprocess.DEVNULL, **kw)

    def start(self):
        self.run([os.path.join(self.bindir, "initdb"), "-D", self.data,
                  "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                 timeout=120)
        opts = ("-k %s -c listen_addresses='' -p %d -c fsync=off "
                "-c full_page_writes=off" % (self.dir, self.PORT))
        self.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                  "-l", self.log, "-o", opts, "-w", "-t", "60", "start"],
                 stdout=subprocess.DEVNULL, timeout=90)
        self.running = True

    def stop(self):
        if not self.running:
            return
        self.running = False
        try:
            self.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                      "-m", "fast", "-w", "-t", "30", "stop"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     timeout=60)
        except (subprocess.SubprocessError, OSError):
            subprocess.run(self.prefix + [
                os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=60, check=False)

    def psql(self, sql):
        """Run SQL with psql; returns stdout (unaligned, tuples only)."""
        p = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q",
                            "-At", "-v", "ON_ERROR_STOP=1", "-d", self.dsn,
                            "-c", sql], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise AssertionError("psql failed: %s\n%s" % (sql, p.stderr))
        return p.stdout

    def copy_out(self, sql):
        """[(id:int, value:str|None)] from COPY (sql) TO STDOUT."""
        out = self.psql("COPY (%s) TO STDOUT" % sql)
        rows = []
        for line in out.splitlines():
            k, v = line.split("\t")
            rows.append((int(k), None if v == "\\N" else v))
        return rows

    def log_text(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


PG = None


def _stop_pg():
    if PG is not None:
        PG.stop()


def _install_signal_stop():
    # meson sends SIGTERM on timeout: stop our server, then let the
    # harness's handler clean up the agents and exit.
    prev = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        _stop_pg()
        if callable(prev):
            prev(signum, frame)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def original_email(i):
    if i % NULL_EVERY == 0:
        return None
    if i % EMPTY_EVERY == 0:
        return ""
    if i % 5000 == 1:
        return "zoë.%d@exämple.org" % i
    return "person%d@example.com" % i


class PostgresTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pg = PG
        cls.setup = h.Setup({ALIAS: {}, ALIAS2: {}})
        cls.agent = cls.setup.start()
        cls.users_pg = os.environ["KC_USERS_PG"]
        cls.migrate = os.environ["KC_MIGRATE"]
        cls.env = dict(os.environ, KEYCACHE_SOCKET=cls.setup.socket)

    @classmethod
    def tearDownClass(cls):
        cls.agent.stop()

    def run_tool(self, argv, timeout=600):
        p = subprocess.run(argv, env=self.env, capture_output=True,
                           text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        sys.stdout.write("".join("    | %s\n" % line
                                 for line in p.stdout.splitlines()))
        if p.stderr.strip():
            sys.stdout.write("".join("    ! %s\n" % line
                                     for line in p.stderr.splitlines()))
        return p

    def migrate_argv(self, mode, key, *extra):
        return [self.migrate, "--dsn", self.pg.dsn, "--table", "people",
                "--column", "email", "--key", key, *extra, mode]

    def verify_column(self, alias, what):
        """Every row decrypts (column context required) to its original;
        NULL stayed NULL; nothing is encrypted twice."""
        rows = self.pg.copy_out("SELECT id, email FROM people ORDER BY id")
        self.assertEqual(len(rows), ROWS)
        ctx = {"table": "people", "column": "email"}
        items, ids = [], []
        for i, v in rows:
            want = original_email(i)
            if want is None:
                self.assertIsNone(v, "row %d: NULL was changed" % i)
                continue
            self.assertIsNotNone(v)
            self.assertTrue(v.startswith(PREFIX),
                            "row %d not encrypted: %r" % (i, v[:40]))
            items.append(keycache.decrypt_item(
                base64.b64decode(v[len(PREFIX):], validate=True), ctx))
            ids.append(i)
        t0 = time.monotonic()
        with keycache.Client(self.setup.socket, timeout=120) as kc:
            res = kc.batch(items)
        dt = time.monotonic() - t0
        twice = 0
        for i, r in zip(ids, res):
            self.assertNotIsInstance(r, keycache.KeycacheError,
                                     "row %d: %r" % (i, r))
            pt = r.plaintext.decode("utf-8")
            if pt.startswith(PREFIX):
                twice += 1
            self.assertEqual(pt, original_email(i), "row %d" % i)
            self.assertEqual(r.key, alias, "row %d" % i)
            self.assertEqual(r.context, ctx)
        self.assertEqual(twice, 0)
        h.say("%s: %d rows decrypt to their originals under '%s' "
              "(%d NULL kept, 0 double-encrypted; verified in %.1fs)"
              % (what, len(ids), alias, ROWS - len(ids), dt))
        return len(ids)

    # ------------------------------------------------------------ tests

    def test_1_users_pg_demo(self):
        h.say("users_pg: encrypted email column in a real PostgreSQL")
        p = self.run_tool([self.users_pg, "--dsn", self.pg.dsn,
                           "--socket", self.setup.socket, "--count", "300"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("300 emails match", p.stdout)
        self.assertIn("refused", p.stdout)
        n = self.pg.psql("SELECT count(*), count(*) FILTER (WHERE email "
                         "LIKE '%@%') FROM users").strip()
        self.assertEqual(n, "300|0")
        h.say("table users: 300 rows, 0 readable emails (checked with "
              "psql)")

    def test_2_migrate_kill_resume(self):
        pg = self.pg
        h.say("loading %d plaintext rows into table people" % ROWS)
        pg.psql("DROP TABLE IF EXISTS people; DROP TABLE IF EXISTS "
                "kc_migrate_progress")
        pg.psql("CREATE TABLE people (id bigint PRIMARY KEY, name text "
                "NOT NULL, email text)")
        pg.psql("INSERT INTO people SELECT i, 'Person ' || i, CASE "
                "WHEN i %% %d = 0 THEN NULL WHEN i %% %d = 0 THEN '' "
                "WHEN i %% 5000 = 1 THEN 'zoë.' || i || '@exämple.org' "
                "ELSE 'person' || i || '@example.com' END "
                "FROM generate_series(1, %d) AS i"
                % (NULL_EVERY, EMPTY_EVERY, ROWS))
        before = pg.copy_out("SELECT id, email FROM people ORDER BY id")
        self.assertEqual(before, [(i, original_email(i))
                                  for i in range(1, ROWS + 1)])
        nonnull = sum(1 for _, v in before if v is not None)

        h.say("kc_migrate encrypt, SIGKILL once >= %d rows are committed"
              % KILL_AT)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            self.migrate_argv("encrypt", ALIAS, "--batch", "500"),
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True)
        done = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            out = pg.psql("SELECT coalesce(max(rows_done), 0) FROM "
                          "kc_migrate_progress") if self._has_progress() \
                else "0"
            done = int(out.strip() or 0)
            if done >= KILL_AT:
                break
            time.sleep(0.02)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        out1, _ = proc.communicate(timeout=30)
        t_kill = time.monotonic() - t0
        sys.stdout.write("".join("    | %s\n" % line
                                 for line in out1.splitlines()))
        self.assertTrue(still_running,
                        "kc_migrate finished before it could be killed")
        self.assertEqual(proc.returncode, -signal.SIGKILL)

        prog = pg.psql("SELECT last_pk, rows_done, rows_skipped, "
                       "finished IS NULL FROM kc_migrate_progress").strip()
        last_pk, rows_done, skipped, unfinished = prog.split("|")
        last_pk, rows_done = int(last_pk), int(rows_done)
        self.assertEqual(unfinished, "t")
        state = pg.psql(
            "SELECT count(*) FILTER (WHERE email LIKE 'kc1:%%'), "
            "coalesce(max(id) FILTER (WHERE email LIKE 'kc1:%%'), 0), "
            "coalesce(min(id) FILTER (WHERE email NOT LIKE 'kc1:%%'), 0), "
            "count(*) FILTER (WHERE email NOT LIKE 'kc1:%%') "
            "FROM people").strip().split("|")
        enc, max_enc, min_plain, plain = (int(x) for x in state)
        mid_txn = "unexpected EOF on client connection with an open " \
                  "transaction" in pg.log_text()
        h.say("killed after %.2fs: checkpoint last_pk=%d rows_done=%d "
              "(skipped %s NULL); table: %d encrypted (max id %d), %d "
              "plaintext (min id %d); server saw an open transaction "
              "aborted: %s" % (t_kill, last_pk, rows_done, skipped, enc,
                               max_enc, plain, min_plain,
                               "yes" if mid_txn else "no (between "
                               "batches)"))
        self.assertGreater(rows_done, 0)
        self.assertLess(rows_done, nonnull)
        # the checkpoint and the data agree exactly: nothing half-done
        self.assertEqual(enc, rows_done)
        self.assertLessEqual(max_enc, last_pk)
        self.assertGreater(min_plain, last_pk)
        self.assertEqual(enc + plain, nonnull)

        h.say("resume: the same command again")
        t1 = time.monotonic()
        p = self.run_tool(self.migrate_argv("encrypt", ALIAS, "--batch",
                                            "500"))
        t_resume = time.monotonic() - t1
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.search(r"resuming job '([^']+)' \(run (\d+)\) after id = "
                      r"(\d+): (\d+) rows were done before", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        self.assertEqual(int(m.group(3)), last_pk)
        self.assertEqual(int(m.group(4)), rows_done)
        fin = re.search(r"finished: (\d+) rows encrypted this run \((\d+) "
                        r"in all\).* ([\d.]+) s, (\d+) rows/s", p.stdout)
        self.assertIsNotNone(fin, p.stdout)
        self.assertEqual(int(fin.group(1)), nonnull - rows_done)
        self.assertEqual(int(fin.group(2)), nonnull)
        h.say("resume encrypted the remaining %s rows at %s rows/s; "
              "whole migration %d rows in %.1fs of work (%.0f rows/s)"
              % (fin.group(1), fin.group(4), nonnull, t_kill + t_resume,
                 nonnull / (t_kill + t_resume)))
        self.verify_column(ALIAS, "after kill + resume")

        h.say("a third run finds the job finished; a new job name still "
              "double-encrypts nothing (prefix guard)")
        p = self.run_tool(self.migrate_argv("encrypt", ALIAS))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("already finished", p.stdout)
        p = self.run_tool(self.migrate_argv("encrypt", ALIAS, "--job",
                                            "second-try", "--quiet"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"finished: 0 rows encrypted this run "
                                   r"\(0 in all\), %d skipped" % ROWS)
        h.say("status:\n" + "\n".join(
            "    | " + line for line in subprocess.run(
                [self.migrate, "--dsn", pg.dsn, "status"], env=self.env,
                capture_output=True, text=True,
                timeout=60).stdout.splitlines()))

    def test_3_reencrypt_new_alias(self):
        if not self._has_progress():
            self.skipTest("needs the table from test_2")
        h.say("kc_migrate reencrypt: move people.email to '%s'" % ALIAS2)
        p = self.run_tool(self.migrate_argv("reencrypt", ALIAS2,
                                            "--batch", "1000"))
        self.assertEqual(p.returncode, 0, p.stderr)
        fin = re.search(r"finished: (\d+) rows re-encrypted this run.* "
                        r"([\d.]+) s, (\d+) rows/s", p.stdout)
        self.assertIsNotNone(fin, p.stdout)
        h.say("re-encrypted %s rows in %s s: %s rows/s (decrypt + encrypt "
              "through the agent, one transaction per 1000 rows)"
              % fin.groups())
        self.verify_column(ALIAS2, "after reencrypt")
        h.say("every value's data key is now unwrapped by '%s' (the "
              "alias decrypt reports)" % ALIAS2)

    def _has_progress(self):
        return self.pg.psql("SELECT to_regclass('kc_migrate_progress') "
                            "IS NOT NULL").strip() == "t"


def main():
    global PG
    for var in ("KC_AGENT", "KC_USERS_PG", "KC_MIGRATE"):
        p = os.environ.get(var)
        if not p or not os.access(p, os.X_OK):
            print("SKIP: %s is not set to an executable" % var, flush=True)
            sys.exit(77)
    bindir = pg_bindir()
    if bindir is None:
        print("SKIP: PostgreSQL server binaries not found "
              "(apt-get install postgresql)", flush=True)
        sys.exit(77)
    PG = Postgres(bindir)
    _install_signal_stop()
    import atexit
    atexit.register(_stop_pg)
    h.say("starting PostgreSQL from %s as %s on %s (Unix socket only)"
          % (bindir, PG.user, PG.dir))
    PG.start()
    h.say("server: %s" % PG.psql("SELECT version()").strip())
    try:
        h.run_tests()
    finally:
        _stop_pg()


if __name__ == "__main__":
    main()
