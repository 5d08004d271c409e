"""The PostgreSQL engine: PR values in one database shared by any number of servers.

Every request asks the database (as bitbake's hashserv does): there is no cache to
keep coherent, so an answer reflects every value any server acknowledged before
the request arrived.  A package's writes hold a transaction-scoped advisory lock on
the package (``writes``), so no value ever goes to two checksums whatever the
number of servers; ``lock_timeout`` bounds the wait for a lock held elsewhere.

This module runs every database operation through an outage: an operation that
meets one (``errors.is_outage``) is retried on new connections for up to
``outage_wait`` seconds (``db_outage_wait``), and only then answered with
``DatabaseUnavailable`` -- a failover to a standby costs the builds time, not failed
tasks.  A write once sent is never cancelled (``unabandoned``: a cancelled wait for
a synchronous standby leaves the commit on the old primary alone, where a failover
loses it after the value was answered).  A read-write engine also refreshes the
table's statistics as rows arrive (``note_stored``): autovacuum does too, but only
after its naptime, and a young table planned from an empty table's statistics finds
a checksum by reading its whole package.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from ...asyncrpc.deadline import within
from ...asyncrpc.stats import Durations
from ...errors import DatabaseError, DatabaseUnavailable, ReadOnlyError
from ...log import logger
from ...revision import RevisionKey
from ...tokens import UserRecord, record_from_row, row_of
from ..engine import (NOBODY, DumpSource, Engine, FeedPage, Given, Giver, HistoryRow, PackageState, PackageSummary,
                      Position, PositionedRow, RecentRow, Row)
from . import feed, listing, record, schema, users
from .availability import Outage
from .connections import first_connection, in_task, open_pool
from .errors import OPENED_AT, cause, database_error, driver, driver_errors, is_outage
from .export import max_rows_batches, select_batches
from .state import STATE, state_args, state_of
from .url import hide_in, masked
from .writes import CheckedWrite, LockedWrite

DEFAULT_POOL_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_OUTAGE_WAIT = 20.0
"""Below bitbake's 30 s client timeout: a request that waited this long is still
answered (with an error) before the build host gives up on the connection."""
DEFAULT_LOCK_TIMEOUT = DEFAULT_OUTAGE_WAIT
"""Writers of one package queue on its lock behind a commit, which PostgreSQL holds
until a synchronous standby has it; a standby can take up to its status interval
(``wal_receiver_status_interval``, 10 s by default) to say so.  A shorter lock
timeout turned such a wait into errors for the writers queued behind it."""
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 0.5
"""Pauses between a waiting request's attempts, doubling from the first to the
largest: a promoted standby is found within half a second of accepting writes."""
SLOW_COMMIT_SECONDS = 5.0
"""A write still waiting for its commit after this long is logged (once per
episode): PostgreSQL holds every commit while a synchronous standby is missing."""
CLOSE_WAIT_SECONDS = 1.0
"""How long closing waits for writes in flight before it cuts their connections
(shutdown has already waited ``shutdown_timeout`` for the requests behind them)."""
ANALYZE_MIN_ROWS = 500
ANALYZE_GROWTH = 0.1
"""Statistics are refreshed after this server stored max(ANALYZE_MIN_ROWS,
ANALYZE_GROWTH x the rows the last analysis counted)."""
CHANGE_POLL_SECONDS = 0.1
"""How often ``wait_for_changes`` asks for new committed rows."""

COLUMN_INFO = [{"name": "version", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 1},
               {"name": "pkgarch", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 2},
               {"name": "checksum", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 3},
               {"name": "value", "type": "TEXT", "notnull": 0, "dflt_value": None, "pk": 4}]
"""bitbake's PRMAIN columns, as an export's ``col_info`` gives them for a SQLite file."""

_ESTIMATED_ROWS = "SELECT reltuples FROM pg_class WHERE oid = 'prmain'::regclass"
"""The row count as the last analysis (or vacuum) estimated it; -1 if never."""

T = TypeVar("T")


class PostgreSQLEngine(Engine):
    """The PR table of a PostgreSQL database (``open`` creates one)."""

    table_name = "PRMAIN"

    def __init__(self, url: str, pool: Any, read_only: bool, outage_wait: float = DEFAULT_OUTAGE_WAIT) -> None:
        self.url = url
        self.shown_url = masked(url)
        self.pool = pool
        self.read_only = read_only
        self.driver = driver()
        self.driver_errors = driver_errors(self.driver)
        self.outage = Outage(self.shown_url, outage_wait, logger, lambda text: hide_in(text, url))
        self.commit_durations = Durations()
        """A write's round trip, which ends with its commit."""
        self._writes: Set["asyncio.Task[Any]"] = set()
        """Writes sent and not yet answered (``unabandoned``)."""
        self.slow_commit_seconds = SLOW_COMMIT_SECONDS
        self._slow_commits = 0
        """Writes now waiting longer than ``slow_commit_seconds`` for their commit."""
        self._stored_since_analysis = 0
        self._analyze_after = ANALYZE_MIN_ROWS
        self._analysis: Optional["asyncio.Task[None]"] = None

    @classmethod
    async def open(cls, url: str, read_only: bool = False, pool_size: int = DEFAULT_POOL_SIZE,
                   connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                   lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                   outage_wait: float = DEFAULT_OUTAGE_WAIT) -> "PostgreSQLEngine":
        """Connect (retrying for ``connect_timeout`` seconds while the database is not
        up) and check, create or upgrade the schema; ``outage_wait``: how long a
        request waits out an outage once serving."""
        pool = await open_pool(url, read_only, pool_size, lock_timeout)
        engine = cls(url, pool, read_only, outage_wait)
        try:
            connection = await first_connection(pool, url, connect_timeout)
            try:
                await schema.ensure(connection, read_only, engine.shown_url)
                engine._plan_next_analysis(await connection.fetchval(_ESTIMATED_ROWS))
            finally:
                await pool.release(connection)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, DatabaseError):
                raise
            if isinstance(exc, Exception):
                raise database_error(exc, url) from None
            raise
        return engine

    # ------------------------------------------------------------------ statistics
    def note_stored(self, rows: int) -> None:
        """Count rows this server stored; past the threshold, ANALYZE in the background
        (one analysis at a time; a request never waits for it)."""
        self._stored_since_analysis += rows
        if self._stored_since_analysis >= self._analyze_after and self._analysis is None:
            self._stored_since_analysis = 0
            self._analysis = asyncio.get_running_loop().create_task(self._analyze())

    async def _analyze(self) -> None:
        try:
            async with self.pool.acquire() as connection:
                await connection.execute("ANALYZE prmain")
                self._plan_next_analysis(await connection.fetchval(_ESTIMATED_ROWS))
        except self.driver_errors as exc:
            if not is_outage(exc, self.driver):         # an outage is logged once, by the requests
                logger.warning("could not refresh the statistics of %s: %s", self.shown_url,
                               hide_in(cause(exc), self.url))
        finally:
            self._analysis = None

    def _plan_next_analysis(self, estimated_rows: Optional[float]) -> None:
        self._analyze_after = max(ANALYZE_MIN_ROWS, int(ANALYZE_GROWTH * max(0.0, estimated_rows or 0.0)))

    # ------------------------------------------------------------------ outages
    async def retried(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()``; while it fails for an outage, again after a pause, until
        ``outage_wait`` seconds after its first failure (then ``DatabaseUnavailable``).
        ``attempt`` must be safe to repeat.  Other errors: ``DatabaseError`` at once."""
        waiting_since: Optional[float] = None
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                return await attempt()
            except self.driver_errors as exc:
                waiting_since = await self._wait_out(exc, waiting_since, delay)
                delay = min(2 * delay, RETRY_MAX_DELAY)

    async def _wait_out(self, exc: BaseException, waiting_since: Optional[float], delay: float) -> float:
        """After a failed attempt: raise unless ``exc`` is an outage with time left to
        wait, else pause; returns when the request began waiting."""
        if not is_outage(exc, self.driver):
            raise database_error(exc, self.url) from None
        await self.forget_connections(exc, waiting_since is None)
        now = time.monotonic()
        if waiting_since is None:
            waiting_since = now
        remaining = waiting_since + self.outage.wait - now
        if remaining <= 0:
            self.outage.gave_up_on()
            raise DatabaseUnavailable("the database %s is unreachable or not the primary, waited %g s "
                                      "(db_outage_wait): %s" % (self.shown_url, self.outage.wait,
                                                                hide_in(cause(exc), self.url))) from None
        await asyncio.sleep(min(delay, remaining))
        return waiting_since

    async def forget_connections(self, exc: BaseException, first_for_request: bool) -> None:
        """An outage: every pooled connection is replaced as it is next used (they
        may all lead to a server that is gone, or to one no longer the primary)."""
        self.outage.failed(exc, first_for_request, getattr(exc, OPENED_AT, None))
        await self.pool.expire_connections()

    async def _on_pooled(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        async with self.pool.acquire() as connection:
            opened_at = connection.opened_at                       # (a closed proxy no longer tells)
            try:
                result = await operation(connection)
            except self.driver_errors as exc:
                setattr(exc, OPENED_AT, opened_at)                 # for the outage's bookkeeping
                raise
            if self.outage.started is not None:
                self.outage.reached(opened_at)
        return result

    async def unabandoned(self, work: Awaitable[T]) -> T:
        """``await work`` (a write), in a task the caller's cancellation does not reach:
        a write once sent is never cancelled.  (A commit waiting for a synchronous
        standby, cancelled, stays committed on the primary alone: a value answered
        and then lost by a failover.)  ``close`` waits for these tasks."""
        task = asyncio.ensure_future(work)
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: "asyncio.Task[Any]") -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()                    # retrieved: its caller may be gone

    async def committing(self, call: Awaitable[T]) -> T:
        """Await ``call``, which ends a write transaction (a commit, or a one-statement
        write): its time counts in ``commit_durations``, and a wait longer than
        ``slow_commit_seconds`` is logged."""
        started = time.perf_counter()
        late: List[bool] = []
        slow = asyncio.get_running_loop().call_later(self.slow_commit_seconds, self._commit_slow, late)
        try:
            result = await call
        finally:
            slow.cancel()
            if late:
                self._commit_done_late(time.perf_counter() - started)
        self.commit_durations.observe(time.perf_counter() - started)
        return result

    def _commit_slow(self, late: List[bool]) -> None:
        late.append(True)
        self._slow_commits += 1
        if self._slow_commits == 1:
            logger.warning("a commit on %s has waited %g s and still waits: PostgreSQL holds a commit until "
                           "its synchronous standbys have it (synchronous_standby_names), so a missing or slow "
                           "standby holds it, as does a slow disk", self.shown_url, self.slow_commit_seconds)

    def _commit_done_late(self, seconds: float) -> None:
        self._slow_commits -= 1
        if self._slow_commits == 0:
            logger.info("commits on %s complete again (the last slow one took %.1f s)", self.shown_url, seconds)

    # ------------------------------------------------------------------ reading
    @in_task
    async def _query(self, query: str, *args: Any, method: str = "fetchval") -> Any:
        """``query`` on a pooled connection (asyncpg's ``method``), waiting out an
        outage; errors as ``DatabaseError``."""
        return await self.retried(lambda: self._on_pooled(lambda connection: getattr(connection, method)(
            query, *args)))

    async def write_statement(self, query: str, *args: Any, method: str = "fetchrow") -> Any:
        """A one-statement write (its own transaction) that is safe to repeat: sent
        again on a new connection while the database is out, never abandoned."""
        return (await self.write_repeated(query, *args, method=method))[0]

    async def write_repeated(self, query: str, *args: Any, method: str = "fetchrow") -> Tuple[Any, bool]:
        """``write_statement``'s result, and whether the write was sent more than once (then
        an earlier attempt may have stored what the last one found)."""
        attempts = 0

        def attempt() -> Awaitable[Any]:
            nonlocal attempts
            attempts += 1
            return self._on_pooled(lambda connection: self.committing(getattr(connection, method)(query, *args)))

        result = await self.unabandoned(self.retried(attempt))
        return result, attempts > 1

    async def package(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                      children_of: Optional[RevisionKey] = None) -> PackageState:
        return state_of(await self._query(STATE, *state_args(version, pkgarch, checksum, children_of),
                                          method="fetchrow"), checksum, children_of)

    async def packages(self, prefix: str, pkgarch: Optional[str], after: Optional[Tuple[str, str]],
                       limit: int) -> List[PackageSummary]:
        return await listing.packages(self._query, prefix, pkgarch, after, limit)

    # ------------------------------------------------------------------ the record (``record``)
    async def history(self, version: str, pkgarch: str) -> List[HistoryRow]:
        return record.history_rows(await self._query(record.HISTORY, version, pkgarch, method="fetch"))

    async def recent(self, since: Optional[int], after: Optional[Position], limit: int) -> List[RecentRow]:
        """Newest first by ``id``, the order rows were inserted in (``record``): a row of a
        transaction still running is not seen, one committed meanwhile may appear
        below a page already read.  ``after``: a position of this feed (exclusive)."""
        before = record.LAST_ID if after is None else feed.position_parts(after)[1]
        if since is None:
            found = await self._query(record.RECENT, before, max(0, limit), method="fetch")
        else:
            found = await self._query(record.RECENT_SINCE, before, max(0, limit), record.moment_of(since),
                                      method="fetch")
        return record.recent_rows(found)

    async def given_since(self, since: int) -> Optional[int]:
        return await self._query(record.GIVEN_SINCE, record.moment_of(since))

    async def forget_clients(self, before: int) -> int:
        """One statement, safe to repeat (a repeat after an outage counts only what the
        lost attempt left)."""
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        status = await self.write_statement(record.FORGET_CLIENTS, record.moment_of(before), method="execute")
        return int(status.split()[-1])

    async def has_row(self, version: str, pkgarch: str, value: str,
                      checksum: Optional[str] = None) -> bool:
        if checksum is None:
            return await self._query("SELECT EXISTS (SELECT 1 FROM prmain WHERE version = $1 "
                                     "AND pkgarch = $2 AND value = $3)", version, pkgarch, value)
        return await self._query("SELECT EXISTS (SELECT 1 FROM prmain WHERE version = $1 AND "
                                 "pkgarch = $2 AND checksum = $3 AND value = $4)", version, pkgarch, checksum, value)

    async def add_rows(self, rows: Sequence[Row]) -> int:
        """(Repeated after an outage, the count leaves out rows the lost attempt added.)
        The rows have no record (``given`` NULL, not its default): when they were given
        is unknown here, and the time of the copy is not it."""
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        columns = list(zip(*rows)) if rows else [(), (), (), ()]
        status = await self.write_statement(
            "INSERT INTO prmain (version, pkgarch, checksum, value, key, given) "
            "SELECT v, p, c, x, string_to_array(x, '.')::numeric[], NULL "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r (v, p, c, x) "
            "ON CONFLICT DO NOTHING", *[list(column) for column in columns], method="execute")
        added = int(status.split()[-1])
        self.note_stored(added)
        return added

    async def add_rows_given(self, rows: Sequence[Row], given: Sequence[Optional[Given]]) -> int:
        """``add_rows`` with each row's record, in one statement: a row held without a
        time gains the one given (``record.ADD_ROWS_GIVEN``)."""
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        columns = [list(column) for column in zip(*rows)] if rows else [[], [], [], []]
        status = await self.write_statement(record.ADD_ROWS_GIVEN, *columns, *record.given_columns(given),
                                            method="execute")
        added = int(status.split()[-1])
        self.note_stored(added)
        return added

    async def records_of(self, rows: Sequence[Row]) -> List[Optional[Given]]:
        columns = [list(column) for column in zip(*rows)] if rows else [[], [], [], []]
        found = await self._query(record.RECORDS_OF, *columns, method="fetch")
        return record.records_in_order(found, len(rows))

    async def column_info(self) -> List[Dict[str, Any]]:
        return [dict(column) for column in COLUMN_INFO]

    # ------------------------------------------------------------------ writing
    def write(self, version: str, pkgarch: str, checksum: Optional[str] = None,
              children_of: Optional[RevisionKey] = None,
              known: Optional[PackageState] = None, giver: Giver = NOBODY) -> Any:
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        if known is not None:
            return CheckedWrite(self, version, pkgarch, checksum, children_of, known, giver)
        return LockedWrite(self, version, pkgarch, checksum, children_of, giver)

    # ------------------------------------------------------------------ users
    async def get_user(self, username: str) -> Optional[UserRecord]:
        row = await self._query(users.GET, username, method="fetchrow")
        return None if row is None else record_from_row(row)

    async def list_users(self) -> List[UserRecord]:
        rows = await self._query(users.LIST, method="fetch")
        return [record_from_row(row) for row in rows]

    async def put_user(self, record: UserRecord) -> None:
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        await self.write_statement(users.PUT, *row_of(record), method="execute")

    async def remove_user(self, username: str) -> bool:
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        status = await self.write_statement(users.REMOVE, username, method="execute")
        return status.split()[-1] == "1"

    def answer_gate(self) -> Any:
        return None                     # a write scope ends with its commit

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        """Close the pool once the writes in flight are answered, or after
        ``CLOSE_WAIT_SECONDS``: their requests were given up on, and nothing was
        acknowledged for them."""
        if self._analysis is not None:
            self._analysis.cancel()
            await asyncio.gather(self._analysis, return_exceptions=True)
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=CLOSE_WAIT_SECONDS)
        try:
            await within(self.pool.close(), CLOSE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            self.pool.terminate()

    # ------------------------------------------------------------------ export
    async def export_batches(self, version: Optional[str], pkgarch: Optional[str],
                             checksum: Optional[str], history: bool) -> AsyncIterator[List[Row]]:
        if history:
            rows = select_batches(self._query, [("version", version), ("pkgarch", pkgarch), ("checksum", checksum)])
            async for batch in rows:
                yield batch
            return
        rows = select_batches(self._query, [("version", version), ("pkgarch", pkgarch)])
        async for batch in max_rows_batches(rows, checksum):
            yield batch

    # ------------------------------------------------------------------ change feed
    @in_task
    async def changes(self, since: Optional[Position], limit: int, count: bool = False,
                      given: bool = False) -> FeedPage:
        return await self.retried(lambda: self._on_pooled(
            lambda connection: feed.read_page(connection, since, limit, count, given)))

    async def rows_between(self, after: Optional[Position], until: Position) -> Optional[List[PositionedRow]]:
        start, end = feed.position_parts(after), feed.position_parts(until)
        return feed.positioned(await self._query(feed.ROWS_BETWEEN, start[0], start[1], end[0], end[1],
                                                 method="fetch"))

    async def wait_for_changes(self, position: Optional[Position], timeout: float) -> bool:
        txid, row = feed.position_parts(position)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self._query(feed.ANY_AFTER, txid, row):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(remaining, CHANGE_POLL_SECONDS))

    # ------------------------------------------------------------------ dumps
    def open_dump(self) -> DumpSource:
        from .dump import PostgreSQLDump

        return PostgreSQLDump(self.url)

