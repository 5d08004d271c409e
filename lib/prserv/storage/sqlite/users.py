"""The users table of a SQLite file (``prserv_users``, beside bitbake's ``PRMAIN``).

bitbake's server ignores it; a dump served over the wire (``dump-db``) leaves it
out (``is_secret_line``), and the change feed and export never read it.  It is
created on the first user added, so a file nobody manages users in stays as it was.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from typing import Iterator, List, Optional

from ...tokens import UserRecord, record_from_row, row_of
from .errors import translated
from .schema import table_exists

TABLE = "prserv_users"
DDL = ("CREATE TABLE IF NOT EXISTS prserv_users (username TEXT PRIMARY KEY, permissions TEXT NOT NULL, "
       "token_hash TEXT NOT NULL, salt TEXT NOT NULL, created REAL NOT NULL, expires REAL)")
_COLUMNS = "username, permissions, token_hash, salt, created, expires"     # tokens.row_of's order


def get(conn: sqlite3.Connection, username: str) -> Optional[UserRecord]:
    if not table_exists(conn, TABLE):
        return None
    row = conn.execute("SELECT %s FROM prserv_users WHERE username = ?" % _COLUMNS, (username,)).fetchone()
    return None if row is None else record_from_row(row)


def every(conn: sqlite3.Connection) -> List[UserRecord]:
    if not table_exists(conn, TABLE):
        return []
    return [record_from_row(row) for row in conn.execute("SELECT %s FROM prserv_users ORDER BY username" % _COLUMNS)]


def put(conn: sqlite3.Connection, record: UserRecord) -> None:
    """Add or replace (inside the caller's transaction)."""
    conn.execute(DDL)
    conn.execute("INSERT OR REPLACE INTO prserv_users (%s) VALUES (?, ?, ?, ?, ?, ?)" % _COLUMNS, row_of(record))


def remove(conn: sqlite3.Connection, username: str) -> bool:
    if not table_exists(conn, TABLE):
        return False
    return conn.execute("DELETE FROM prserv_users WHERE username = ?", (username,)).rowcount == 1


def is_secret_line(line: str) -> bool:
    """A dump line of the users table (its CREATE or one of its rows)."""
    if not line.startswith(("CREATE TABLE", "INSERT INTO")):
        return False
    head = line.split("(", 1)[0]
    return TABLE in head


@contextlib.contextmanager
def open_file(path: str, writes: bool, timeout: float = 30.0) -> Iterator[sqlite3.Connection]:
    """A connection of its own to the file (``prserv user ... --database``), in one
    write transaction if ``writes`` (the file is created if missing), else read-only."""
    with translated("cannot open %s" % path):
        conn = sqlite3.connect(path if writes else "file:%s?mode=ro" % urllib.parse.quote(path),
                               uri=not writes, timeout=timeout, isolation_level=None)
    try:
        with translated(path):
            if writes:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if writes:
                conn.execute("COMMIT")
    finally:
        conn.close()
