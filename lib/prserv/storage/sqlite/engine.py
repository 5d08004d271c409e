"""The SQLite engine: one PR table of a ``SQLiteDatabase`` behind ``storage.Engine``.

Every method works on the calling thread and never suspends (``storage.engine``
explains why that matters).  Writes go through the database's ``Transactions``;
lookups through the table's ``PackageCache``.  SQLite's own errors leave as
``DatabaseError`` with SQLite's message (``errors.DATABASE``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ...errors import DatabaseError, InvalidRequestError
from ...log import logger
from ...revision import RevisionKey, key_to_revision, optional_key
from ..engine import (NOBODY, DumpSource, Engine, FeedPage, Given, Giver, HistoryRow, ImmediateEngine,
                      ImmediateWriteScope, MirrorState, MirrorTarget, PackageState, PackageSummary, Position,
                      PositionedRow, RecentRow, Row, WriteScope, package_max_rows)
from ...tokens import UserRecord
from . import counting, feed, listing, record, snapshot, users
from .errors import DATABASE, database_error
from .cache import PackageCache
from .schema import PRMAIN, checked_identifier, create_table, create_value_index
from .database import SQLiteDatabase

EXPORT_BATCH_ROWS = 2000
"""Rows fetched per query while exporting (and per batch handed on)."""
CHANGE_POLL_SECONDS = 0.1
"""How often ``wait_for_changes`` looks for commits of other processes."""
LISTING_STEPS = 10
"""Seeks a package listing makes before it lets the event loop run other requests."""
STOP = object()
COUNT_PAUSE = 0.005
"""Seconds between the steps of the first count of packages (``counting.STEP`` each)."""
FORGET_SLICE = 20000
"""Records ``forget_clients`` changes per transaction at most."""


class SQLiteEngine(Engine, ImmediateEngine, MirrorTarget):
    """bitbake's PR table (``PRMAIN``, or another name) in an open SQLite file."""

    def __init__(self, database: SQLiteDatabase, table: str = PRMAIN, mirror: bool = False) -> None:
        """``mirror``: the file is written only by a mirror (``feed`` explains what
        that changes); else a read-write open makes it an origin."""
        self.db = database
        self.conn = database.connection
        self.table = checked_identifier(table)
        self.table_name = self.table
        self.read_only = database.read_only
        self.feed = feed.FeedReader(self.conn, self.table)
        with DATABASE:
            if not self.read_only:
                create_table(self.conn, self.table)
                create_value_index(self.conn, self.table)
                self._open_feed(mirror)
            self.cache = PackageCache(self.conn, self.table, database.cache_size)
            self.record = record.Record(self.conn, self.table)
            self.counter = counting.PackageCounter(self.conn, self.table)
        if self.cache.exists and not self.cache.indexed:
            logger.warning("%s of %s is not indexed by value (a read-only server does not "
                           "create the index): a package's first request reads all of it; "
                           "a read-write open indexes it once", self.table, database.filename)
        database.transactions.caches.append(self.cache)
        database.transactions.before_commit.append(self.record.flush)
        database.transactions.after_rollback.append(self.record.discard)
        self.commit_durations = database.transactions.commit_durations
        self.immediate = self
        self._counting: Optional["asyncio.Future[None]"] = None
        self._change_waiters: List["asyncio.Future[None]"] = []
        database.transactions.after_commit.append(self._wake_change_waiters)

    def _open_feed(self, mirror: bool) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if mirror:
                feed.open_mirror(self.conn, self.table, self.db.filename)
            else:
                feed.open_origin(self.conn, self.table)
            record.create(self.conn, self.table)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ reading
    async def package(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                      children_of: Optional[RevisionKey] = None) -> PackageState:
        return self.package_now(version, pkgarch, checksum, children_of)

    def package_now(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                    children_of: Optional[RevisionKey] = None) -> PackageState:
        try:                                    # a request's path: see _WriteScope
            return self.cache.state(version, pkgarch, checksum, children_of)
        except sqlite3.Error as exc:
            raise database_error(exc) from exc

    async def packages(self, prefix: str, pkgarch: Optional[str], after: Optional[Tuple[str, str]],
                       limit: int) -> List[PackageSummary]:
        """A seek per step (``listing.walk``); every ``LISTING_STEPS`` steps the event
        loop runs the other requests waiting (this method alone suspends: a page must
        not hold the loop for its whole length)."""
        found: List[PackageSummary] = []
        steps = listing.walk(self.conn, self.table, prefix, pkgarch, after)
        while True:
            with DATABASE:
                self.cache.sync()
                if not self.cache.exists:
                    return found
                for _ in range(LISTING_STEPS):
                    package = next(steps, STOP)
                    if package is STOP:
                        return found
                    if package is not None:
                        found.append(self._summary(*package))       # type: ignore[misc]
                        if len(found) >= limit:
                            return found
            await asyncio.sleep(0)

    def _summary(self, version: str, pkgarch: str) -> PackageSummary:
        """A package as a listing shows it: its largest value and when that was given."""
        largest = self.cache.largest(version, pkgarch)
        latest = None if largest is None else key_to_revision(largest)
        given = None if latest is None else self.record.first_given(version, pkgarch, latest, self.cache.indexed)
        return version, pkgarch, latest, given

    async def history(self, version: str, pkgarch: str) -> List[HistoryRow]:
        with DATABASE:
            self.cache.sync()
            if not self.cache.exists:
                return []
            return self.record.history(version, pkgarch)

    async def recent(self, since: Optional[int], after: Optional[Position], limit: int) -> List[RecentRow]:
        with DATABASE:
            bound = self._committed_rowid()         # what an answer already acknowledged
            if not self.cache.exists:
                return []
            return self.record.recent(since, None if after is None else _rowid(after), bound, limit)

    async def values_stored(self) -> Optional[int]:
        """The largest rowid committed: the rows stored, as long as none was removed
        (bitbake's server never removes one)."""
        with DATABASE:
            return self._committed_rowid()

    async def packages_stored(self) -> Optional[int]:
        """The count kept up to date (``counting``): one step of it here (a table of a
        few packages is counted at once), the rest by a task of the engine's, a step at
        a time between other requests."""
        with DATABASE:
            if not self.cache.exists:
                return 0
            known = self.counter.count(self._committed_rowid(), walk=self._counting is None)
        if known is None and self._counting is None:
            self._counting = asyncio.ensure_future(self._count_packages())
        return known

    async def _count_packages(self) -> None:
        try:
            while True:
                with DATABASE:
                    if self.counter.count(self._committed_rowid()) is not None:
                        return
                await asyncio.sleep(COUNT_PAUSE)
        except DatabaseError as exc:
            logger.warning("counting the packages of %s stopped: %s", self.table, exc)

    async def given_since(self, since: int) -> Optional[int]:
        with DATABASE:
            return self.record.given_since(since)

    async def forget_clients(self, before: int) -> int:
        """In slices of ``FORGET_SLICE`` rows, each its own transaction (durable at
        once, whatever the sync mode), so that writers never wait long for it; every
        record is looked at, times out of order too."""
        with DATABASE:
            start, end = self.record.row_range()
        changed = 0
        for low in range(start, end, FORGET_SLICE):
            with DATABASE:
                with self.db.transactions.scope():
                    changed += self.record.forget_clients(before, (low, min(low + FORGET_SLICE, end)))
                if self.db.group is not None:
                    self.db.group.commit()
            await asyncio.sleep(0)              # a server's other requests between slices
        return changed

    async def has_row(self, version: str, pkgarch: str, value: str,
                      checksum: Optional[str] = None) -> bool:
        with DATABASE:
            self.cache.sync()
            if not self.cache.exists:
                return False
            if checksum is None:
                row = self.conn.execute(
                    "SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? AND value = ? LIMIT 1"
                    % self.table, (version, pkgarch, value)).fetchone()
            else:
                row = self.conn.execute(
                    "SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? AND checksum = ? AND value = ?"
                    % self.table, (version, pkgarch, checksum, value)).fetchone()
        return row is not None

    async def column_info(self) -> List[Dict[str, Any]]:
        with DATABASE:
            columns = self.conn.execute("PRAGMA table_info(%s)" % self.table).fetchall()
        return [{"name": name, "type": type_, "notnull": notnull, "dflt_value": default, "pk": pk}
                for _, name, type_, notnull, default, pk in columns]

    # ------------------------------------------------------------------ writing
    def write(self, version: str, pkgarch: str, checksum: Optional[str] = None,
              children_of: Optional[RevisionKey] = None,
              known: Optional[PackageState] = None, giver: Giver = NOBODY) -> "_WriteScope":
        return _WriteScope(self, version, pkgarch, checksum, children_of, None, giver)   # re-read: cheap here

    def write_now(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                  known: Optional[PackageState] = None, giver: Giver = NOBODY) -> "_WriteScope":
        return _WriteScope(self, version, pkgarch, checksum, None, known, giver)

    def insert(self, version: str, pkgarch: str, checksum: str, key: RevisionKey, giver: Giver = NOBODY) -> bool:
        """Store one row (inside a transaction) and queue its record; False if it
        already existed."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO %s (version, pkgarch, checksum, value) VALUES (?, ?, ?, ?)"
            % self.table, (version, pkgarch, checksum, key_to_revision(key)))
        if cursor.rowcount != 1:
            return False
        rowid = cursor.lastrowid or 0
        self.cache.stored(version, pkgarch, checksum, key, rowid)
        self.record.add(rowid, giver)
        return True

    async def add_rows(self, rows: Sequence[Row]) -> int:
        return self._add_rows(rows, None)

    async def add_rows_given(self, rows: Sequence[Row], given: Sequence[Optional[Given]]) -> int:
        return self._add_rows(rows, given)

    def _add_rows(self, rows: Sequence[Row], given: Optional[Sequence[Optional[Given]]]) -> int:
        """The rows, then the records they bring (``Record.keep``), in one transaction."""
        with DATABASE, self.db.transactions.scope():
            before = self.conn.total_changes
            self.conn.executemany("INSERT OR IGNORE INTO %s (version, pkgarch, checksum, value) "
                                  "VALUES (?, ?, ?, ?)" % self.table, rows)
            added = self.conn.total_changes - before
            if given is not None:
                self.record.keep(rows, given)
        self.cache.clear()                      # re-read on demand: a bulk copy, not a request
        return added

    async def records_of(self, rows: Sequence[Row]) -> List[Optional[Given]]:
        with DATABASE:
            return self.record.of_rows(rows)

    def wal_bytes(self) -> Optional[int]:
        """Safe from any thread: a ``stat`` of the ``-wal`` file (0 when there is none)."""
        try:
            return os.stat(self.db.filename + "-wal").st_size
        except OSError:
            return 0

    # ------------------------------------------------------------------ users
    async def get_user(self, username: str) -> Optional[UserRecord]:
        with DATABASE:
            return users.get(self.conn, username)

    async def list_users(self) -> List[UserRecord]:
        with DATABASE:
            return users.every(self.conn)

    async def put_user(self, record: UserRecord) -> None:
        self._change_users(users.put, record)

    async def remove_user(self, username: str) -> bool:
        return bool(self._change_users(users.remove, username))

    def _change_users(self, change: Callable[[sqlite3.Connection, Any], Any], argument: Any) -> Any:
        with DATABASE:
            with self.db.transactions.scope():
                result = change(self.conn, argument)
            if self.db.group is not None:
                self.db.group.commit()          # durable now, whatever the sync mode
        return result

    def answer_gate(self) -> Any:
        group = self.db.group
        return group.pending_commit() if group is not None else None

    async def flush(self) -> None:
        if self.db.group is not None:
            self.db.group.commit()

    async def close(self) -> None:
        if self._counting is not None:
            self._counting.cancel()
        self.db.close()

    # ------------------------------------------------------------------ export
    async def export_batches(self, version: Optional[str], pkgarch: Optional[str],
                             checksum: Optional[str], history: bool) -> AsyncIterator[List[Row]]:
        batch: List[Row] = []
        with DATABASE:
            for row in self._export_rows(version, pkgarch, checksum, history):
                batch.append(row)
                if len(batch) >= EXPORT_BATCH_ROWS:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def export_rows(self, version: Optional[str], pkgarch: Optional[str],
                    checksum: Optional[str], history: bool) -> Iterator[Row]:
        """``export_batches`` row by row, for callers without an event loop."""
        with DATABASE:
            yield from self._export_rows(version, pkgarch, checksum, history)

    def _export_rows(self, version: Optional[str], pkgarch: Optional[str],
                     checksum: Optional[str], history: bool) -> Iterator[Row]:
        self.cache.sync()
        if not self.cache.exists:
            return
        if history:
            yield from self._select([("version", version), ("pkgarch", pkgarch), ("checksum", checksum)])
            return
        for row in package_max_rows(self._select([("version", version), ("pkgarch", pkgarch)])):
            if not checksum or row[2] == checksum:
                yield row

    def _select(self, filters: List[Tuple[str, Optional[str]]]) -> Iterator[Row]:
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
        first = ("SELECT version, pkgarch, checksum, value FROM %s WHERE %s "
                 "ORDER BY version, pkgarch, checksum, value LIMIT ?" % (self.table, where))
        after = ("SELECT version, pkgarch, checksum, value FROM %s WHERE %s "
                 "AND (version, pkgarch, checksum) > (?, ?, ?) "
                 "ORDER BY version, pkgarch, checksum, value LIMIT ?" % (self.table, where))
        one_checksum = ("SELECT version, pkgarch, checksum, value FROM %s "
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

    # ------------------------------------------------------------------ change feed
    def _committed_rowid(self) -> int:
        """The largest rowid committed, this process's and every other's (inside this
        connection's write transaction nobody else can commit)."""
        if not self.db.transactions.depth:
            self.cache.sync_now()
        return self.cache.committed_watermark

    async def changes(self, since: Optional[Position], limit: int, count: bool = False,
                      given: bool = False) -> FeedPage:
        with DATABASE:
            bound = self._committed_rowid()
            if not self.cache.exists:
                return FeedPage(None, True, True, since is None, None, [], 0 if count else None)
            state = feed.read_state(self.conn, self.table)
            reached, at = (True, None) if since is None else self.feed.at(since, bound, state)
            rows = self._feed_rows(since, limit, bound, state, given) if reached else []
            pending = None
            if count and reached:
                pending = self.feed.count_after(rows[-1][0] if rows else since, bound, state)
            mirror = self.feed.is_mirror(state)
            return FeedPage(feed.identity_of(self.conn, self.table, state), not mirror,
                            state.complete or not mirror, reached, at, rows or [], pending)

    def _feed_rows(self, since: Optional[Position], limit: int, bound: int, state: feed.FeedState,
                   given: bool) -> Optional[List[Any]]:
        """The feed's rows, each with its time when ``given`` (unknown, None, on a file
        without the record: one only a read-only server of this version opened)."""
        recorded = given and self.record.exists()
        rows = self.feed.changes(since, limit, bound, state, times=recorded)
        if given and not recorded and rows:
            return [tuple(row) + (None,) for row in rows]
        return rows

    async def rows_between(self, after: Optional[Position], until: Position) -> Optional[List[PositionedRow]]:
        with DATABASE:
            bound = self._committed_rowid()
            if not self.cache.exists:
                return None
            rows = self.feed.between(after, until, bound, feed.read_state(self.conn, self.table))
            return None if rows is None else list(rows)

    async def wait_for_changes(self, position: Optional[Position], timeout: float) -> bool:
        with DATABASE:
            after = self.feed.local_row(position, feed.read_state(self.conn, self.table))
            if after is None:
                after = self._committed_rowid()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with DATABASE:
                if self._committed_rowid() > after:
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter = loop.create_future()
            self._change_waiters.append(waiter)
            timer = loop.call_later(min(remaining, CHANGE_POLL_SECONDS), _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if waiter in self._change_waiters:
                    self._change_waiters.remove(waiter)

    # ------------------------------------------------------------------ being a mirror
    def mirror_state(self) -> MirrorState:
        with DATABASE:
            state = feed.read_state(self.conn, self.table)
            if state.role != feed.MIRROR:
                return MirrorState(None, None, False, None)
            at = None
            if state.position is not None and self.cache.exists:
                at = self.feed.at(state.position, self._committed_rowid(), state)[1]
            return MirrorState(state.identity, state.position, state.complete, at)

    async def apply_changes(self, identity: str, rows: Sequence[Any], complete: bool) -> None:
        with DATABASE:
            with self.db.transactions.scope():
                rowids = feed.apply(self.conn, self.table, identity, rows, complete)
                self.record.add_copied((rowid, row[5]) for rowid, row in zip(rowids, rows) if len(row) > 5)
                for rowid, row in zip(rowids, rows):
                    version, pkgarch, checksum, value = row[1:5]
                    key = optional_key(value)
                    if key is not None:
                        self.cache.stored(version, pkgarch, checksum, key, rowid)

    def audit_bound(self, after: Optional[Position], rows: int) -> Optional[Position]:
        with DATABASE:
            return self.feed.bound_after(after, rows, feed.read_state(self.conn, self.table))

    def reset_mirror(self) -> int:
        with DATABASE:
            with self.db.transactions.scope():
                removed = feed.reset(self.conn, self.table)
        self.cache.clear()
        self.cache.watermark = 0
        return removed

    def _wake_change_waiters(self) -> None:
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            _wake(waiter)

    # ------------------------------------------------------------------ dumps
    def open_dump(self) -> DumpSource:
        group = self.db.group
        return snapshot.open_snapshot(self.db.filename, self.conn, self.db.exclusive and not self.read_only,
                                    group.commit if group is not None else None)

    def write_dump(self, fd: Any) -> int:
        """The SQL text dump of the whole database (one snapshot) written to ``fd``."""
        with DATABASE:
            return snapshot.write_dump(self.conn, fd)


def _rowid(position: Position) -> int:
    """The rowid a ``recent`` position names (``InvalidRequestError`` otherwise)."""
    if not (position.isdigit() and position.isascii()):
        raise InvalidRequestError("not a position of this database: %.40r" % position)
    return int(position)


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


class _WriteScope(WriteScope, ImmediateWriteScope):
    """``async with engine.write(version, pkgarch) as scope`` (or ``with
    engine.write_now(...)``): a write transaction (or a part of the group's shared
    one) with the package's state re-read under the lock."""

    __slots__ = ("engine", "version", "pkgarch", "checksum", "children_of", "state", "known", "unchanged",
                 "giver")

    def __init__(self, engine: SQLiteEngine, version: str, pkgarch: str, checksum: Optional[str],
                 children_of: Optional[RevisionKey], known: Optional[PackageState], giver: Giver) -> None:
        self.engine = engine
        self.giver = giver
        self.version = version
        self.pkgarch = pkgarch
        self.checksum = checksum
        self.children_of = children_of
        self.known = known
        self.unchanged = False

    # A write request's path: plain ``except`` clauses (free until raised), not the
    # ``with DATABASE`` blocks of the rest of the engine (about 0.15 us each).
    def __enter__(self) -> "_WriteScope":
        transactions = self.engine.db.transactions
        cache = self.engine.cache
        changes = cache.changes
        try:
            transactions.enter()
        except sqlite3.Error as exc:
            raise database_error(exc) from exc
        if self.known is not None and cache.changes == changes:
            self.state = self.known             # nothing came in with the lock: still true
            self.unchanged = True
            return self
        try:
            self.state = cache.loaded_state(self.version, self.pkgarch, self.checksum, self.children_of)
        except BaseException as exc:
            transactions.exit(False)
            if isinstance(exc, sqlite3.Error):
                raise database_error(exc) from exc
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.engine.db.transactions.exit(exc_type is None)
        except sqlite3.Error as error:
            raise database_error(error) from error

    async def __aenter__(self) -> "_WriteScope":
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def store_now(self, checksum: str, key: RevisionKey) -> bool:
        try:
            return self.engine.insert(self.version, self.pkgarch, checksum, key, self.giver)
        except sqlite3.Error as exc:
            raise database_error(exc) from exc

    async def store(self, checksum: str, key: RevisionKey) -> bool:
        return self.store_now(checksum, key)
