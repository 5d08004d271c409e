"""The PostgreSQL engine: PR values in one database shared by any number of servers.

Every request asks the database (as bitbake's hashserv does): there is no cache to
keep coherent, so an answer reflects every value any server acknowledged before
the request arrived.  A package's write scope is a transaction holding a
transaction-scoped advisory lock on the package (``pg_advisory_xact_lock``): the
state is re-read under it, the decision made and the row inserted, and the
commit releases it, so no value ever goes to two checksums whatever the number of
servers.  ``lock_timeout`` bounds the wait for a lock held elsewhere.

Connections come from one bounded asyncpg pool per server (``pool_size``); no
other connection is opened.  A read-write engine refreshes the table's statistics
itself as rows arrive (``_note_stored``): autovacuum does too, but only after its
naptime, and a table that grows from empty meanwhile is planned from an empty
table's statistics: PostgreSQL then finds a checksum by reading its whole package.
Its connections plan every statement once (``plan_cache_mode =
force_generic_plan``): the lookups are index lookups whatever the package, and with
statistics PostgreSQL would otherwise judge a package it has no figures for cheaper
to plan afresh on every request than to run the shared plan.  Driver and server errors leave as ``DatabaseError``
with the password taken out.

An outage (``outage.is_outage``: the database unreachable, restarting, or no longer
the primary) does not fail a request at once: it waits, retrying on new
connections, for up to ``outage_wait`` seconds (``db_outage_wait``), and only then
is answered with ``DatabaseUnavailable``.  A failover to a standby thus costs the
builds time, not failed tasks.  Writes are made safe to repeat rather than
abandoned: a write already sent is never cancelled (``_unabandoned``: no cancel
request, no connection closed under it, whatever deadline passes -- a cancelled
wait for a synchronous standby leaves the commit on the old primary only, where a
failover loses it after the value was answered), and a write whose outcome is
unknown is decided again from what the database then holds: ``prserv_store`` and
``prserv_store_next`` re-check the package under its lock (the replay finds the
stored row, or decides afresh), and a locked write scope that loses its connection
raises ``WriteInterrupted`` for its caller to decide again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from ...asyncrpc.deadline import within
from ...asyncrpc.stats import Durations
from ...errors import DatabaseError, DatabaseUnavailable, InvalidRequestError, ReadOnlyError
from ...log import logger
from ...revision import RevisionKey, key_to_revision, revision_key
from ...tokens import UserRecord, record_from_row, row_of
from ..engine import (DumpSource, Engine, FeedPage, PackageState, Position, PositionedRow, Row,
                      WriteConflict, WriteInterrupted, WriteScope, package_max_rows)
from . import schema
from .hosts import HostConnector
from .availability import Outage, cause, is_outage
from .url import hide_in, masked

DEFAULT_POOL_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_OUTAGE_WAIT = 20.0
"""Below bitbake's 30 s client timeout: a request that waited this long is still
answered (with an error) before the build host gives up on the connection."""
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
EXPORT_BATCH_ROWS = 2000
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

_STATE = """SELECT
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 ORDER BY key DESC LIMIT 1),
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 AND checksum = $3 ORDER BY key LIMIT 1),
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 AND checksum = $3 ORDER BY key DESC LIMIT 1),
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 AND key > $4::numeric[]
        AND key < $5::numeric[] AND array_length(key, 1) = $6 ORDER BY key DESC LIMIT 1)"""
"""A package's largest value, a checksum's smallest and largest, and the largest
child of a base (``$4 < key < $5``, one number longer): four index lookups."""

_INSERT = ("INSERT INTO prmain (version, pkgarch, checksum, value, key) "
           "VALUES ($1, $2, $3, $4, string_to_array($4, '.')::numeric[]) ON CONFLICT DO NOTHING RETURNING id")

_ESTIMATED_ROWS = "SELECT reltuples FROM pg_class WHERE oid = 'prmain'::regclass"
"""The row count as the last analysis (or vacuum) estimated it; -1 if never."""

_USER_COLUMNS = "username, permissions, token_hash, salt, created, expires"     # tokens.row_of's order


_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"
"""Transactions below this are finished: their rows can be fed without a gap.

The feed's queries select ``txid::text`` and order by ``prmain.txid``: a bare
``ORDER BY txid`` names the output column, the text, and "1000" sorts before "999"."""


T = TypeVar("T")


def _error(exc: BaseException, url: str) -> DatabaseError:
    return DatabaseError(hide_in("%s: %s" % (type(exc).__name__, exc), url))


def _driver_errors(asyncpg: Any) -> Tuple[type, ...]:
    """What asyncpg and the socket layer raise: the errors a database operation turns
    into ``DatabaseError`` (at once, or after waiting out an outage)."""
    return (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError)


def _in_task(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Run the coroutine method in a task of its own.  A request may start eagerly,
    outside any task (``prserv.asyncrpc.eager``), and asyncpg uses deadlines that need
    one (``asyncio.timeout``); cancelling the caller cancels the task."""
    @functools.wraps(method)
    async def in_task(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().create_task(method(*args, **kwargs))
    return in_task


_CONNECTION_CLASS: Any = None


def _connection_class(asyncpg: Any) -> Any:
    """asyncpg's connection, without the reset query a pool sends on every release (a
    round trip per request): this engine leaves no session state behind -- its locks
    are transaction-scoped, it sets nothing and listens to no channel.  Its one log
    listener (``_listen_for_warnings``) belongs to the connection for its whole life,
    so the pool's warning about listeners left behind is not for it."""
    global _CONNECTION_CLASS
    if _CONNECTION_CLASS is None:
        class Connection(asyncpg.Connection):  # type: ignore[misc, name-defined]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.opened_at = time.monotonic()
                """When it was opened: only a connection opened since an outage began
                can tell that it ended (``Outage.reached``)."""
                self.warning_listener: Any = None

            async def reset(self, *, timeout: Optional[float] = None) -> None:
                await super().reset(timeout=timeout)        # which removes every log listener
                if self.warning_listener is not None:
                    self.add_log_listener(self.warning_listener)

            def get_reset_query(self) -> str:
                return ""

            def _check_listeners(self, listeners: Any, listener_type: str) -> None:
                if listener_type != "log":
                    super()._check_listeners(listeners, listener_type)
        _CONNECTION_CLASS = Connection
    return _CONNECTION_CLASS


async def _listen_for_warnings(shown_url: str, connection: Any) -> None:
    """A pool's ``init``: log PostgreSQL's warning that a commit was acknowledged
    without the synchronous standby's confirmation (a cancelled or interrupted wait):
    that value is on the primary alone, and a failover now would lose it."""
    def warned(_connection: Any, message: Any) -> None:
        detail = getattr(message, "detail", None) or ""
        if "committed locally" in detail:
            logger.error("PostgreSQL %s: %s. %s A value answered now may be lost if the primary fails before "
                         "its standby has it.", shown_url, getattr(message, "message", message), detail)

    connection.warning_listener = warned
    connection.add_log_listener(warned)


async def _first_connection(pool: Any, url: str, connect_timeout: float) -> Any:
    """A connection from ``pool``, retrying for ``connect_timeout`` seconds while the
    database is not up (a server and its database started together)."""
    asyncpg = _driver()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    delay = 0.1
    while True:
        try:
            return await pool.acquire()
        except _driver_errors(asyncpg) as exc:
            if loop.time() + delay > deadline or isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
                raise DatabaseError("cannot connect to %s within %g s: %s" % (
                    masked(url), connect_timeout, hide_in(cause(exc), url))) from None
            logger.info("waiting for %s: %s", masked(url), hide_in(cause(exc), url))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _driver() -> Any:
    try:
        import asyncpg  # type: ignore[import-not-found]
    except ImportError:
        raise DatabaseError("a PostgreSQL URL needs the driver: pip install 'prserv[postgresql]'") from None
    return asyncpg


def _position(position: Optional[Position]) -> Tuple[str, int]:
    """(transaction id as text, row id) of a feed position ``"<txid>:<id>"``."""
    if position is None:
        return "0", 0
    if isinstance(position, str):
        txid, _, row = position.partition(":")
        if txid.isdigit() and row.isdigit() and txid.isascii() and row.isascii():
            return txid, int(row)
    raise InvalidRequestError("not a position of this database: %r" % (position,))


class PostgreSQLEngine(Engine):
    """The PR table of a PostgreSQL database (``open`` creates one)."""

    table_name = "PRMAIN"

    def __init__(self, url: str, pool: Any, read_only: bool, outage_wait: float = DEFAULT_OUTAGE_WAIT) -> None:
        self.url = url
        self.shown_url = masked(url)
        self.pool = pool
        self.read_only = read_only
        self.driver = _driver()
        self.driver_errors = _driver_errors(self.driver)
        self.outage_wait = outage_wait
        """Seconds a request waits out an outage (``db_outage_wait``)."""
        self.outage = Outage(self.shown_url, outage_wait, logger, lambda text: hide_in(text, url))
        self.commit_durations = Durations()
        """A write's round trip, which ends with its commit."""
        self._writes: Set["asyncio.Task[Any]"] = set()
        """Writes sent and not yet answered (``_unabandoned``)."""
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
        asyncpg = _driver()
        settings = {"lock_timeout": str(int(lock_timeout * 1000)), "application_name": "prserv",
                    "plan_cache_mode": "force_generic_plan"}
        if read_only:
            settings["default_transaction_read_only"] = "on"
        # No connection is kept open while idle (min_size 0): asyncpg would otherwise
        # reopen one in the background during an outage, logging a traceback per try.
        pool = await asyncpg.create_pool(url, min_size=0, max_size=max(1, pool_size), server_settings=settings,
                                         connection_class=_connection_class(asyncpg),
                                         connect=HostConnector(url, asyncpg),
                                         init=functools.partial(_listen_for_warnings, masked(url)))
        engine = cls(url, pool, read_only, outage_wait)
        try:
            connection = await _first_connection(pool, url, connect_timeout)
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
                raise _error(exc, url) from None
            raise
        return engine

    # ------------------------------------------------------------------ statistics
    def _note_stored(self, rows: int) -> None:
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
    async def _retried(self, attempt: Callable[[], Awaitable[T]]) -> T:
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
            raise _error(exc, self.url) from None
        await self._forget_connections(exc, waiting_since is None)
        now = time.monotonic()
        if waiting_since is None:
            waiting_since = now
        remaining = waiting_since + self.outage_wait - now
        if remaining <= 0:
            self.outage.gave_up_on()
            raise DatabaseUnavailable("the database %s is unreachable or not the primary, waited %g s "
                                      "(db_outage_wait): %s" % (self.shown_url, self.outage_wait,
                                                                hide_in(cause(exc), self.url))) from None
        await asyncio.sleep(min(delay, remaining))
        return waiting_since

    async def _forget_connections(self, exc: BaseException, first_for_request: bool) -> None:
        """An outage: every pooled connection is replaced as it is next used (they
        may all lead to a server that is gone, or to one no longer the primary)."""
        self.outage.failed(exc, first_for_request)
        await self.pool.expire_connections()

    async def _on_pooled(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        async with self.pool.acquire() as connection:
            result = await operation(connection)
            if self.outage.started is not None:
                self.outage.reached(connection.opened_at)
        return result

    async def _unabandoned(self, work: Awaitable[T]) -> T:
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
            logger.warning("a commit on %s has waited %g s and waits on: PostgreSQL holds every commit while "
                           "a synchronous standby it needs is missing (synchronous_standby_names)",
                           self.shown_url, self.slow_commit_seconds)

    def _commit_done_late(self, seconds: float) -> None:
        self._slow_commits -= 1
        if self._slow_commits == 0:
            logger.info("commits on %s complete again (the last slow one took %.1f s)", self.shown_url, seconds)

    # ------------------------------------------------------------------ reading
    @_in_task
    async def _query(self, query: str, *args: Any, method: str = "fetchval") -> Any:
        """``query`` on a pooled connection (asyncpg's ``method``), waiting out an
        outage; errors as ``DatabaseError``."""
        return await self._retried(lambda: self._on_pooled(lambda connection: getattr(connection, method)(
            query, *args)))

    async def _write(self, query: str, *args: Any, method: str = "fetchrow") -> Any:
        """A one-statement write (its own transaction) that is safe to repeat: sent
        again on a new connection while the database is out, never abandoned."""
        return (await self._write_repeated(query, *args, method=method))[0]

    async def _write_repeated(self, query: str, *args: Any, method: str = "fetchrow") -> Tuple[Any, bool]:
        """``_write``'s result, and whether the write was sent more than once (then
        an earlier attempt may have stored what the last one found)."""
        attempts = 0

        def attempt() -> Awaitable[Any]:
            nonlocal attempts
            attempts += 1
            return self._on_pooled(lambda connection: self.committing(getattr(connection, method)(query, *args)))

        result = await self._unabandoned(self._retried(attempt))
        return result, attempts > 1

    async def package(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                      children_of: Optional[RevisionKey] = None) -> PackageState:
        return _state(await self._query(_STATE, *_state_args(version, pkgarch, checksum, children_of),
                                        method="fetchrow"), checksum, children_of)

    async def has_row(self, version: str, pkgarch: str, value: str,
                      checksum: Optional[str] = None) -> bool:
        if checksum is None:
            return await self._query("SELECT EXISTS (SELECT 1 FROM prmain WHERE version = $1 "
                                     "AND pkgarch = $2 AND value = $3)", version, pkgarch, value)
        return await self._query("SELECT EXISTS (SELECT 1 FROM prmain WHERE version = $1 AND "
                                 "pkgarch = $2 AND checksum = $3 AND value = $4)", version, pkgarch, checksum, value)

    async def add_rows(self, rows: Sequence[Row]) -> int:
        """(Repeated after an outage, the count leaves out rows the lost attempt added.)"""
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        columns = list(zip(*rows)) if rows else [(), (), (), ()]
        status = await self._write(
            "INSERT INTO prmain (version, pkgarch, checksum, value, key) "
            "SELECT v, p, c, x, string_to_array(x, '.')::numeric[] "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r (v, p, c, x) "
            "ON CONFLICT DO NOTHING", *[list(column) for column in columns], method="execute")
        added = int(status.split()[-1])
        self._note_stored(added)
        return added

    async def column_info(self) -> List[Dict[str, Any]]:
        return [dict(column) for column in COLUMN_INFO]

    # ------------------------------------------------------------------ writing
    def write(self, version: str, pkgarch: str, checksum: Optional[str] = None,
              children_of: Optional[RevisionKey] = None,
              known: Optional[PackageState] = None) -> Any:
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        if known is not None:
            return _CheckedWrite(self, version, pkgarch, checksum, children_of, known)
        return _WriteScope(self, version, pkgarch, checksum, children_of)

    # ------------------------------------------------------------------ users
    async def get_user(self, username: str) -> Optional[UserRecord]:
        row = await self._query("SELECT %s FROM prserv_users WHERE username = $1" % _USER_COLUMNS, username,
                                method="fetchrow")
        return None if row is None else record_from_row(row)

    async def list_users(self) -> List[UserRecord]:
        rows = await self._query("SELECT %s FROM prserv_users ORDER BY username" % _USER_COLUMNS, method="fetch")
        return [record_from_row(row) for row in rows]

    async def put_user(self, record: UserRecord) -> None:
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        await self._write("INSERT INTO prserv_users (%s) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) "
                          "DO UPDATE SET permissions = EXCLUDED.permissions, token_hash = EXCLUDED.token_hash, "
                          "salt = EXCLUDED.salt, created = EXCLUDED.created, expires = EXCLUDED.expires"
                          % _USER_COLUMNS, *row_of(record), method="execute")

    async def remove_user(self, username: str) -> bool:
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        status = await self._write("DELETE FROM prserv_users WHERE username = $1", username, method="execute")
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
            rows = self._select([("version", version), ("pkgarch", pkgarch), ("checksum", checksum)])
            async for batch in rows:
                yield batch
            return
        rows = self._select([("version", version), ("pkgarch", pkgarch)])
        async for batch in _max_rows_batches(rows, checksum):
            yield batch

    async def _select(self, filters: List[Tuple[str, Optional[str]]]) -> AsyncIterator[List[Row]]:
        """Rows in (version, pkgarch, checksum, value) byte order, by keyset pages."""
        clauses, params = [], []               # column names are constants
        for column, value in filters:
            if value:
                params.append(value)
                clauses.append("%s = $%d" % (column, len(params)))
        where = " AND ".join(clauses) or "TRUE"
        last: Optional[Row] = None
        while True:
            args = list(params)
            after = ""
            if last is not None:
                args += list(last)
                after = " AND (version, pkgarch, checksum, value) > ($%d, $%d, $%d, $%d)" % tuple(
                    range(len(params) + 1, len(params) + 5))
            args.append(EXPORT_BATCH_ROWS)
            found = await self._query(
                "SELECT version, pkgarch, checksum, value FROM prmain WHERE %s%s "
                "ORDER BY version, pkgarch, checksum, value LIMIT $%d" % (where, after, len(args)), *args,
                method="fetch")
            batch = [tuple(row) for row in found]
            if batch:
                yield batch                                             # type: ignore[misc]
            if len(batch) < EXPORT_BATCH_ROWS:
                return
            last = batch[-1]                                            # type: ignore[assignment]

    # ------------------------------------------------------------------ change feed
    async def _identity(self, connection: Any) -> Optional[str]:
        return await connection.fetchval("SELECT value FROM prserv_meta WHERE name = 'identity'")

    @_in_task
    async def changes(self, since: Optional[Position], limit: int, count: bool = False) -> FeedPage:
        txid, row = _position(since)
        return await self._retried(lambda: self._on_pooled(
            lambda connection: self._changes(connection, since, txid, row, limit, count)))

    async def _changes(self, connection: Any, since: Optional[Position], txid: str, row: int, limit: int,
                       count: bool) -> FeedPage:
        identity = await self._identity(connection)
        found = await connection.fetch(
            "SELECT txid::text, id, version, pkgarch, checksum, value FROM prmain "
            "WHERE (txid, id) > ($1::text::xid8, $2) AND txid < %s ORDER BY prmain.txid, prmain.id LIMIT $3"
            % _HORIZON, txid, row, max(0, limit))
        rows = [("%s:%d" % (r[0], r[1]), r[2], r[3], r[4], r[5]) for r in found]
        reached, at = True, None
        if since is not None:
            at_row = await connection.fetchrow(
                "SELECT version, pkgarch, checksum, value FROM prmain WHERE id = $2 "
                "AND txid = $1::text::xid8", txid, row)
            at = None if at_row is None else tuple(at_row)
            reached = at is not None or bool(rows) or await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM prmain WHERE (txid, id) > ($1::text::xid8, $2))", txid, row)
        pending = None
        if count:
            last_txid, last_row = _position(rows[-1][0]) if rows else (txid, row)
            pending = await connection.fetchval(
                "SELECT count(*) FROM prmain WHERE (txid, id) > ($1::text::xid8, $2) AND txid < %s"
                % _HORIZON, last_txid, last_row)
        return FeedPage(identity, True, True, reached, at, rows, pending)  # type: ignore[arg-type]

    async def rows_between(self, after: Optional[Position], until: Position) -> Optional[List[PositionedRow]]:
        start, end = _position(after), _position(until)
        found = await self._query(
            "SELECT txid::text, id, version, pkgarch, checksum, value FROM prmain "
            "WHERE (txid, id) > ($1::text::xid8, $2) AND (txid, id) <= ($3::text::xid8, $4) "
            "AND txid < %s ORDER BY prmain.txid, prmain.id" % _HORIZON, start[0], start[1], end[0], end[1], method="fetch")
        return [("%s:%d" % (r[0], r[1]), r[2], r[3], r[4], r[5]) for r in found]

    async def wait_for_changes(self, position: Optional[Position], timeout: float) -> bool:
        txid, row = _position(position)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self._query("SELECT EXISTS (SELECT 1 FROM prmain WHERE (txid, id) > "
                                 "($1::text::xid8, $2) AND txid < %s)" % _HORIZON, txid, row):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(remaining, CHANGE_POLL_SECONDS))

    # ------------------------------------------------------------------ dumps
    def open_dump(self) -> DumpSource:
        from .dump import PostgreSQLDump

        return PostgreSQLDump(self.url)


def _state_args(version: str, pkgarch: str, checksum: Optional[str],
                children_of: Optional[RevisionKey]) -> Tuple[Any, ...]:
    if children_of is None:
        return version, pkgarch, checksum, None, None, None
    upper = list(children_of[:-1]) + [children_of[-1] + 1]
    return version, pkgarch, checksum, list(children_of), upper, len(children_of) + 1


def _state(found: Any, checksum: Optional[str], children_of: Optional[RevisionKey]) -> PackageState:
    top, low, high, child = found
    state = PackageState(top is not None, None if top is None else revision_key(top), checksum,
                         None if low is None else (revision_key(low), revision_key(high)))
    if child is not None and children_of is not None:
        state.children = {children_of: revision_key(child)[-1]}
    return state


async def _max_rows_batches(batches: AsyncIterator[List[Row]], checksum: Optional[str]) -> AsyncIterator[List[Row]]:
    """Per package, the rows holding its largest value (``checksum``'s only, if given),
    across batches: a package may span several."""
    pending: List[Row] = []
    async for batch in batches:
        pending.extend(batch)
        last_package = pending[-1][:2]
        complete = [row for row in pending if row[:2] != last_package]
        pending = [row for row in pending if row[:2] == last_package]
        chosen = [row for row in package_max_rows(complete) if not checksum or row[2] == checksum]
        if chosen:
            yield chosen
    chosen = [row for row in package_max_rows(pending) if not checksum or row[2] == checksum]
    if chosen:
        yield chosen


_STORE = "SELECT * FROM prserv_store($1, $2, $3, $4, $5, $6::numeric[], $7::numeric[], $8, $9, $10, $11, $12)"
_STORE_NEXT = "SELECT * FROM prserv_store_next($1, $2, $3, $4, $5)"


def _revision(key: Optional[RevisionKey]) -> Optional[str]:
    return None if key is None else key_to_revision(key)


class _CheckedWrite(WriteScope):
    """A write trusting the caller's ``known`` state: ``store`` is one call of
    ``prserv_store`` (one round trip, its own transaction), which inserts only if the
    package is still as ``known`` says, else raises ``WriteConflict`` with the package
    as it is now.  That check makes the call safe to repeat after an outage: if the
    lost attempt stored the row, the repeat finds the package changed and raises
    ``WriteInterrupted`` with it (the caller answers the value the checksum gained)."""

    def __init__(self, engine: PostgreSQLEngine, version: str, pkgarch: str, checksum: Optional[str],
                 children_of: Optional[RevisionKey], known: PackageState) -> None:
        self.engine = engine
        self.args = _state_args(version, pkgarch, checksum, children_of)
        self.checksum = checksum
        self.children_of = children_of
        self.state = known

    async def __aenter__(self) -> "_CheckedWrite":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    async def store(self, checksum: str, key: RevisionKey) -> bool:
        state = self.state
        version, pkgarch, _, base, upper, length = self.args
        bounds = state.bounds if state.checksum == checksum else None
        child = state.children.get(self.children_of) if self.children_of is not None else None
        expected_child = None if child is None else key_to_revision(tuple(self.children_of) + (child,))
        row, repeated = await self.engine._write_repeated(
            _STORE, version, pkgarch, checksum, key_to_revision(key), True, base, upper, length,
            _revision(state.max_key), _revision(bounds[0] if bounds else None),
            _revision(bounds[1] if bounds else None), expected_child)
        added, top, low, high, found_child = row
        if added:
            self.engine._note_stored(1)
            return True
        fresh = _state((top, low, high, found_child), checksum, self.children_of)
        if _same(fresh, state, self.children_of):
            return False                            # unchanged: the row was there already
        raise WriteInterrupted(fresh) if repeated else WriteConflict(fresh)

    async def store_next(self, checksum: str) -> RevisionKey:
        """One call of ``prserv_store_next``: the successor of the maximum as it is
        under the lock; ``WriteConflict`` only if the checksum's own values changed."""
        bounds = self.state.bounds if self.state.checksum == checksum else None
        version, pkgarch = self.args[0], self.args[1]
        row, repeated = await self.engine._write_repeated(
            _STORE_NEXT, version, pkgarch, checksum, _revision(bounds[0] if bounds else None),
            _revision(bounds[1] if bounds else None))
        stored, top, low, high = row
        if stored is None:
            fresh = _state((top, low, high, None), checksum, None)
            raise WriteInterrupted(fresh) if repeated else WriteConflict(fresh)
        self.engine._note_stored(1)
        return revision_key(stored)


def _same(a: PackageState, b: PackageState, children_of: Optional[RevisionKey]) -> bool:
    return (a.max_key, a.bounds, a.children.get(children_of) if children_of is not None else None) == \
        (b.max_key, b.bounds, b.children.get(children_of) if children_of is not None else None)


class _WriteScope(WriteScope):
    """A transaction on one connection holding the package's advisory lock.  Entering
    waits out an outage (nothing is written yet); a connection lost after that raises
    ``WriteInterrupted``, and the commit, once sent, is never abandoned."""

    def __init__(self, engine: PostgreSQLEngine, version: str, pkgarch: str, checksum: Optional[str],
                 children_of: Optional[RevisionKey]) -> None:
        self.engine = engine
        self.args = _state_args(version, pkgarch, checksum, children_of)
        self.checksum = checksum
        self.children_of = children_of
        self._connection: Any = None
        self._transaction: Any = None

    @_in_task
    async def __aenter__(self) -> "_WriteScope":
        await self.engine._retried(self._begin)
        return self

    async def _begin(self) -> None:
        try:
            self._connection = await self.engine.pool.acquire()
            self._transaction = self._connection.transaction()
            await self._transaction.start()
            await self._connection.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
                                           self.args[0], self.args[1])
            self.state = _state(await self._connection.fetchrow(_STATE, *self.args), self.checksum,
                                self.children_of)
        except BaseException:
            await self._end(False)
            raise
        if self.engine.outage.started is not None:
            self.engine.outage.reached(self._connection.opened_at)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.engine._unabandoned(self._end(True))
        else:
            await self._end(False)

    @_in_task
    async def _end(self, commit: bool) -> None:
        engine = self.engine
        connection, transaction = self._connection, self._transaction
        self._connection = self._transaction = None
        if connection is None:
            return
        try:
            if transaction is not None:
                if commit:
                    await engine.committing(transaction.commit())
                else:
                    await transaction.rollback()
        except engine.driver_errors as exc:
            if commit:
                raise await self._lost(exc) from None
        finally:
            await engine.pool.release(connection)

    async def _lost(self, exc: BaseException) -> Exception:
        """What a failed statement of the scope becomes: ``WriteInterrupted`` for an
        outage (after which the pool's connections are replaced), else ``DatabaseError``."""
        if is_outage(exc, self.engine.driver):
            await self.engine._forget_connections(exc, False)     # counted when it waits
            return WriteInterrupted()
        return _error(exc, self.engine.url)

    @_in_task
    async def store(self, checksum: str, key: RevisionKey) -> bool:
        try:
            added = await self._connection.fetchval(_INSERT, self.args[0], self.args[1], checksum,
                                                    key_to_revision(key))
        except self.engine.driver_errors as exc:
            raise await self._lost(exc) from None
        if added is not None:
            self.engine._note_stored(1)
        return added is not None
