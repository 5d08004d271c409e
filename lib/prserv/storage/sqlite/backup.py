"""Copies of a live SQLite database: SQL dumps, consistent binary copies, restores.

Three ways to take a copy, all consistent snapshots (one SQLite read transaction):

* ``backup_file``: a binary copy made with ``VACUUM INTO`` while a server keeps
  writing.  In WAL mode a reader never blocks the writer, and ``VACUUM INTO``
  copies everything inside one read transaction, so it completes under any write
  load (SQLite's stepwise online backup restarts each time another connection
  writes, and may never finish on a busy server).  Or the SQL text dump, from the
  same kind of snapshot.
* ``open_snapshot``: what a server's ``dump-db`` answer is read from.  This works in
  every sync mode; the buffered modes hold the file with SQLite's exclusive
  locking, so no other process can read it.
* ``write_dump``: bitbake's ``PRTable.dump_db(fd)``, on an open connection.

``restore`` builds a new database from either kind of copy, next to its
destination, checks it, and renames it into place; ``verify`` reports
``PRAGMA integrity_check`` and the row count of each table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import tempfile
import time
import urllib.parse
from typing import IO, Any, Callable, Dict, Iterable, Iterator, Optional

from . import users
from ...errors import BackupError, DatabaseBusy, DatabaseError, VerificationFailed
from ..engine import DumpSource

SQLITE_HEADER = b"SQLite format 3\x00"
OPEN_TIMEOUT_SECONDS = 1.0
"""How long to wait for a lock before reporting a file held exclusively."""
COPY_SUFFIXES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps next to a database; a stale one must never meet a new file."""

BUFFERED_HINT = ("a PR server in a buffered sync mode (periodic or on-shutdown) holds it exclusively; "
                 "ask that server for a dump instead: prserv dump --server ADDR OUT")


@dataclasses.dataclass(frozen=True)
class Throttle:
    """Keeps the SQLite work of a connection to a share of one core: after ``run``
    seconds of work it pauses for ``pause`` seconds.  It is a progress handler, which
    SQLite calls every ``PROGRESS_OPCODES`` virtual-machine instructions (some tens of
    microseconds of work), also in the middle of one long statement such as
    ``VACUUM INTO`` or ``PRAGMA integrity_check``."""

    run: float
    pause: float
    sleep: Callable[[float], None] = time.sleep

    @property
    def cpu_share(self) -> float:
        return self.run / (self.run + self.pause)

    def attach(self, conn: sqlite3.Connection) -> None:
        resume_until = [time.monotonic() + self.run]

        def pause_when_due() -> int:
            if time.monotonic() >= resume_until[0]:
                self.sleep(self.pause)
                resume_until[0] = time.monotonic() + self.run
            return 0                            # not zero would interrupt the statement

        conn.set_progress_handler(pause_when_due, PROGRESS_OPCODES)


PROGRESS_OPCODES = 2000


# --------------------------------------------------------------------------- reading

def connect_read_only(path: str, timeout: float = OPEN_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """A read-only connection to an existing database, checked to be readable now.

    A file held with exclusive locking (a buffered-mode server) is reported as
    ``DatabaseBusy`` after ``timeout`` seconds rather than the busy timeout of 30 s.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise BackupError("database %s does not exist" % path)
    uri = "file:%s?mode=ro" % urllib.parse.quote(path)
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout)
    except sqlite3.Error as exc:
        raise BackupError("cannot open database %s: %s" % (path, exc)) from exc
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseBusy("database %s is in use: %s (%s)" % (path, BUFFERED_HINT, exc)) from exc
        raise BackupError("cannot read database %s: %s" % (path, exc)) from exc
    return conn


def pin_snapshot(conn: sqlite3.Connection) -> None:
    """Open a read transaction and read once: from now on, until it ends, ``conn``
    sees the database as it was at this moment (WAL mode: other connections keep
    committing meanwhile).  ``BEGIN`` alone takes no snapshot; the first read does."""
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


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


def _quoted(name: str) -> str:
    """An SQL identifier for a table name read from ``sqlite_master``."""
    return '"%s"' % name.replace('"', '""')


def verify(path: str, throttle: Optional[Throttle] = None) -> Dict[str, Any]:
    """``PRAGMA integrity_check`` of a database file and the row count of each table."""
    conn = connect_read_only(path)
    if throttle is not None:
        throttle.attach(conn)
    try:
        return verify_connection(conn, path)
    finally:
        conn.close()


def verify_connection(conn: sqlite3.Connection, path: str) -> Dict[str, Any]:
    """``verify`` on an open connection (``path`` only names it in the report)."""
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    names = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name")]
    tables = {name: conn.execute("SELECT count(*) FROM %s" % _quoted(name)).fetchone()[0] for name in names}
    return {"path": path, "integrity": integrity, "ok": integrity == ["ok"], "tables": tables}


# --------------------------------------------------------------------------- writing files

def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    """Remove a database file we created and whatever SQLite kept next to it."""
    for name in (path,) + tuple(path + suffix for suffix in COPY_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """A temporary name next to ``path``; renamed over it (after fsync) if the block
    succeeds, removed if not.  Readers of ``path`` see the old file or the new, whole."""
    temporary = "%s.tmp-%d" % (path, os.getpid())
    _remove(temporary)
    try:
        yield temporary
        _fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
    with contextlib.suppress(OSError):
        _fsync_path(os.path.dirname(os.path.abspath(path)))     # the rename itself


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def backup_file(db: str, out: str, sql: bool = False, throttle: Optional[Throttle] = None) -> Dict[str, Any]:
    """Copy the database ``db`` to ``out``: binary (``VACUUM INTO``) or the SQL dump.

    Runs in a connection of its own, so a server may keep writing to ``db``
    meanwhile (immediate sync mode); the copy is the database as it was when the
    copy started.  ``out`` is replaced atomically.  Returns a summary (no check).
    """
    if _same_file(db, out):
        raise BackupError("the output %s is the database itself" % out)
    started = time.monotonic()
    conn = connect_read_only(db)
    if throttle is not None:
        throttle.attach(conn)
    try:
        with replacing(out) as temporary:
            if sql:
                with open(temporary, "w", encoding="utf-8") as fd:
                    write_dump(conn, fd)
            else:
                conn.execute("VACUUM INTO ?", (temporary,))     # one read transaction
    except sqlite3.Error as exc:
        raise BackupError("backup of %s failed: %s" % (db, exc)) from exc
    finally:
        conn.close()
    return {"source": os.path.abspath(db), "output": os.path.abspath(out), "format": "sql" if sql else "binary",
            "bytes": os.path.getsize(out), "seconds": round(time.monotonic() - started, 3)}


def is_sqlite_file(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def sql_statements(lines: Iterable[str]) -> Iterator[str]:
    """Statements of an SQL text, one at a time (a value may span lines)."""
    pending = ""
    for line in lines:
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise BackupError("the SQL text ends inside a statement: %r" % pending[:200])


def apply_sql(conn: sqlite3.Connection, lines: Iterable[str]) -> int:
    """Execute an SQL dump statement by statement (memory holds one statement, not
    the whole text as ``executescript`` would); return the number executed.

    The text is trusted as ``sqlite3 NEW.db < dump.sql`` trusts it: restore only
    dumps of your own (an ``ATTACH`` in it could write other files)."""
    count = 0
    for statement in sql_statements(lines):
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            raise BackupError("statement %d failed: %s: %s" % (count + 1, exc, statement[:200])) from exc
        count += 1
    if conn.in_transaction:
        raise BackupError("the SQL text leaves a transaction open (no COMMIT: a truncated dump?)")
    return count


def _build(temporary: str, src: str, throttle: Optional[Throttle] = None) -> Dict[str, Any]:
    """Create the database ``temporary`` from ``src`` (binary or SQL) and check it."""
    try:
        conn = sqlite3.connect(temporary, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError("cannot create %s: %s" % (temporary, exc)) from exc
    if throttle is not None:
        throttle.attach(conn)
    try:
        if is_sqlite_file(src):
            source = connect_read_only(src)
            try:
                source.backup(conn)         # nobody else writes the source: one pass
            finally:
                source.close()
        else:
            conn.execute("PRAGMA synchronous = OFF")    # fsync'd once, before the rename
            with open(src, encoding="utf-8") as lines:
                apply_sql(conn, lines)
        conn.execute("PRAGMA journal_mode = DELETE")    # one file, nothing left beside it
        return verify_connection(conn, temporary)
    except sqlite3.Error as exc:
        raise BackupError("cannot build a database from %s: %s" % (src, exc)) from exc
    finally:
        conn.close()


def _check_unused(path: str) -> None:
    """Make sure no connection uses ``path`` and nothing stays next to it.

    Leaving WAL mode needs the file alone (every connection to a WAL database holds
    a shared lock on it), so this fails while a server has it open, and otherwise
    folds the WAL into the file and removes ``-wal``/``-shm``.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=OPEN_TIMEOUT_SECONDS)
        try:
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseBusy("%s is in use (is a PR server running on it? stop it first): %s"
                               % (path, exc)) from exc
        raise BackupError("cannot replace %s: %s" % (path, exc)) from exc


def restore(src: str, dest: str, force: bool = False) -> Dict[str, Any]:
    """Make the database ``dest`` from a backup ``src`` (binary copy or SQL dump).

    The new database is built and checked next to ``dest`` and renamed into place
    only if ``PRAGMA integrity_check`` says ``ok``.  An existing ``dest`` (or a
    ``-wal``/``-shm``/``-journal`` of one: SQLite would apply a stale log to the new
    file) is replaced only with ``force``, and never while a connection uses it.
    Stop the servers using ``dest`` first.
    """
    if not os.path.isfile(src):
        raise BackupError("backup %s does not exist" % src)
    if _same_file(src, dest):
        raise BackupError("the backup and the destination are the same file")
    existing = [name for name in (dest,) + tuple(dest + s for s in COPY_SUFFIXES) if os.path.exists(name)]
    if existing and not force:
        raise BackupError("%s exists; use --force to replace it" % existing[0])
    if os.path.exists(dest):
        _check_unused(dest)
    started = time.monotonic()
    with replacing(dest) as temporary:
        report = _build(temporary, src)
        if not report["ok"]:
            raise VerificationFailed("the database built from %s fails its integrity check: %s"
                                     % (src, "; ".join(report["integrity"][:5])), report)
        for suffix in COPY_SUFFIXES:                 # nobody uses them: stale
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest + suffix)
    report["path"] = os.path.abspath(dest)
    return {"source": os.path.abspath(src), "output": os.path.abspath(dest),
            "format": "binary" if is_sqlite_file(src) else "sql", "bytes": os.path.getsize(dest),
            "seconds": round(time.monotonic() - started, 3), "verification": report}


def verify_sql(path: str, throttle: Optional[Throttle] = None) -> Dict[str, Any]:
    """Check an SQL dump by restoring it into a scratch database next to it."""
    scratch = "%s.verify-%d" % (path, os.getpid())
    _remove(scratch)
    try:
        report = _build(scratch, path, throttle)
    finally:
        _remove(scratch)
    report["path"] = os.path.abspath(path)
    return report


# --------------------------------------------------------------------------- serving a dump

class SnapshotDump(DumpSource):
    """The SQL text of a snapshot held by a connection's read transaction."""

    def __init__(self, conn: sqlite3.Connection, description: str) -> None:
        self.conn = conn
        self.description = description

    def lines(self) -> Iterator[str]:
        """Every line of the dump but the users table's (a dump is sent over the wire)."""
        try:
            for line in self.conn.iterdump():
                if not users.is_secret_line(line):
                    yield line
        except sqlite3.Error as exc:
            raise DatabaseError(str(exc)) from exc

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
    try:
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
            _remove(scratch)
    except sqlite3.Error as exc:
        raise DatabaseError("cannot take a snapshot of %s: %s" % (dbfile, exc)) from exc
    return SnapshotDump(copy, "copy of %s (buffered sync mode: the server paused %.3f s to make it)"
                        % (dbfile, time.monotonic() - started))


def journal_mode(db: str) -> str:
    """The database's journal mode (``wal``, ``delete``...), read without changing it."""
    conn = connect_read_only(db)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    except sqlite3.Error as exc:
        raise BackupError("cannot read database %s: %s" % (db, exc)) from exc
    finally:
        conn.close()
