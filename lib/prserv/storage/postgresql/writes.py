"""Writing to PostgreSQL: the two write scopes of ``PostgreSQLEngine.write``.

``CheckedWrite`` trusts the state its caller just read: storing is one call of a
store function, one round trip in its own transaction.  ``prserv_store`` re-reads
what the decision was made from under the package's advisory lock and inserts only
if it is unchanged; ``prserv_store_next`` stores the successor of the package's
largest value as it is under the lock (a sequence's next value).  ``LockedWrite``
holds a transaction with the lock, reads the state under it, and commits what its
caller stores.  Each row is inserted with its record -- ``clock_timestamp()`` as the
lock's holder inserts it, and the scope's ``Giver`` -- in the row's own statement:
no round trip more, and no record without its row.

A write once sent is never abandoned (``PostgreSQLEngine.unabandoned``), and one
whose outcome is unknown is never blindly repeated: the store functions' checks
make a repeat safe (one that finds the package changed raises ``WriteInterrupted``
with it), and a ``LockedWrite`` that loses its connection raises
``WriteInterrupted`` for its caller to look and decide again.
"""

from __future__ import annotations

from typing import Any, Optional

from ...revision import RevisionKey, key_to_revision, revision_key
from ..engine import NOBODY, Giver, PackageState, WriteConflict, WriteInterrupted, WriteScope
from .connections import in_task
from .errors import OPENED_AT, database_error, is_outage
from .state import STATE, state_args, state_of

INSERT = ("INSERT INTO prmain (version, pkgarch, checksum, value, key, given, address, username) "
          "VALUES ($1, $2, $3, $4, string_to_array($4, '.')::numeric[], clock_timestamp(), $5, $6) "
          "ON CONFLICT DO NOTHING RETURNING id")
STORE = ("SELECT * FROM prserv_store($1, $2, $3, $4, $5, $6::numeric[], $7::numeric[], $8, $9, $10, $11, $12, "
         "$13::text, $14::text)")
STORE_NEXT = "SELECT * FROM prserv_store_next($1, $2, $3, $4, $5, $6::text, $7::text)"


def _revision(key: Optional[RevisionKey]) -> Optional[str]:
    return None if key is None else key_to_revision(key)


class CheckedWrite(WriteScope):
    """A write trusting the caller's ``known`` state: ``store`` is one call of
    ``prserv_store`` (one round trip, its own transaction), which inserts only if the
    package is still as ``known`` says, else raises ``WriteConflict`` with the package
    as it is now.  That check makes the call safe to repeat after an outage: if the
    lost attempt stored the row, the repeat finds the package changed and raises
    ``WriteInterrupted`` with it (the caller answers the value the checksum gained)."""

    def __init__(self, engine: Any, version: str, pkgarch: str, checksum: Optional[str],
                 children_of: Optional[RevisionKey], known: PackageState, giver: Giver = NOBODY) -> None:
        self.engine = engine
        self.args = state_args(version, pkgarch, checksum, children_of)
        self.checksum = checksum
        self.children_of = children_of
        self.state = known
        self.giver = giver

    async def __aenter__(self) -> "CheckedWrite":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    async def store(self, checksum: str, key: RevisionKey) -> bool:
        state = self.state
        version, pkgarch, _, base, upper, length = self.args
        bounds = state.bounds if state.checksum == checksum else None
        child = state.children.get(self.children_of) if self.children_of is not None else None
        expected_child = None if child is None else key_to_revision(tuple(self.children_of) + (child,))
        row, repeated = await self.engine.write_repeated(
            STORE, version, pkgarch, checksum, key_to_revision(key), True, base, upper, length,
            _revision(state.max_key), _revision(bounds[0] if bounds else None),
            _revision(bounds[1] if bounds else None), expected_child, self.giver.address, self.giver.user)
        added, top, low, high, found_child = row
        if added:
            self.engine.note_stored(1)
            return True
        fresh = state_of((top, low, high, found_child), checksum, self.children_of)
        if _same(fresh, state, self.children_of):
            return False                            # unchanged: the row was there already
        raise WriteInterrupted(fresh) if repeated else WriteConflict(fresh)

    async def store_next(self, checksum: str) -> RevisionKey:
        """One call of ``prserv_store_next``: the successor of the maximum as it is
        under the lock; ``WriteConflict`` only if the checksum's own values changed."""
        bounds = self.state.bounds if self.state.checksum == checksum else None
        version, pkgarch = self.args[0], self.args[1]
        row, repeated = await self.engine.write_repeated(
            STORE_NEXT, version, pkgarch, checksum, _revision(bounds[0] if bounds else None),
            _revision(bounds[1] if bounds else None), self.giver.address, self.giver.user)
        stored, top, low, high = row
        if stored is None:
            fresh = state_of((top, low, high, None), checksum, None)
            raise WriteInterrupted(fresh) if repeated else WriteConflict(fresh)
        self.engine.note_stored(1)
        return revision_key(stored)


def _same(a: PackageState, b: PackageState, children_of: Optional[RevisionKey]) -> bool:
    return (a.max_key, a.bounds, a.children.get(children_of) if children_of is not None else None) == \
        (b.max_key, b.bounds, b.children.get(children_of) if children_of is not None else None)


class LockedWrite(WriteScope):
    """A transaction on one connection holding the package's advisory lock.  Entering
    waits out an outage (nothing is written yet); a connection lost after that raises
    ``WriteInterrupted``, and the commit, once sent, is never abandoned."""

    def __init__(self, engine: Any, version: str, pkgarch: str, checksum: Optional[str],
                 children_of: Optional[RevisionKey], giver: Giver = NOBODY) -> None:
        self.engine = engine
        self.args = state_args(version, pkgarch, checksum, children_of)
        self.checksum = checksum
        self.children_of = children_of
        self.giver = giver
        self._connection: Any = None
        self._transaction: Any = None
        self._opened_at: Optional[float] = None
        """When the scope's connection was opened (an outage's bookkeeping)."""

    @in_task
    async def __aenter__(self) -> "LockedWrite":
        await self.engine.retried(self._begin)
        return self

    async def _begin(self) -> None:
        self._opened_at = None
        try:
            self._connection = await self.engine.pool.acquire()
            self._opened_at = self._connection.opened_at          # (a closed proxy no longer tells)
            self._transaction = self._connection.transaction()
            await self._transaction.start()
            await self._connection.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
                                           self.args[0], self.args[1])
            self.state = state_of(await self._connection.fetchrow(STATE, *self.args), self.checksum,
                                self.children_of)
        except BaseException as exc:
            if self._opened_at is not None and isinstance(exc, self.engine.driver_errors):
                setattr(exc, OPENED_AT, self._opened_at)
            await self._end(False)
            raise
        if self.engine.outage.started is not None:
            self.engine.outage.reached(self._opened_at)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.engine.unabandoned(self._end(True))
        else:
            await self._end(False)

    @in_task
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
            setattr(exc, OPENED_AT, self._opened_at)
            await self.engine.forget_connections(exc, False)     # counted when it waits
            return WriteInterrupted()
        return database_error(exc, self.engine.url)

    @in_task
    async def store(self, checksum: str, key: RevisionKey) -> bool:
        try:
            added = await self._connection.fetchval(INSERT, self.args[0], self.args[1], checksum,
                                                    key_to_revision(key), self.giver.address, self.giver.user)
        except self.engine.driver_errors as exc:
            raise await self._lost(exc) from None
        if added is not None:
            self.engine.note_stored(1)
        return added is not None
