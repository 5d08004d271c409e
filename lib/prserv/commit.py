"""When writes reach the disk: group commit and the three sync modes.

``immediate`` (default): the writes made while the event loop handles one batch of
ready requests share one transaction, committed (and fsync'd: ``synchronous=FULL``)
on the loop's next turn; every answer waits for the commit that covers what it saw.
Requests that arrive together share one fsync, so throughput grows with load while
a value is on disk before any client sees it.

``periodic:N``: the shared transaction is committed at most every N seconds; answers
do not wait.  A crash loses at most the last N seconds; the file is always consistent.

``on-shutdown``: one transaction for the whole run, committed on a clean shutdown.

The buffered modes keep uncommitted values that only this process can see, so they
open the file with SQLite's exclusive locking: nobody else can read or write it.
Answers always come from this process's state, which includes uncommitted values,
so a value waiting in a buffer is never handed out twice.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Callable, List, Optional

from . import logger
from .db import PRTable
from .errors import ConfigError

IMMEDIATE = "immediate"
PERIODIC = "periodic"
ON_SHUTDOWN = "on-shutdown"

_PERIODIC = re.compile(r"periodic:(?P<seconds>[0-9]+(\.[0-9]*)?)\Z")


@dataclass(frozen=True)
class SyncMode:
    kind: str
    interval: float = 0.0          # seconds between commits (periodic)

    @property
    def buffered(self) -> bool:
        """Values may be answered before they are on disk (needs exclusive file access)."""
        return self.kind != IMMEDIATE

    def __str__(self) -> str:
        return "%s:%g" % (self.kind, self.interval) if self.kind == PERIODIC else self.kind


def parse_sync_mode(text: str) -> SyncMode:
    """``immediate``, ``periodic:N`` (N > 0 seconds) or ``on-shutdown``."""
    text = text.strip().lower() if isinstance(text, str) else text
    if text == IMMEDIATE:
        return SyncMode(IMMEDIATE)
    if text == ON_SHUTDOWN:
        return SyncMode(ON_SHUTDOWN)
    match = _PERIODIC.match(text) if isinstance(text, str) else None
    if match and float(match.group("seconds")) > 0:
        return SyncMode(PERIODIC, float(match.group("seconds")))
    raise ConfigError("expected immediate, periodic:SECONDS (SECONDS > 0) or on-shutdown, got %r"
                      % (text,))


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
    """Opens the table's shared write transaction on demand and commits it per the mode.

    Installed as ``table.group``: ``PRTable.transaction()`` calls ``open()`` when no
    transaction is open, so every write path joins the shared transaction.
    """

    def __init__(self, table: PRTable, mode: SyncMode,
                 after_commit: Optional[Callable[[], None]] = None) -> None:
        """``after_commit``: upkeep to run after each successful commit, once the
        answers that waited for it have been released (the log's checkpoint)."""
        self.table = table
        self.mode = mode
        self.after_commit = after_commit
        self._pending: Optional[PendingCommit] = None
        self._timer: Optional[asyncio.Handle] = None
        self.commits = 0

    def open(self) -> None:
        """Begin the shared transaction and schedule its commit."""
        loop = asyncio.get_running_loop()
        self.table.begin()
        self._pending = PendingCommit()
        if self.mode.kind == IMMEDIATE:
            self._timer = loop.call_soon(self.commit)
        elif self.mode.kind == PERIODIC:
            self._timer = loop.call_later(self.mode.interval, self.commit)

    @property
    def unsettled(self) -> bool:
        """True while answers must wait for a commit (immediate mode, commit pending)."""
        return self._pending is not None and self.mode.kind == IMMEDIATE

    def pending_commit(self) -> Optional[PendingCommit]:
        """Immediate mode: the commit everything written so far waits for (None when
        nothing is pending); it fails if the commit does."""
        return self._pending if self.unsettled else None

    async def settled(self) -> None:
        """In immediate mode, wait until everything written so far is committed."""
        pending = self.pending_commit()
        if pending is None:
            return
        waiter = asyncio.get_running_loop().create_future()

        def wake(commit: PendingCommit) -> None:
            if waiter.done():
                return
            if commit.exception() is not None:
                waiter.set_exception(commit.exception())
            else:
                waiter.set_result(None)

        pending.add_done_callback(wake)
        await waiter

    def commit(self) -> None:
        """Commit the shared transaction now (also called at shutdown)."""
        pending, self._pending = self._pending, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if pending is None:
            return
        try:
            self.table.commit()
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
