"""Backups of a live database: SQL dumps, consistent binary copies, restores.

Three ways to take a copy, all consistent snapshots (one SQLite read transaction):

* ``prserv backup DB OUT``: a binary copy made with ``VACUUM INTO`` from this
  process while a server keeps writing.  In WAL mode a reader never blocks the
  writer, and ``VACUUM INTO`` copies everything inside one read transaction, so it
  completes under any write load (SQLite's stepwise online backup restarts each
  time another connection writes, and may never finish on a busy server).
  ``--sql`` writes the SQL text dump instead, from the same kind of snapshot.
* ``prserv dump --server ADDR OUT``: the server sends its own dump (the
  ``dump-db`` request).  This works in every sync mode; the buffered modes hold
  the file with SQLite's exclusive locking, so no other process can read it.
* ``PRTable.dump_db(fd)``: bitbake's method, on an open database.

``prserv restore SRC DEST`` builds a new database from either kind of copy, next
to DEST, checks it, and renames it into place.  Every command ends by printing the
result of ``PRAGMA integrity_check`` and the row count of each table.

This module works on files and connections only; the server and the client call
the pieces they need (``DumpStream``, ``DumpDecoder``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
import urllib.parse
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .asyncrpc.exceptions import ConnectionClosedError
from .errors import PRServiceError

SQLITE_HEADER = b"SQLite format 3\x00"
OPEN_TIMEOUT_SECONDS = 1.0
"""How long to wait for a lock before reporting a file held exclusively."""
DUMP_BATCH_CHARS = 32 * 1024
"""Dump text JSON-escaped at a time by the server (one ``json.dumps`` call)."""
COPY_SUFFIXES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps next to a database; a stale one must never meet a new file."""

BUFFERED_HINT = ("a PR server in a buffered sync mode (periodic or on-shutdown) holds it exclusively; "
                 "ask that server for a dump instead: prserv dump --server ADDR OUT")


class BackupError(PRServiceError):
    """A backup or restore cannot be made; the message says why."""


class DatabaseBusy(BackupError):
    """The file is held by another process (a buffered-mode server, or a server on
    the file a restore would replace)."""


class VerificationFailed(BackupError):
    """The copy exists but ``PRAGMA integrity_check`` did not answer ``ok``."""

    def __init__(self, message: str, report: Dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


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
def _replacing(path: str) -> Iterator[str]:
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
        with _replacing(out) as temporary:
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
    with _replacing(dest) as temporary:
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

def open_server_snapshot(dbfile: str, main: sqlite3.Connection, exclusive: bool,
                         commit: Optional[Callable[[], None]]) -> Tuple[sqlite3.Connection, str]:
    """A connection whose read transaction holds what a server's dump must show.

    The server's own connection cannot serve a dump sent over many event-loop turns:
    group commit opens write transactions on it every turn.  Normally (immediate
    mode, read-only servers) a second, read-only connection takes a WAL snapshot and
    the server keeps committing.  A buffered mode holds the file exclusively, so no
    second connection can open it: the buffer is committed and the database copied
    page by page (online backup API, one step) to a scratch file in its directory,
    which is unlinked at once (the open connection keeps it until closed).  That
    copy pauses the server for its duration (about 0.5 s per million rows).
    Returns the connection and a description for the log.
    """
    if not exclusive:
        conn = connect_read_only(dbfile)
        try:
            pin_snapshot(conn)
        except BaseException:
            conn.close()
            raise
        return conn, "read snapshot of %s" % dbfile
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
    return copy, "copy of %s (buffered sync mode: the server paused %.3f s to make it)" % (
        dbfile, time.monotonic() - started)


def dump_answer_pieces(lines: Iterable[str], batch_chars: int = DUMP_BATCH_CHARS) -> Iterator[str]:
    """``{"dump": "<text>"}`` in pieces, the text being the lines each ending in
    ``\\n``: the same characters as ``json.dumps({"dump": text})`` (JSON escapes
    each character on its own, so escaping batches of lines gives the whole's
    escape), with at most ``batch_chars`` plus one line of text held at a time."""
    yield '{"dump": "'
    batch: List[str] = []
    size = 0
    for line in lines:
        batch.append(line)
        batch.append("\n")
        size += len(line) + 1
        if size >= batch_chars:
            yield json.dumps("".join(batch))[1:-1]
            batch, size = [], 0
    if batch:
        yield json.dumps("".join(batch))[1:-1]
    yield '"}'


class DumpAborted(ConnectionClosedError):
    """The dump failed half-way: the answer cannot be completed.  The sending code
    treats it as a lost connection (it stops sending, on either of its paths) and
    ``on_failure`` closes the session: the client sees a cut answer, then EOF."""


class DumpStream:
    """One ``dump-db`` answer on its way: the pieces, the log lines, the clean-up.

    ``pieces()`` is consumed while the answer is sent (``JSONStream``); whatever
    ends it -- the last piece, an error, ``close()`` when the session ends first --
    closes the snapshot connection and calls ``on_end`` once (the server's
    one-dump-at-a-time slot).  A database error half-way calls ``on_failure``
    with the reason (the server ends the session) and raises ``DumpAborted``.
    """

    def __init__(self, conn: sqlite3.Connection, description: str, logger: Any,
                 on_end: Callable[["DumpStream"], None],
                 on_failure: Optional[Callable[[str], None]] = None) -> None:
        self.conn = conn
        self.logger = logger
        self.on_end = on_end
        self.on_failure = on_failure
        self.rows = 0
        self.chars = 0
        self.completed = False
        self._ended = False
        self._started = time.monotonic()
        self._generator = self._pieces()
        logger.info("dump-db: started from a %s", description)

    def pieces(self) -> Iterator[str]:
        return self._generator

    def _lines(self) -> Iterator[str]:
        for line in self.conn.iterdump():
            if line.startswith("INSERT INTO "):
                self.rows += 1
            yield line

    def _pieces(self) -> Iterator[str]:
        try:
            for piece in dump_answer_pieces(self._lines()):
                self.chars += len(piece)
                yield piece
            self.completed = True
        except sqlite3.Error as exc:
            self.logger.error("dump-db: failed after %d rows: %s", self.rows, exc)
            if self.on_failure is not None:
                self.on_failure("dump failed: %s" % exc)
            raise DumpAborted("dump failed: %s" % exc) from exc
        finally:
            self._end()

    def close(self) -> None:
        """Stop the dump now (its session ended); a no-op once it has ended."""
        self._generator.close()         # runs _pieces' finally if it started
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        seconds = time.monotonic() - self._started
        if self.completed:
            self.logger.info("dump-db: sent %d rows, %d bytes in %.2f s", self.rows, self.chars, seconds)
        else:
            self.logger.warning("dump-db: stopped after %d rows, %d bytes, %.2f s (the client went away?)",
                                self.rows, self.chars, seconds)
        self.on_end(self)


# --------------------------------------------------------------------------- receiving a dump

_ANSWER_HEAD = re.compile(r'\{\s*"dump"\s*:\s*"')
_ANSWER_TAIL = re.compile(r'"\s*\}\s*\Z')


class InvalidDumpAnswer(ValueError):
    """What arrived is not a well-formed ``{"dump": "..."}`` answer."""


class DumpDecoder:
    """Writes the text of a ``{"dump": "..."}`` answer to a file as its pieces arrive
    (chunk lines), so a client's memory does not grow with the database.

    The JSON string is decoded up to the last complete ``\\n`` escape of what has
    arrived; the rest waits for the next piece.
    """

    def __init__(self, fd: IO[str]) -> None:
        self.fd = fd
        self.written = 0
        self._held = ""
        self._inside = False

    def feed(self, piece: str) -> None:
        self._held += piece
        if not self._inside:
            match = _ANSWER_HEAD.match(self._held)
            if match is None:
                if len(self._held) >= 64:           # far longer than any valid head
                    raise InvalidDumpAnswer("not a dump answer: %r" % self._held[:100])
                return
            self._held = self._held[match.end():]
            self._inside = True
        cut = _last_newline_escape_end(self._held)
        if cut:
            self._write(self._held[:cut])
            self._held = self._held[cut:]

    def finish(self) -> int:
        """Check the answer's end and write the rest; return characters written."""
        match = _ANSWER_TAIL.search(self._held) if self._inside else None
        if match is None:
            raise InvalidDumpAnswer("the dump answer is incomplete")
        self._write(self._held[:match.start()])
        self._held = ""
        return self.written

    def _write(self, escaped: str) -> None:
        try:
            text = json.loads('"%s"' % escaped)
        except ValueError as exc:
            raise InvalidDumpAnswer("bad JSON string in the dump answer: %s" % exc) from None
        self.fd.write(text)
        self.written += len(text)


def _last_newline_escape_end(escaped: str) -> int:
    """Index just after the last ``\\n`` escape of a JSON string body (0: none).

    A backslash starts an escape when an even number of backslashes precede it
    in its run (``\\\\`` is an escaped backslash, followed by a plain ``n``)."""
    end = len(escaped)
    while True:
        i = escaped.rfind("\\n", 0, end)
        if i < 0:
            return 0
        run = i
        while run > 0 and escaped[run - 1] == "\\":
            run -= 1
        if (i - run) % 2 == 0:
            return i + 2
        end = i + 1


# --------------------------------------------------------------------------- the prserv subcommands

def _describe(summary: Dict[str, Any], verb: str) -> str:
    text = "%s %s to %s (%s, %.1f MiB) in %.2f s" % (
        verb, summary["source"], summary["output"], summary["format"], summary["bytes"] / 2**20,
        summary["seconds"])
    if "priority" in summary:
        text += " at %s priority" % summary["priority"]
    if summary.get("cpu_share"):
        text += ", at most %d%% of one core" % round(100 * summary["cpu_share"])
    return text


def _report_text(report: Dict[str, Any]) -> str:
    lines = ["integrity_check: %s" % "; ".join(report["integrity"][:20])]
    lines.extend("%s: %d rows" % (name, count) for name, count in report["tables"].items())
    if not report["tables"]:
        lines.append("(no tables)")
    return "\n".join(lines)


def _finish(out: Any, summary: Dict[str, Any], report: Dict[str, Any], verb: str) -> int:
    """Print the summary and the verification; the exit code says whether it passed."""
    from .tool import EXIT_OK, EXIT_VERIFY

    summary["verification"] = report
    out.result(summary, "%s\n%s" % (_describe(summary, verb), _report_text(report)))
    if not report["ok"]:
        print("prserv: %s fails its integrity check" % report["path"], file=sys.stderr)
        return EXIT_VERIFY
    return EXIT_OK


def _failure(exc: Exception) -> Exception:
    """The ``tool.Failure`` (exit code and message) for what stopped a backup or restore."""
    from .tool import EXIT_REFUSED, EXIT_USAGE, EXIT_VERIFY, Failure

    if isinstance(exc, OSError):            # else tool.main would call it a network problem
        return Failure(EXIT_USAGE, "%s: %s" % (exc.filename or "file", exc.strerror or exc))
    if isinstance(exc, VerificationFailed):
        return Failure(EXIT_VERIFY, str(exc))
    return Failure(EXIT_REFUSED if isinstance(exc, DatabaseBusy) else EXIT_USAGE, str(exc))


BACKUP_PRIORITIES = ("idle", "low", "normal")
"""``prserv backup --priority``: how much CPU the copy claims beside a busy server."""
LOW_NICENESS = 10
IDLE_FALLBACK_NICENESS = 19
IDLE_THROTTLE = Throttle(run=0.001, pause=0.003)
"""``--priority idle`` also keeps the copy and its check to a quarter of one core:
even a ``SCHED_IDLE`` neighbour slows a saturated server (shared caches, kernel work
that is not preempted), and spreading the same work over a longer time keeps it out
of the get-pr p99: 1.0-1.9x in 8 runs, against 1.0-3.2x in 29 runs without the
throttle, on 2 cores saturated by 32 clients.  A million rows then take 3.8 s on a
quiet machine instead of 1.1 s."""


def journal_mode(db: str) -> str:
    """The database's journal mode (``wal``, ``delete``...), read without changing it."""
    conn = connect_read_only(db)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    except sqlite3.Error as exc:
        raise BackupError("cannot read database %s: %s" % (db, exc)) from exc
    finally:
        conn.close()


def lower_priority(priority: str, blocks_writers: bool) -> str:
    """Lower this process's CPU priority for a copy; return what was applied.

    The copy is not urgent and the PR server's answers are: on a 2-core machine
    saturated by get-pr clients, a copy at equal priority raised their p99 2.5-6x,
    niceness 10 still 1.8-2.1x, while ``SCHED_IDLE`` (the process runs only on CPU
    time nothing else wants, and a waking task preempts it) mostly kept it under
    2x (see ``IDLE_THROTTLE`` for the rest).  The price is a longer copy when the
    machine is busy.

    A reader holding a rollback-journal database (not WAL) blocks every writer until
    it ends, so such a copy keeps its priority: the sooner it finishes the better.
    ``idle`` falls back to niceness 19 where ``SCHED_IDLE`` does not exist.
    """
    if priority == "normal" or blocks_writers:
        return "normal"
    if priority == "idle":
        if hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                return "idle"
            except OSError:                     # e.g. a seccomp policy: fall back to nice
                pass
        os.nice(IDLE_FALLBACK_NICENESS)
        return "niceness %d" % IDLE_FALLBACK_NICENESS
    os.nice(LOW_NICENESS)
    return "niceness %d" % LOW_NICENESS


def cmd_backup(args: argparse.Namespace, out: Any) -> int:
    """``prserv backup DB OUT [--sql] [--priority idle|low|normal]``."""
    try:
        blocks_writers = journal_mode(args.db) != "wal"
        applied = lower_priority(args.priority, blocks_writers)
        throttle = IDLE_THROTTLE if args.priority == "idle" and not blocks_writers else None
        summary = backup_file(args.db, args.out, sql=args.sql, throttle=throttle)
        report = verify_sql(args.out, throttle) if args.sql else verify(args.out, throttle)
    except (BackupError, OSError) as exc:
        raise _failure(exc) from None
    summary["priority"] = applied
    summary["cpu_share"] = throttle.cpu_share if throttle else None
    return _finish(out, summary, report, "backed up")


def cmd_restore(args: argparse.Namespace, out: Any) -> int:
    """``prserv restore SRC DEST [--force]``."""
    try:
        summary = restore(args.src, args.dest, force=args.force)
    except (BackupError, OSError) as exc:
        raise _failure(exc) from None
    return _finish(out, summary, summary.pop("verification"), "restored")


def cmd_dump(args: argparse.Namespace, out: Any) -> int:
    """``prserv dump --server ADDR OUT``: the server's own dump (``dump-db``)."""
    from .client import PRClient
    from .tool import EXIT_OK, Output

    started = time.monotonic()
    with PRClient(timeout=args.timeout) as client:
        client.connect_address(args.server)
        if args.out == "-":
            chars = client.dump_db(sys.stdout)
            sys.stdout.flush()
        else:
            with _replacing(args.out) as temporary:
                try:
                    fd = open(temporary, "w", encoding="utf-8")
                except OSError as exc:
                    raise _failure(exc) from None
                with fd:
                    chars = client.dump_db(fd)
    summary = {"source": args.server, "output": args.out, "format": "sql",
               "bytes": chars if args.out == "-" else os.path.getsize(args.out),
               "seconds": round(time.monotonic() - started, 3)}
    if args.out == "-":                      # stdout carries the dump: report on stderr
        Output(out.as_json, sys.stderr).result(
            summary, "dumped %s to stdout (%d bytes) in %.2f s (not verified)" % (
                args.server, chars, summary["seconds"]))
        return EXIT_OK
    try:
        report = verify_sql(args.out)
    except (BackupError, OSError) as exc:
        raise _failure(exc) from None
    return _finish(out, summary, report, "dumped")


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("backup", cmd_backup,
                  "copy a database file consistently, also while a server writes to it "
                  "(not one held by a buffered-mode server: use 'dump')")
    sub.add_argument("db", metavar="DB", help="the database file")
    sub.add_argument("out", metavar="OUT", help="the copy (replaced atomically)")
    sub.add_argument("--sql", action="store_true", help="write the SQL text dump, not a binary copy")
    sub.add_argument("--priority", choices=BACKUP_PRIORITIES, default="idle",
                     help="CPU priority of the copy: idle (default: only CPU time nothing else "
                          "wants, Linux SCHED_IDLE, and at most 25%% of one core), low (niceness "
                          "10) or normal; a database not in WAL mode is always copied at normal "
                          "priority")
    sub = command("restore", cmd_restore,
                  "make a database from a backup (binary copy or SQL dump); stop its servers first")
    sub.add_argument("src", metavar="SRC", help="the backup")
    sub.add_argument("dest", metavar="DEST", help="the database file to create")
    sub.add_argument("--force", action="store_true", help="replace DEST if it exists")
    sub = command("dump", cmd_dump, "write a running server's SQL dump to OUT ('-': stdout)")
    sub.add_argument("out", metavar="OUT")
