"""SQLite storage of PR values: bitbake's ``PRMAIN`` table, numeric ordering, caching.

The file stays byte-compatible with bitbake's own prserv (same table, no custom
functions or collations), so either server can open what the other wrote.

Lookups do not scan a package's rows per request (the reference does, in Python):
each package touched is loaded once through the primary-key index into a
``PackageState`` (max value, each checksum's min and max, largest child per base),
updated on every write made here, and brought up to date with rows other
connections committed -- detected with ``PRAGMA data_version`` and read with
``rowid > last seen``, which costs one cheap pragma per request when nothing changed
(or per event-loop turn, with ``PRTable.recheck_later``).

Writes run in ``BEGIN IMMEDIATE`` transactions that re-read state under SQLite's
write lock, so allocation is atomic across processes sharing the file.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import sqlite3
import threading
import urllib.parse
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import migrate, policy
from .errors import DatabaseError, InvalidRevisionError, ReadOnlyError
from .revision import (MAX_REVISION_LENGTH, RevisionKey, is_revision, key_to_revision, optional_key,
                       revision_key)

logger = logging.getLogger("BitBake.PRserv")

PackageId = Tuple[str, str]

DEFAULT_CACHED_PACKAGES = 20000
BUSY_TIMEOUT_SECONDS = 30.0
EXPORT_BATCH_ROWS = 2000
"""Rows fetched per query while exporting."""
OPEN_BUSY_TIMEOUT_SECONDS = 1.0
"""While opening: a file held exclusively (buffered sync mode) is reported quickly."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _checked_identifier(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise DatabaseError("invalid table name %r" % (name,))
    return name


class PackageState:
    """Everything lookups need about one (version, pkgarch)."""

    __slots__ = ("has_rows", "max_key", "checksums", "children")

    def __init__(self) -> None:
        self.has_rows = False
        self.max_key: Optional[RevisionKey] = None
        # checksum -> (min key, max key)
        self.checksums: Dict[str, Tuple[RevisionKey, RevisionKey]] = {}
        # base key -> largest N such that base.N is a value of the package
        self.children: Dict[RevisionKey, int] = {}

    def add(self, checksum: str, key: Optional[RevisionKey]) -> None:
        self.has_rows = True
        if key is None:
            return
        bounds = self.checksums.get(checksum)
        if bounds is None:
            self.checksums[checksum] = (key, key)
        elif key < bounds[0] or key > bounds[1]:
            self.checksums[checksum] = (min(bounds[0], key), max(bounds[1], key))
        if self.max_key is None or key > self.max_key:
            self.max_key = key
        if len(key) > 1:
            base, last = key[:-1], key[-1]
            if self.children.get(base, -1) < last:
                self.children[base] = last

    def checksum_value(self, checksum: str, history: bool) -> Optional[RevisionKey]:
        bounds = self.checksums.get(checksum)
        if bounds is None:
            return None
        return bounds[0] if history else bounds[1]

    def has_value(self, checksum: str, key: RevisionKey) -> bool:
        """Whether (checksum, key) is certainly stored (answers only min/max)."""
        bounds = self.checksums.get(checksum)
        return bounds is not None and key in bounds


def _as_text(key: Optional[RevisionKey]) -> Optional[str]:
    return None if key is None else key_to_revision(key)


class PRTable:
    """One PR table (bitbake's ``PRMAIN``) with the reference's method names."""

    def __init__(self, conn: sqlite3.Connection, table: str, read_only: bool = False,
                 cached_packages: int = DEFAULT_CACHED_PACKAGES) -> None:
        self.conn = conn
        self.table = _checked_identifier(table)
        self.read_only = read_only
        self.cached_packages = cached_packages
        self._packages: "collections.OrderedDict[PackageId, PackageState]" = collections.OrderedDict()
        self._transaction_depth = 0
        self._rollback_watermark = 0
        self.group: Optional[Any] = None
        """A ``prserv.commit.GroupCommit`` that opens shared transactions, if any."""
        self._touched: List[PackageId] = []
        self.recheck_later: Optional[Callable[[Callable[[], None]], Any]] = None
        """If set, the pragma check is skipped until the callback given to it runs.

        The server passes ``loop.call_soon``: one check per event-loop turn serves
        every request of that turn.  Still linearizable: a turn's requests arrived
        before the check was made (the loop reads sockets before running callbacks).
        Write transactions always check."""
        self._checked = False
        if not read_only:
            self.conn.execute(
                'CREATE TABLE IF NOT EXISTS %s (version TEXT NOT NULL, pkgarch TEXT NOT NULL, '
                "checksum TEXT NOT NULL, value TEXT, "
                "PRIMARY KEY (version, pkgarch, checksum, value))" % self.table)
        self._exists = self._table_exists()
        self._data_version = self._read_data_version()
        self._watermark = self._max_rowid()

    # ------------------------------------------------------------------ coherence
    def _table_exists(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (self.table,)).fetchone()
        return row is not None

    def _read_data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def _max_rowid(self) -> int:
        if not self._exists:
            return 0
        row = self.conn.execute('SELECT max(rowid) FROM %s' % self.table).fetchone()
        return row[0] or 0

    def _sync(self) -> None:
        """Apply rows other connections committed since the last look (if any)."""
        if self._checked:
            return
        if self.recheck_later is not None:
            self._checked = True
            self.recheck_later(self._expire_check)
        self._sync_now()

    def _expire_check(self) -> None:
        self._checked = False

    def _sync_now(self) -> None:
        version = self._read_data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self._exists = self._table_exists()
        max_rowid = self._max_rowid()
        if max_rowid < self._watermark:
            # Rows were deleted or the table re-created: start afresh.
            self._packages.clear()
            self._watermark = max_rowid
            return
        if max_rowid == self._watermark:
            return
        rows = self.conn.execute(
            'SELECT rowid, version, pkgarch, checksum, value FROM %s WHERE rowid > ?' % self.table,
            (self._watermark,))
        for rowid, version_, pkgarch, checksum, value in rows:
            state = self._packages.get((version_, pkgarch))
            if state is not None:
                state.add(checksum, self._key_of_stored(value, version_, pkgarch))
            if rowid > self._watermark:
                self._watermark = rowid

    def _key_of_stored(self, value: object, version: str, pkgarch: str) -> Optional[RevisionKey]:
        key = optional_key(value)  # type: ignore[arg-type]
        if key is None:
            logger.warning("Skipping stored value %r of %s/%s: not a revision", value, version, pkgarch)
        return key

    def _package(self, version: str, pkgarch: str) -> PackageState:
        """Current state of a package (loaded through the index on first use)."""
        self._sync()
        package = (version, pkgarch)
        state = self._packages.get(package)
        if state is not None:
            self._packages.move_to_end(package)
            return state
        state = PackageState()
        if self._exists:
            rows = self.conn.execute(
                'SELECT checksum, value FROM %s WHERE version = ? AND pkgarch = ?' % self.table,
                (version, pkgarch))
            for checksum, value in rows:
                state.add(checksum, self._key_of_stored(value, version, pkgarch))
        self._packages[package] = state
        if len(self._packages) > self.cached_packages:
            self._packages.popitem(last=False)
        return state

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction holding SQLite's write lock, state re-synced inside.

        Everything decided inside sees every committed row of every process, and
        nothing else can write until it ends: read-decide-write is atomic.  Nests,
        and joins a transaction opened with ``begin`` (group commit) without ending it.
        """
        if not self._transaction_depth and self.group is not None:
            self.group.open()                 # a shared transaction (prserv.commit)
        if self._transaction_depth:
            self._transaction_depth += 1
            try:
                yield
            finally:
                self._transaction_depth -= 1
            return
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @property
    def in_transaction(self) -> bool:
        return self._transaction_depth > 0

    def begin(self) -> None:
        """Open a write transaction (``BEGIN IMMEDIATE``: waits while another writer holds
        the lock) and bring the cached state up to date under it."""
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        if self._transaction_depth:
            raise DatabaseError("a write transaction is already open")
        self._rollback_watermark = self._watermark
        self.conn.execute("BEGIN IMMEDIATE")
        self._transaction_depth = 1
        try:
            self._sync_now()
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        """Commit the transaction opened by ``begin``; on failure roll back and raise."""
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._transaction_depth = 0
        self._touched = []

    def rollback(self) -> None:
        """Undo the open transaction and forget what it wrote from the cache."""
        self._transaction_depth = 0
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        for package in self._touched:
            self._packages.pop(package, None)
        self._watermark = self._rollback_watermark
        self._touched = []

    def _insert(self, version: str, pkgarch: str, checksum: str, key: RevisionKey) -> bool:
        """Store one row (inside a transaction); False if it already existed."""
        cursor = self.conn.execute(
            'INSERT OR IGNORE INTO %s (version, pkgarch, checksum, value) VALUES (?, ?, ?, ?)'
            % self.table, (version, pkgarch, checksum, key_to_revision(key)))
        if cursor.rowcount != 1:
            return False
        self._watermark = max(self._watermark, cursor.lastrowid or 0)
        package = (version, pkgarch)
        self._touched.append(package)
        state = self._packages.get(package)
        if state is not None:
            state.add(checksum, key)
        return True

    def store_value(self, version: str, pkgarch: str, checksum: str, value: str) -> None:
        """Store the row unless it exists; a no-op on a read-only database."""
        if self.read_only:
            return
        key = revision_key(value)
        with self.transaction():
            self._insert(version, pkgarch, checksum, key)

    def store_key(self, version: str, pkgarch: str, checksum: str, key: RevisionKey) -> None:
        """``store_value`` for a value already parsed (joins the caller's transaction, if any)."""
        if self.read_only:
            return
        with self.transaction():
            self._insert(version, pkgarch, checksum, key)

    # ------------------------------------------------------------------ lookups
    def package_state(self, version: str, pkgarch: str) -> PackageState:
        """The package's current state (for the allocator; do not modify)."""
        return self._package(version, pkgarch)

    def test_package(self, version: str, pkgarch: str) -> bool:
        return self._package(version, pkgarch).has_rows

    def test_checksum_value(self, version: str, pkgarch: str, checksum: str, value: str) -> bool:
        if not self._exists_now():
            return False
        row = self.conn.execute(
            'SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? AND checksum = ? AND value = ?'
            % self.table, (version, pkgarch, checksum, value)).fetchone()
        return row is not None

    def test_value(self, version: str, pkgarch: str, value: str) -> bool:
        if not self._exists_now():
            return False
        row = self.conn.execute(
            'SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? AND value = ? LIMIT 1'
            % self.table, (version, pkgarch, value)).fetchone()
        return row is not None

    def _exists_now(self) -> bool:
        self._sync()
        return self._exists

    def find_package_max_value(self, version: str, pkgarch: str) -> Optional[str]:
        return _as_text(self._package(version, pkgarch).max_key)

    def find_value(self, version: str, pkgarch: str, checksum: str, history: bool = False) -> Optional[str]:
        """The checksum's smallest value (history) or largest (no history), or None."""
        return _as_text(self._package(version, pkgarch).checksum_value(checksum, history))

    def find_min_value(self, version: str, pkgarch: str, checksum: str) -> Optional[str]:
        return self.find_value(version, pkgarch, checksum, True)

    def find_max_value(self, version: str, pkgarch: str, checksum: str) -> Optional[str]:
        return self.find_value(version, pkgarch, checksum, False)

    def find_new_subvalue(self, version: str, pkgarch: str, base: str) -> str:
        """Next ``base.N`` (not stored): only values with exactly one more field count."""
        base_key = revision_key(base)
        largest = self._package(version, pkgarch).children.get(base_key)
        return key_to_revision(policy.next_child(base_key, largest))

    # ------------------------------------------------------------------ allocation
    def get_value(self, version: str, pkgarch: str, checksum: str, history: bool) -> str:
        """get-pr without upstream (semantics.md §3); stores unless read-only."""
        state = self._package(version, pkgarch)
        key = policy.local_value(state.max_key, state.checksum_value(checksum, history), history)
        if self.read_only or state.has_value(checksum, key):
            return key_to_revision(key)
        with self.transaction():
            state = self._package(version, pkgarch)   # re-read under the write lock
            key = policy.local_value(state.max_key, state.checksum_value(checksum, history), history)
            if not state.has_value(checksum, key):
                self._insert(version, pkgarch, checksum, key)
        return key_to_revision(key)

    def importone(self, version: str, pkgarch: str, checksum: str,
                  value: Union[str, int]) -> Optional[Union[str, int]]:
        """Store a row as given (no ordering check); return ``value`` unchanged.

        ``value`` is a revision string or a non-negative int (stored as text).
        Returns None on a read-only database.
        """
        key = revision_key(import_value_text(value))
        if self.read_only:
            return None
        with self.transaction():
            self._insert(version, pkgarch, checksum, key)
        return value

    # ------------------------------------------------------------------ export
    def _metainfo(self) -> dict:
        from . import __version__

        columns = self.conn.execute('PRAGMA table_info(%s)' % self.table).fetchall()
        return {
            "tbl_name": self.table,
            "core_ver": __version__,
            "col_info": [{"name": name, "type": type_, "notnull": notnull, "dflt_value": default,
                          "pk": pk} for _, name, type_, notnull, default, pk in columns],
        }

    def _select(self, filters: List[Tuple[str, Optional[str]]]) -> Iterator[tuple]:
        """Matching rows in (version, pkgarch, checksum, value) order, fetched in batches.

        Each batch is one short query resuming after the last complete checksum of
        the previous one (keyset pagination on the primary key), so no cursor stays
        open while the caller sends what it got, and memory holds one batch.
        """
        clauses, params = ["version != ''"], []
        for column, value in filters:
            if value:
                clauses.append("%s = ?" % column)   # column names are constants
                params.append(value)
        where = " AND ".join(clauses)
        first = ('SELECT version, pkgarch, checksum, value FROM %s WHERE %s '
                 "ORDER BY version, pkgarch, checksum, value LIMIT ?" % (self.table, where))
        after = ('SELECT version, pkgarch, checksum, value FROM %s WHERE %s '
                 "AND (version, pkgarch, checksum) > (?, ?, ?) "
                 "ORDER BY version, pkgarch, checksum, value LIMIT ?" % (self.table, where))
        one_checksum = ('SELECT version, pkgarch, checksum, value FROM %s '
                        "WHERE version = ? AND pkgarch = ? AND checksum = ? ORDER BY value"
                        % self.table)
        rows = self.conn.execute(first, params + [EXPORT_BATCH_ROWS]).fetchall()
        while len(rows) == EXPORT_BATCH_ROWS:
            last = rows[-1][:3]
            complete = len(rows)
            while complete and rows[complete - 1][:3] == last:
                complete -= 1                   # the last checksum may continue: next batch
            if complete:
                yield from rows[:complete]
                last = rows[complete - 1][:3]
            else:                               # one checksum filled the batch
                yield from self.conn.execute(one_checksum, last).fetchall()
            rows = self.conn.execute(after, params + list(last) + [EXPORT_BATCH_ROWS]).fetchall()
        yield from rows

    def iter_export(self, version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
                    history: bool = False) -> Iterator[Tuple[str, str, str, Optional[str]]]:
        """Rows ``export`` gives, one at a time (memory stays bounded for any table size).

        Filters apply when truthy (None and "" mean any).  Without history only each
        package's max rows; the package max is taken over all of a package's rows
        before the checksum filter (semantics.md §6).
        """
        if not self._exists_now():
            return
        if history:
            yield from self._select([("version", version), ("pkgarch", pkgarch), ("checksum", checksum)])
            return
        for row in _package_max_rows(self._select([("version", version), ("pkgarch", pkgarch)])):
            if not checksum or row[2] == checksum:
                yield row

    def export_metainfo(self, colinfo: bool) -> dict:
        """The export's ``metainfo`` (empty unless ``colinfo``)."""
        return self._metainfo() if colinfo else {}

    def export(self, version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
               colinfo: bool, history: bool = False) -> Tuple[dict, List[dict]]:
        """``(metainfo, datainfo)`` (bitbake's method): ``iter_export`` as lists."""
        datainfo = [export_row(row) for row in self.iter_export(version, pkgarch, checksum, history)]
        return self.export_metainfo(colinfo), datainfo

    def dump_db(self, fd: IO[str]) -> int:
        """Write an SQL text dump of the whole database; return characters written."""
        written = 0
        for line in self.conn.iterdump():
            fd.write(line)
            fd.write("\n")
            written += len(line) + 1
        return written


def export_row(row: Tuple[str, str, str, Optional[str]]) -> Dict[str, Optional[str]]:
    """One ``datainfo`` entry of an export."""
    version, pkgarch, checksum, value = row
    return {"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value}


def _package_max_rows(rows: Iterable[tuple]) -> Iterator[tuple]:
    """Rows holding their package's max value (rows sorted by version, pkgarch).

    One pass, keeping only the rows of the largest value seen so far in the
    current package: memory does not grow with the package's size.
    """
    package: Optional[PackageId] = None
    top: Optional[RevisionKey] = None
    best: List[tuple] = []
    for row in rows:
        if row[:2] != package:
            yield from best
            package, top, best = row[:2], None, []
        key = optional_key(row[3])
        if key is None:
            continue
        if top is None or key > top:
            top, best = key, [row]
        elif key == top:
            best.append(row)
    yield from best


def import_value_text(value: object) -> str:
    """The text stored for an import-one value (revision string or non-negative int)."""
    if isinstance(value, bool):
        raise InvalidRevisionError("import value must be a revision, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise InvalidRevisionError("import value must not be negative: %d" % value)
        value = str(value)
        if is_revision(value):
            return value
    elif isinstance(value, str) and is_revision(value):
        return value
    shown = repr(value) if len(repr(value)) < 80 else repr(value)[:80] + "..."
    raise InvalidRevisionError("import value is not a revision (dotted decimal integers, "
                               "no leading zeros, at most %d characters): %s" % (MAX_REVISION_LENGTH, shown))


WAL_COPY_BYTES = 4 << 20
"""The background checkpointer copies the log into the file once it is this large."""
WAL_RESTART_BYTES = 64 << 20
"""...and has it start over once it holds this much (``WalCheckpointer.finish_on``)."""
WAL_CHECK_INTERVAL = 0.2
"""Seconds between two looks at the log's size."""


class WalCheckpointer:
    """Copies the write-ahead log into the database file from a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL
    pages, on the committing (event-loop) thread: with ``synchronous=FULL`` that is
    a pause of milliseconds for every client, once a second under load.  Here the
    writer's automatic checkpoint is off and this thread, with its own connection,
    makes a PASSIVE checkpoint (it never blocks readers or writers) whenever the
    log has grown past ``threshold_bytes``.  SQLite releases the GIL meanwhile.

    Copying is not enough to keep the log small: SQLite starts the log over only
    when a write transaction begins with every frame already copied, and under a
    steady write load the writer always commits more while this thread copies, so
    the log would grow without end (1.4 GB in 16 s of new-PR load, for a 24 MB
    database).  So once the log holds ``restart_bytes``, after copying the bulk
    this thread asks the writer to copy the few frames committed meanwhile
    (``finish_on``, called after a commit, on the writer's own connection, where
    nothing can commit in between): its next write transaction starts the log
    over, and its ``journal_size_limit`` gives the disk space back.
    """

    def __init__(self, filename: str, threshold_bytes: Optional[int] = None,
                 restart_bytes: Optional[int] = None, interval: Optional[float] = None) -> None:
        """Copy when the log file is larger than ``threshold_bytes``; have the log start
        over once it holds ``restart_bytes`` (each start costs the writer a small
        checkpoint: rarely, so that it does not show in its latency).  Defaults:
        ``WAL_COPY_BYTES``, ``WAL_RESTART_BYTES``, ``WAL_CHECK_INTERVAL``."""
        self.filename = filename
        self.threshold_bytes = WAL_COPY_BYTES if threshold_bytes is None else threshold_bytes
        self.restart_bytes = WAL_RESTART_BYTES if restart_bytes is None else restart_bytes
        self.interval = WAL_CHECK_INTERVAL if interval is None else interval
        self.checkpoints = 0
        self.last_result: Optional[Tuple[int, int, int]] = None
        """(busy, WAL frames, frames copied) of the last checkpoint."""
        self.checkpointed = threading.Event()
        """Set after each checkpoint (for whoever waits for one: tests, tools)."""
        self.tail_requested = False
        """Set by this thread after copying the bulk of a long log; ``finish_on`` clears it."""
        self.tails = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prserv-checkpoint", daemon=True)
        self._thread.start()

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self.filename + "-wal")
        except OSError:
            return 0

    def _run(self) -> None:
        conn = sqlite3.connect(self.filename, timeout=0.1, isolation_level=None,
                               check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                if not self.tail_requested and self._wal_size() > self.threshold_bytes:
                    self.copy(conn)
        finally:
            conn.close()

    def copy(self, conn: sqlite3.Connection) -> None:
        """One background pass, on a connection that is not the writer's (the thread's)."""
        try:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:       # e.g. another process checkpoints right now
            logger.debug("checkpoint of %s skipped: %s", self.filename, exc)
            return
        self.last_result = (busy, frames, copied)
        self.checkpoints += 1
        # all copied (no reader holds an older snapshot, e.g. a backup) and long enough
        self.tail_requested = copied == frames and frames * page_size >= self.restart_bytes
        self.checkpointed.set()
        logger.debug("checkpoint of %s: %d of %d WAL frames copied", self.filename, copied, frames)

    def finish_on(self, conn: sqlite3.Connection) -> None:
        """On the writer's connection, outside a transaction: if this thread asked for
        it, copy the frames committed since its checkpoint, so the writer's next
        transaction starts the log over.  Costs the writer one small checkpoint (two
        fsyncs, 1-7 ms on a busy disk) per ``restart_bytes`` of log."""
        if not self.tail_requested:
            return
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:       # another process checkpoints: next time
            logger.debug("checkpoint of the log's tail of %s skipped: %s", self.filename, exc)
            return
        finally:                           # only now may the thread copy again
            self.tail_requested = False
        self.tails += 1
        logger.debug("checkpoint of the log's tail of %s: %d of %d WAL frames copied",
                     self.filename, copied, frames)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class PRData:
    """The PR database file (bitbake's class name and behaviour).

    ``data["PRMAIN"]`` gives the table (created if missing unless read-only);
    ``del data["X"]`` drops a table; ``disconnect()`` closes the file.
    """

    def __init__(self, filename: str, read_only: bool = False, synchronous: str = "NORMAL",
                 exclusive: bool = False, background_checkpoints: bool = False) -> None:
        """``synchronous``: SQLite's setting (``FULL`` fsyncs every commit).  ``exclusive``:
        hold the file for this connection alone (refused while another one has it open).
        ``background_checkpoints``: a ``WalCheckpointer`` instead of checkpoints inside
        commits (read-write, non-exclusive only)."""
        self.filename = os.path.abspath(filename)
        self.read_only = read_only
        if read_only:
            if not os.path.exists(self.filename):
                raise DatabaseError("database %s does not exist (read-only servers do not create it)"
                                    % self.filename)
        else:
            try:
                os.makedirs(os.path.dirname(self.filename), exist_ok=True)
            except OSError as exc:
                raise DatabaseError("cannot create the directory of database %s: %s"
                                    % (self.filename, exc.strerror)) from exc
        uri = "file:%s%s" % (urllib.parse.quote(self.filename), "?mode=ro" if read_only else "")
        logger.debug("Opening PRServ database '%s'", uri)
        try:
            self.connection = sqlite3.connect(uri, uri=True, isolation_level=None,
                                              timeout=OPEN_BUSY_TIMEOUT_SECONDS)
        except sqlite3.Error as exc:
            raise DatabaseError("cannot open database %s: %s" % (self.filename, exc)) from exc
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise DatabaseError("invalid synchronous mode %r" % synchronous)
        try:
            self.connection.execute("PRAGMA synchronous = %s" % synchronous.upper())
            if exclusive:
                self.connection.execute("PRAGMA locking_mode = EXCLUSIVE")
            if not read_only:
                self.connection.execute("PRAGMA journal_mode = WAL")
            if exclusive:
                self.connection.execute("BEGIN IMMEDIATE")      # take the lock now
                self.connection.execute("COMMIT")
            self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self.connection.execute("PRAGMA busy_timeout = %d" % (BUSY_TIMEOUT_SECONDS * 1000))
        except sqlite3.Error as exc:
            self.connection.close()
            if "locked" in str(exc):
                raise DatabaseError("database %s is in use by another process%s (%s)" % (
                    self.filename, "; a server in a buffered sync mode needs it alone" if exclusive
                    else " that holds it exclusively (a server in a buffered sync mode?)", exc)) from exc
            raise DatabaseError("cannot use database %s: %s" % (self.filename, exc)) from exc
        try:    # tables of bitbake <= 2.8: copied into PRMAIN once, or a read-only open refused
            self.migration: Optional[migrate.MigrationSummary] = migrate.on_open(
                self.connection, self.filename, read_only)
        except BaseException:
            self.connection.close()
            raise
        self._tables: Dict[str, PRTable] = {}
        self.checkpointer: Optional[WalCheckpointer] = None
        if background_checkpoints and not read_only and not exclusive:
            self.connection.execute("PRAGMA wal_autocheckpoint = 0")
            self.checkpointer = WalCheckpointer(self.filename)
            # when the log starts over, give the disk space back down to this size
            self.connection.execute("PRAGMA journal_size_limit = %d" % WAL_COPY_BYTES)

    def checkpoint_tail(self) -> None:
        """After a commit: let the background checkpointer's log start over (see
        ``WalCheckpointer``).  Does nothing without one."""
        if self.checkpointer is not None and not self.connection.in_transaction:
            self.checkpointer.finish_on(self.connection)

    def disconnect(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        if self.connection is not None:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            self.connection.close()
            self.connection = None

    def __getitem__(self, tblname: str) -> PRTable:
        if not isinstance(tblname, str):
            raise TypeError("tblname argument must be a string, not '%s'" % type(tblname))
        table = self._tables.get(tblname)
        if table is None:
            table = self._tables[tblname] = PRTable(self.connection, tblname, self.read_only)
        return table

    def __delitem__(self, tblname: str) -> None:
        _checked_identifier(tblname)
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        self._tables.pop(tblname, None)
        logger.info("drop table %s", tblname)
        self.connection.execute('DROP TABLE IF EXISTS %s' % tblname)
