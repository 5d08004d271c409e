"""Opening a connection to a PR database file (its schema is ``schema``'s).

A connection is in autocommit mode (``isolation_level=None``): every
transaction is opened explicitly (``prserv.storage.sqlite.transactions``).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from ...errors import DatabaseError
from ...log import logger
from .errors import translated

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a writer waits for another process's write lock."""
OPEN_BUSY_TIMEOUT_SECONDS = 1.0
"""While opening: a file held exclusively (buffered sync mode) is reported quickly."""
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def open_connection(filename: str, read_only: bool = False, synchronous: str = "NORMAL",
                    exclusive: bool = False) -> sqlite3.Connection:
    """A connection to ``filename`` in WAL mode (created, with its directory, unless
    ``read_only``).  ``synchronous``: SQLite's setting (``FULL`` fsyncs every commit).
    ``exclusive``: hold the file for this connection alone."""
    if synchronous.upper() not in SYNCHRONOUS_MODES:
        raise DatabaseError("invalid synchronous mode %r" % synchronous)
    _prepare_path(filename, read_only)
    uri = "file:%s%s" % (urllib.parse.quote(filename), "?mode=ro" if read_only else "")
    logger.debug("Opening PRServ database '%s'", uri)
    with translated("cannot open database %s" % filename):
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=OPEN_BUSY_TIMEOUT_SECONDS)
    try:
        with translated("cannot use database %s" % filename, busy=lambda exc: DatabaseError(
                "database %s is in use by another process%s (%s)" % (
                    filename, "; a server in a buffered sync mode needs it alone" if exclusive
                    else " that holds it exclusively (a server in a buffered sync mode?)", exc))):
            conn.execute("PRAGMA synchronous = %s" % synchronous.upper())
            if exclusive:
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            if not read_only:
                conn.execute("PRAGMA journal_mode = WAL")
            if exclusive:
                conn.execute("BEGIN IMMEDIATE")      # take the lock now
                conn.execute("COMMIT")
            read_now(conn)
            conn.execute("PRAGMA busy_timeout = %d" % (BUSY_TIMEOUT_SECONDS * 1000))
    except BaseException:
        conn.close()
        raise
    return conn


def read_now(conn: sqlite3.Connection) -> None:
    """Have SQLite read the file now: opening reads nothing, so a file another process
    holds or a file that is no database fails here, not at the first request.  Inside
    a read transaction this read takes the transaction's snapshot."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _prepare_path(filename: str, read_only: bool) -> None:
    if read_only:
        if not os.path.exists(filename):
            raise DatabaseError("database %s does not exist (read-only servers do not create it)"
                                % filename)
        return
    try:
        os.makedirs(os.path.dirname(filename), exist_ok=True)
    except OSError as exc:
        raise DatabaseError("cannot create the directory of database %s: %s"
                            % (filename, exc.strerror)) from exc


