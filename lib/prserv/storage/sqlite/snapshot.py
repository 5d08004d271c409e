"""Consistent snapshots of a database in use.

A snapshot is one SQLite read transaction: in WAL mode a reader never blocks the
writer, so a server keeps committing while it is read.

* ``connect_read_only`` and ``pin_snapshot``: a connection of its own, and the
  moment it sees (``backup`` copies and verifies through it).
* ``iter_dump`` / ``write_dump``: the SQL text of one snapshot (bitbake's
  ``PRTable.dump_db(fd)``, ``prserv backup --sql``).
* ``open_snapshot``: what a server's ``dump-db`` answer is read from.  This works in
  every sync mode; the buffered modes hold the file with SQLite's exclusive
  locking, so no other process can read it: the server copies it instead.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
import urllib.parse
from typing import IO, Callable, Iterator, Optional

from . import files, users
from ...errors import BackupError, DatabaseBusy
from ..engine import DumpSource
from .connection import read_now
from .errors import DATABASE, translated

OPEN_TIMEOUT_SECONDS = 1.0
"""How long to wait for a lock before reporting a file held exclusively."""

BUFFERED_HINT = ("a PR server in a buffered sync mode (periodic or on-shutdown) holds it exclusively; "
                 "ask that server for a dump instead: prserv dump --server ADDR OUT")


def connect_read_only(path: str, timeout: float = OPEN_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """A read-only connection to an existing database, checked to be readable now.

    A file held with exclusive locking (a buffered-mode server) is reported as
    ``DatabaseBusy`` after ``timeout`` seconds rather than the busy timeout of 30 s.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise BackupError("database %s does not exist" % path)
    uri = "file:%s?mode=ro" % urllib.parse.quote(path)
    with translated("cannot open database %s" % path, BackupError):
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout)
    try:
        with translated("cannot read database %s" % path, BackupError, busy=lambda exc: DatabaseBusy(
                "database %s is in use: %s (%s)" % (path, BUFFERED_HINT, exc))):
            read_now(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def pin_snapshot(conn: sqlite3.Connection) -> None:
    """Open a read transaction and read once: from now on, until it ends, ``conn``
    sees the database as it was at this moment (WAL mode: other connections keep
    committing meanwhile).  ``BEGIN`` alone takes no snapshot; the first read does."""
    conn.execute("BEGIN")
    read_now(conn)


def iter_dump(conn: sqlite3.Connection) -> Iterator[str]:
    """The SQL dump statements (``iterdump``'s lines) of one consistent snapshot.

    ``iterdump`` alone runs one query per table and one for the schema, each its
    own read transaction when the connection is in autocommit mode; rows committed
    in between would make the parts disagree.  Joins a transaction already open.
    """
    own = not conn.in_transaction
    if own:
        pin_snapshot(conn)
    try:
        yield from conn.iterdump()
    finally:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")        # read-only: nothing to keep


def write_dump(conn: sqlite3.Connection, fd: IO[str]) -> int:
    """Write the dump of ``conn`` to the text file ``fd``; return characters written."""
    written = 0
    for line in iter_dump(conn):
        fd.write(line)
        fd.write("\n")
        written += len(line) + 1
    return written


class SnapshotDump(DumpSource):
    """The SQL text of a snapshot held by a connection's read transaction."""

    def __init__(self, conn: sqlite3.Connection, description: str) -> None:
        self.conn = conn
        self.description = description

    def lines(self) -> Iterator[str]:
        """Every line of the dump but the users table's (a dump is sent over the wire)."""
        with DATABASE:
            for line in self.conn.iterdump():
                if not users.is_secret_line(line):
                    yield line

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


def open_snapshot(dbfile: str, main: sqlite3.Connection, exclusive: bool,
                  commit: Optional[Callable[[], None]]) -> SnapshotDump:
    """A snapshot of what a server's dump must show, readable over many event-loop turns.

    The server's own connection cannot serve it: group commit opens write
    transactions on it every turn.  Normally (immediate mode, read-only servers) a
    second, read-only connection takes a WAL snapshot and the server keeps
    committing.  A buffered mode holds the file exclusively, so no second
    connection can open it: the buffer is committed (``commit``) and the database
    copied page by page (online backup API, one step) to a scratch file in its
    directory, which is unlinked at once (the open connection keeps it until
    closed).  That copy pauses the server for its duration (about 0.5 s per
    million rows).
    """
    with translated("cannot take a snapshot of %s" % dbfile):
        if not exclusive:
            conn = connect_read_only(dbfile)
            try:
                pin_snapshot(conn)
            except BaseException:
                conn.close()
                raise
            return SnapshotDump(conn, "read snapshot of %s" % dbfile)
        if commit is not None:
            commit()
        started = time.monotonic()
        fd, scratch = tempfile.mkstemp(prefix=".prserv-dump-", suffix=".sqlite3",
                                       dir=os.path.dirname(os.path.abspath(dbfile)))
        os.close(fd)
        try:
            copy = sqlite3.connect(scratch, isolation_level=None)
            try:
                main.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")   # no -wal/-shm beside the scratch file
                pin_snapshot(copy)
            except BaseException:
                copy.close()
                raise
        finally:
            files.remove(scratch)
    return SnapshotDump(copy, "copy of %s (buffered sync mode: the server paused %.3f s to make it)"
                        % (dbfile, time.monotonic() - started))
