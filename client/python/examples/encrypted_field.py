#!/usr/bin/python3
"""encrypted_field.py - transparent field encryption for a data-access layer.

Application teams used to in-process encryption SDKs decorate their
repository functions so one field is encrypted on the way into the
database and decrypted on the way out; the rest of the code only ever
sees plaintext.  This example does the same through keycache-agent:

    @encrypted_field("email", key="users-email",
                     context={"table": "users", "column": "email"})
    def add(self, user): ...          # user.email encrypted before the SQL

    @encrypted_field("email", key="users-email",
                     context={"table": "users", "column": "email"})
    def get(self, user_id): ...       # returned user.email decrypted

What the decorator does:

* **arguments** (write path): every argument that is a record -- a
  dict, a dataclass instance, or a list/tuple of them -- and has the
  field set to text is passed on as a *copy* with the field replaced by
  Base64 ciphertext (the caller's object is not changed).  Lists are
  encrypted with one ``batch`` request, not one round trip per row.
* **return value** (read path): a record, or a list/tuple of records
  (``sqlite3.Row`` included, returned as dicts), gets the field decrypted,
  with the context *required*: a ciphertext copied from another column or
  table fails with ``keycache.ContextMismatchError`` instead of returning
  someone else's data.

The context is authenticated, not secret: it may be a dict or a
function of the record (e.g. to bind each value to its tenant).

Run it against an agent (it makes a small SQLite repository, by default
in memory, and shows what is stored and what the application reads):

    KEYCACHE_SOCKET=/run/keycache/agent.sock \
        python3 encrypted_field.py [--db FILE] [--key ALIAS] [--count N]
"""

import argparse
import base64
import dataclasses
import functools
import os
import sqlite3
import sys
from collections.abc import Mapping

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
import keycache  # noqa: E402  (pure Python; PYTHONPATH=client/python)

# ------------------------------------------------------------ the decorator

_shared = {}


def shared_client():
    """One client per process, made on first use ($KEYCACHE_SOCKET).
    keycache.Client reconnects by itself after fork()."""
    c = _shared.get("client")
    if c is None:
        c = _shared["client"] = keycache.Client(connect=False)
    return c


def _is_record(obj, field):
    if isinstance(obj, Mapping):
        return field in obj
    if isinstance(obj, sqlite3.Row):
        return field in obj.keys()
    return (dataclasses.is_dataclass(obj) and not isinstance(obj, type)
            and hasattr(obj, field))


def _get(rec, field):
    if isinstance(rec, (Mapping, sqlite3.Row)):
        return rec[field]
    return getattr(rec, field)


def _with(rec, field, value):
    """A copy of rec with field set to value (rec is left as it was)."""
    if isinstance(rec, sqlite3.Row):
        d = {k: rec[k] for k in rec.keys()}
        d[field] = value
        return d
    if isinstance(rec, Mapping):
        d = dict(rec)
        d[field] = value
        return d
    return dataclasses.replace(rec, **{field: value})


def encrypted_field(field, *, key, context, client=None, timeout=None):
    """Decorate a data-access function so ``field`` is stored encrypted.

    field: the record field (dict key or dataclass attribute).
    key: the keycache key alias to encrypt under (or a function
      returning it, read on every call).
    context: dict of str -> str, or a function record -> dict; bound to
      every ciphertext and required again on every read.
    client: a keycache.Client, or a function returning one (default: a
      shared per-process client on $KEYCACHE_SOCKET, made on first use).
    """
    def get_client():
        if client is None:
            return shared_client()
        return client() if callable(client) and \
            not isinstance(client, keycache.Client) else client

    def ctx_for(rec):
        return context(rec) if callable(context) else context

    def seal_records(recs):
        """Encrypt the field of every record that has plaintext in it."""
        todo = [i for i, r in enumerate(recs)
                if _is_record(r, field) and isinstance(_get(r, field), str)]
        if not todo:
            return recs
        kc = get_client()
        alias = key() if callable(key) else key
        items = [keycache.encrypt_item(alias, _get(recs[i], field),
                                       ctx_for(recs[i])) for i in todo]
        if len(items) == 1:
            cts = [kc.encrypt(alias, items[0]["plaintext"],
                              items[0].get("context"), timeout=timeout)]
        else:
            cts = kc.batch(items, timeout=timeout)
        out = list(recs)
        for i, ct in zip(todo, cts):
            if isinstance(ct, keycache.KeycacheError):
                raise ct
            out[i] = _with(recs[i], field,
                           base64.b64encode(ct).decode("ascii"))
        return out

    def open_records(recs):
        """Decrypt the field of every record that has a stored value."""
        todo = [i for i, r in enumerate(recs)
                if _is_record(r, field) and
                isinstance(_get(r, field), (str, bytes))]
        out = [dict(r) if isinstance(r, sqlite3.Row) else r for r in recs]
        if not todo:
            return out
        kc = get_client()
        items = []
        for i in todo:
            stored = _get(recs[i], field)
            try:
                ct = base64.b64decode(stored, validate=True)
            except (ValueError, TypeError):
                raise keycache.DecryptionError(
                    "stored %s is not Base64 ciphertext" % field,
                    code=-11) from None
            items.append(keycache.decrypt_item(ct, ctx_for(recs[i])))
        if len(items) == 1:
            pts = [kc.decrypt(items[0]["ciphertext"], items[0]["context"],
                              timeout=timeout)]
        else:
            pts = [r if isinstance(r, keycache.KeycacheError) else
                   r.plaintext for r in kc.batch(items, timeout=timeout)]
        for i, pt in zip(todo, pts):
            if isinstance(pt, keycache.KeycacheError):
                raise pt
            out[i] = _with(recs[i], field, pt.decode("utf-8"))
        return out

    def seal_arg(a):
        if _is_record(a, field):
            return seal_records([a])[0]
        if isinstance(a, (list, tuple)) and a and \
                all(_is_record(r, field) for r in a):
            return type(a)(seal_records(list(a)))
        return a

    def open_result(res):
        if _is_record(res, field):
            return open_records([res])[0]
        if isinstance(res, (list, tuple)) and res and \
                any(_is_record(r, field) for r in res):
            return type(res)(open_records(list(res)))
        return res

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            args = tuple(seal_arg(a) for a in args)
            kwargs = {k: seal_arg(v) for k, v in kwargs.items()}
            return open_result(fn(*args, **kwargs))
        wrapper.encrypted_field = field
        return wrapper

    return decorate


# ------------------------------------------------------- an application

EMAIL_CONTEXT = {"table": "users", "column": "email"}
EMAIL_KEY = os.environ.get("KC_EXAMPLE_KEY", "users-email")


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str


def email_field(fn):
    """The column's policy in one place: alias and context."""
    return encrypted_field("email", key=lambda: EMAIL_KEY,
                           context=EMAIL_CONTEXT)(fn)


class UserRepository:
    """A plain sqlite3 repository; only the decorators know about
    encryption."""

    def __init__(self, conn):
        self.conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS users ("
                     " id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " email TEXT NOT NULL)")

    @email_field
    def add(self, user):
        self.conn.execute("INSERT INTO users (id, name, email) "
                          "VALUES (?, ?, ?)",
                          (user.id, user.name, user.email))
        self.conn.commit()

    @email_field
    def add_many(self, users):
        self.conn.executemany("INSERT INTO users (id, name, email) "
                              "VALUES (?, ?, ?)",
                              [(u.id, u.name, u.email) for u in users])
        self.conn.commit()

    @email_field
    def get(self, user_id):
        row = self.conn.execute("SELECT id, name, email FROM users "
                                "WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else User(*row)

    @email_field
    def all(self):
        return [User(*row) for row in self.conn.execute(
            "SELECT id, name, email FROM users ORDER BY id")]

    @email_field
    def update_email(self, user):
        self.conn.execute("UPDATE users SET email = ? WHERE id = ?",
                          (user.email, user.id))
        self.conn.commit()

    def raw_email(self, user_id):
        """What the database really holds (no decorator)."""
        return self.conn.execute("SELECT email FROM users WHERE id = ?",
                                 (user_id,)).fetchone()[0]


def main(argv=None):
    global EMAIL_KEY
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default=":memory:", help="SQLite file")
    ap.add_argument("--key", default=EMAIL_KEY, help="key alias")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--socket", default=None,
                    help="agent socket (default $KEYCACHE_SOCKET)")
    a = ap.parse_args(argv)
    EMAIL_KEY = a.key  # email_field reads it at call time
    if a.socket:
        _shared["client"] = keycache.Client(a.socket, connect=False)

    repo = UserRepository(sqlite3.connect(a.db))
    users = [User(i, "User %d" % i, "user%d@example.org" % i)
             for i in range(1, a.count + 1)]
    repo.add(users[0])
    repo.add_many(users[1:])
    stored = repo.raw_email(1)
    print("stored email of user 1: %s... (%d chars of Base64)"
          % (stored[:40], len(stored)))
    print("read back user 1:      %r" % (repo.get(1),))
    back = repo.all()
    bad = sum(1 for u, b in zip(users, back) if u != b)
    plain_in_db = sum(1 for u in users if u.email in repo.raw_email(u.id))
    print("%d users written and read back, %d differ, %d stored in "
          "plaintext" % (len(back), bad, plain_in_db))
    return 0 if (len(back) == len(users) and bad == 0 and
                 plain_in_db == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
