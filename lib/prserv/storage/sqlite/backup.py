"""Offline copies of a database (``prserv backup``, ``restore``, ``verify``).

* ``backup_file``: a binary copy made with ``VACUUM INTO`` while a server keeps
  writing.  In WAL mode a reader never blocks the writer, and ``VACUUM INTO``
  copies everything inside one read transaction, so it completes under any write
  load (SQLite's stepwise online backup restarts each time another connection
  writes, and may never finish on a busy server).  Or the SQL text dump, from the
  same kind of snapshot (``snapshot.write_dump``).
* ``restore`` builds a new database from either kind of copy, next to its
  destination, checks it, and renames it into place.
* ``verify`` reports ``PRAGMA integrity_check`` and the row count of each table.

``Throttle`` keeps any of them to a share of one core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

from ...errors import BackupError, DatabaseBusy, VerificationFailed
from .errors import translated
from .files import COPY_SUFFIXES, is_sqlite_file, remove, replacing, same_file
from .schema import table_names
from .snapshot import OPEN_TIMEOUT_SECONDS, connect_read_only, write_dump


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
    tables = {name: conn.execute("SELECT count(*) FROM %s" % _quoted(name)).fetchone()[0]
              for name in table_names(conn)}
    return {"path": path, "integrity": integrity, "ok": integrity == ["ok"], "tables": tables}


def backup_file(db: str, out: str, sql: bool = False, throttle: Optional[Throttle] = None) -> Dict[str, Any]:
    """Copy the database ``db`` to ``out``: binary (``VACUUM INTO``) or the SQL dump.

    Runs in a connection of its own, so a server may keep writing to ``db``
    meanwhile (immediate sync mode); the copy is the database as it was when the
    copy started.  ``out`` is replaced atomically.  Returns a summary (no check).
    """
    if same_file(db, out):
        raise BackupError("the output %s is the database itself" % out)
    started = time.monotonic()
    conn = connect_read_only(db)
    if throttle is not None:
        throttle.attach(conn)
    try:
        with translated("backup of %s failed" % db, BackupError), replacing(out) as temporary:
            if sql:
                with open(temporary, "w", encoding="utf-8") as fd:
                    write_dump(conn, fd)
            else:
                conn.execute("VACUUM INTO ?", (temporary,))     # one read transaction
    finally:
        conn.close()
    return {"source": os.path.abspath(db), "output": os.path.abspath(out), "format": "sql" if sql else "binary",
            "bytes": os.path.getsize(out), "seconds": round(time.monotonic() - started, 3)}


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
        count += 1
        with translated("statement %d failed" % count, BackupError, detail=statement[:200]):
            conn.execute(statement)
    if conn.in_transaction:
        raise BackupError("the SQL text leaves a transaction open (no COMMIT: a truncated dump?)")
    return count


def _build(temporary: str, src: str, throttle: Optional[Throttle] = None) -> Dict[str, Any]:
    """Create the database ``temporary`` from ``src`` (binary or SQL) and check it."""
    with translated("cannot create %s" % temporary, BackupError):
        conn = sqlite3.connect(temporary, isolation_level=None)
    if throttle is not None:
        throttle.attach(conn)
    try:
        with translated("cannot build a database from %s" % src, BackupError):
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
    finally:
        conn.close()


def _check_unused(path: str) -> None:
    """Make sure no connection uses ``path`` and nothing stays next to it.

    Leaving WAL mode needs the file alone (every connection to a WAL database holds
    a shared lock on it), so this fails while a server has it open, and otherwise
    folds the WAL into the file and removes ``-wal``/``-shm``.
    """
    with translated("cannot replace %s" % path, BackupError, busy=lambda exc: DatabaseBusy(
            "%s is in use (is a PR server running on it? stop it first): %s" % (path, exc))):
        conn = sqlite3.connect(path, isolation_level=None, timeout=OPEN_TIMEOUT_SECONDS)
        try:
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        finally:
            conn.close()


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
    if same_file(src, dest):
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
    remove(scratch)
    try:
        report = _build(scratch, path, throttle)
    finally:
        remove(scratch)
    report["path"] = os.path.abspath(path)
    return report


def journal_mode(db: str) -> str:
    """The database's journal mode (``wal``, ``delete``...), read without changing it."""
    conn = connect_read_only(db)
    try:
        with translated("cannot read database %s" % db, BackupError):
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        conn.close()
