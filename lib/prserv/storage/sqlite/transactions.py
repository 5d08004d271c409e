"""The write transactions of one SQLite connection (shared by a turn's writes: group
commit).

Every write runs in a ``BEGIN IMMEDIATE`` transaction: it holds SQLite's write lock,
and the package caches re-read what other processes committed under it, so
whatever is decided inside sees every committed row and nothing else can write
until it ends -- read-decide-write is atomic across processes.

With group commit (a server), the first write of an event-loop turn opens a shared
transaction that every later write of the turn joins; it is committed per the sync
mode (``prserv.storage.syncmode``): on the next turn (``immediate``), every N
seconds, or at shutdown.  ``PendingCommit`` is what the answers of that turn wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import Callable, Iterator, List, Optional

from ...asyncrpc.stats import Durations
from ...errors import DatabaseError, ReadOnlyError
from ...log import logger
from ..syncmode import IMMEDIATE, PERIODIC, SyncMode
from .cache import PackageCache


class Transactions:
    """The write transactions of one connection, and the caches they keep in step."""

    def __init__(self, conn: sqlite3.Connection, read_only: bool) -> None:
        self.conn = conn
        self.read_only = read_only
        self.depth = 0
        self.caches: List[PackageCache] = []
        self.group: Optional[GroupCommit] = None
        """Set by a server: writes join its shared transaction."""
        self.before_commit: List[Callable[[], None]] = []
        """Called inside the transaction just before its COMMIT (the record of when
        values were given writes its queue); an exception rolls it back."""
        self.after_commit: List[Callable[[], None]] = []
        """Called after each successful COMMIT (the change feed wakes its waiters)."""
        self.after_rollback: List[Callable[[], None]] = []
        """Called after each ROLLBACK (the record forgets its queue)."""
        self.commit_durations = Durations()
        """How long each COMMIT took (fsync included)."""

    def enter(self) -> None:
        """Start a write scope: a transaction of its own, or a part of the one already
        open (it nests, and joins the group's shared transaction)."""
        if not self.depth and self.group is not None:
            self.group.open()               # the group's transaction: ours nests in it
        if self.depth:
            self.depth += 1
        else:
            self.begin()

    def exit(self, succeeded: bool) -> None:
        """End the scope ``enter`` started: a nested one leaves the outer transaction
        to decide; an own one commits, or rolls back if the scope failed."""
        if self.depth > 1:
            self.depth -= 1
        elif succeeded:
            self.commit()
        else:
            self.rollback()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """``enter`` / ``exit`` as a ``with`` block."""
        self.enter()
        try:
            yield
        except BaseException:
            self.exit(False)
            raise
        self.exit(True)

    def begin(self) -> None:
        """Open a write transaction (waits while another writer holds the lock) and
        bring the caches up to date under it."""
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        if self.depth:
            raise DatabaseError("a write transaction is already open")
        self.conn.execute("BEGIN IMMEDIATE")
        self.depth = 1
        try:
            for cache in self.caches:
                cache.begin()
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        """Commit the transaction opened by ``begin``; on failure roll back and raise."""
        started = time.perf_counter()
        try:
            for hook in self.before_commit:
                hook()
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self.commit_durations.observe(time.perf_counter() - started)
        self.depth = 0
        for cache in self.caches:
            cache.committed()
        for hook in self.after_commit:
            hook()

    def rollback(self) -> None:
        """Undo the open transaction and make the caches forget what it wrote."""
        self.depth = 0
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        for cache in self.caches:
            cache.rolled_back()
        for hook in self.after_rollback:
            hook()


class PendingCommit:
    """The commit that the answers given so far wait for.

    Quacks like the part of ``asyncio.Future`` an answer gate needs (``done``,
    ``exception``, ``add_done_callback``), but runs its callbacks synchronously
    right after the COMMIT, not on a later loop turn: held answers leave before
    the next batch of requests is handled, which takes a batch's processing time
    off the latency of every write.
    """

    __slots__ = ("_callbacks", "_done", "_exception")

    def __init__(self) -> None:
        self._callbacks: List[Callable[["PendingCommit"], None]] = []
        self._done = False
        self._exception: Optional[BaseException] = None

    def done(self) -> bool:
        return self._done

    def exception(self) -> Optional[BaseException]:
        return self._exception

    def add_done_callback(self, callback: Callable[["PendingCommit"], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def finish(self, exception: Optional[BaseException] = None) -> None:
        """Mark it committed (or failed with ``exception``) and run the callbacks."""
        self._done, self._exception = True, exception
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # one client's failure must not stop the others' answers
                logger.exception("error releasing answers after a commit")


class GroupCommit:
    """Opens the connection's shared write transaction on demand and commits it per
    the sync mode.  Installed as ``Transactions.group``."""

    def __init__(self, transactions: Transactions, mode: SyncMode,
                 after_commit: Optional[Callable[[], None]] = None) -> None:
        """``after_commit``: upkeep to run after each successful commit, once the
        answers that waited for it have been released (the log's checkpoint)."""
        self.transactions = transactions
        self.mode = mode
        self.after_commit = after_commit
        self._pending: Optional[PendingCommit] = None
        self._timer: Optional[asyncio.Handle] = None
        self.commits = 0

    def open(self) -> None:
        """Begin the shared transaction and schedule its commit."""
        loop = asyncio.get_running_loop()
        self.transactions.begin()
        self._pending = PendingCommit()
        if self.mode.kind == IMMEDIATE:
            self._timer = loop.call_soon(self.commit)
        elif self.mode.kind == PERIODIC:
            self._timer = loop.call_later(self.mode.interval, self.commit)

    def pending_commit(self) -> Optional[PendingCommit]:
        """Immediate mode: the commit everything written so far waits for (None when
        nothing is pending); it fails if the commit does."""
        if self._pending is not None and self.mode.kind == IMMEDIATE:
            return self._pending
        return None

    def commit(self) -> None:
        """Commit the shared transaction now (also called at shutdown)."""
        pending, self._pending = self._pending, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if pending is None:
            return
        try:
            self.transactions.commit()
        except Exception as exc:
            if self.mode.kind == IMMEDIATE:
                logger.error("commit failed; its values were not handed out: %s", exc)
            else:
                logger.critical("commit failed; values already handed out since the last "
                                "commit are lost (%s mode): %s", self.mode, exc)
            pending.finish(exc)
            return
        self.commits += 1
        pending.finish()
        if self.after_commit is not None:
            self.after_commit()
