"""Following another PR server's change feed: the mirror's side.

A mirror pulls what its source committed after the position it holds
(``mirror-pull``, a long-poll: the source answers as soon as something is
committed), checks the answer, and stores the rows together with the position
after them in one transaction (``storage.engine.MirrorTarget``).  It asks for the
time each row was given (``given``), which it keeps as the row's record; a source
that predates times sends rows without, and those times stay unknown.  So a mirror
killed at any moment restarts where its file says, and no row is skipped or
stored twice.

On every pull it checks that the source still holds the history it copied: the
same identity, and the same row at the mirror's position.  If not (another
database, an older copy, renumbered rows) it stops applying, keeps serving what it
holds, logs once at ERROR and reports ``diverged``.  A periodic audit compares the
count and digest of ranges of rows with the source's.

A source that cannot be reached is retried with a back-off capped at
``MAX_BACKOFF``; an answer that is not a valid feed page (wrong types, a value that
is not a revision, more rows than asked for, a position held already) is a
``SourceError``: nothing of it is stored, the connection is dropped and retried.
Either is an outage of the source, logged once when it starts (again at most once a
minute while it lasts) and once when a valid answer ends it (``OutageLog``): the
follower reports them itself, as only it knows an answer to be valid, so its client
reports none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..asyncrpc import AsyncRPCError, InvokeError
from ..asyncrpc.exceptions import ProtocolError
from ..asyncrpc.deadline import within
from ..asyncrpc.outage import NONSENSE, UNREACHABLE, OutageLog
from ..client import PRAsyncClient
from ..errors import AuthenticationError, DivergedError, MirrorError, SourceError
from ..messages import FeedAnswer, mirror_audit_of, mirror_audit_rows_of
from ..storage.engine import MirrorTarget, PositionedRow, feed_digest

CATCHING_UP, FOLLOWING, DISCONNECTED, DIVERGED = "catching-up", "following", "disconnected", "diverged"
PULL_ROWS = 5000
"""Rows asked for per pull."""
MIN_PULL_INTERVAL = 0.05
"""After a pull that emptied the feed, the next one leaves no sooner than this: a
source taking values all the time answers a few mirrors' pulls at a bounded rate."""
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 30.0
DEFAULT_TIMEOUT = 60.0
"""Seconds a source has to answer (a long-poll waits for half of it)."""
DEFAULT_AUDIT_INTERVAL = 3600.0
AUDIT_ROWS = 2000
"""Rows compared per audit request."""
COUNT_INTERVAL = 2.0
"""While catching up, how often the source is asked how many rows remain."""

TRANSPORT_ERRORS = (OSError, ConnectionError, AsyncRPCError, asyncio.TimeoutError)
"""The exceptions of a source that could not be reached or went away."""



class Follower:
    """Keeps ``target`` a copy of ``source``'s table (``run``), or copies once
    (``copy``)."""

    def __init__(self, source: str, target: MirrorTarget, logger: logging.Logger,
                 timeout: float = DEFAULT_TIMEOUT, audit_interval: float = DEFAULT_AUDIT_INTERVAL,
                 credentials: Optional[Tuple[str, str]] = None, tls_context: Any = None) -> None:
        """``credentials``: (user, token) proved to the source on every connection;
        ``tls_context``: checks a ``wss://`` source's certificate."""
        self.source = source
        self.credentials = credentials
        self.tls_context = tls_context
        self.target = target
        self.logger = logger
        self.timeout = timeout
        self.audit_interval = audit_interval
        held = target.mirror_state()
        self.state = CATCHING_UP
        self.complete = held.complete
        """A first copy completed (now or in an earlier run): requests are answered."""
        self.behind: Optional[int] = None
        self.last_contact: Optional[float] = None
        self.reason = ""
        """Why the state is ``disconnected`` or ``diverged``."""
        self.warnings: List[str] = []
        self.audit: Dict[str, Any] = {"result": "not yet"}
        self.source_behind: Optional[bool] = None
        """Whether the source is a mirror behind this one (None: not known, as before
        its first answer, or once diverged)."""
        self._client: Optional[PRAsyncClient] = None
        self.outages = OutageLog(logger, "mirror: source", "; answering from what is held, retrying")
        self._next_audit = time.monotonic() + audit_interval
        self._last_count = 0.0

    # ------------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        """The state as ``mirror-status`` answers it.  What is not known is None: the
        position before the first row, rows behind before the source said, and both
        rows behind and ``source_behind`` once diverged (the source holds another
        history: how far it is from this copy means nothing)."""
        held = self.target.mirror_state()
        diverged = self.state == DIVERGED
        return {
            "source": self.source, "state": self.state, "complete": self.complete,
            "identity": held.identity, "position": held.position,
            "rows_behind": None if diverged else self.behind,
            "source_behind": None if diverged else self.source_behind,
            "seconds_since_contact": None if self.last_contact is None
            else round(time.monotonic() - self.last_contact, 3),
            "reason": self.reason or None, "audit": self.audit, "warnings": list(self.warnings),
        }

    def catching_up(self) -> str:
        """Why a request is refused before the first complete copy."""
        return ("this mirror is catching up with %s (%s); it answers once its first copy is "
                "complete" % (self.source, "%d rows to go" % self.behind if self.behind is not None
                              else self.reason or "starting"))

    # ------------------------------------------------------------------ running
    async def run(self, on_complete: Optional[Callable[[], None]] = None) -> None:
        """Follow until cancelled (or diverged: then keep what is held, and stop)."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                async for _ in self._pulls():
                    backoff = FIRST_BACKOFF
                    if self.complete and on_complete is not None:
                        on_complete()
                        on_complete = None
                    await self._audit_if_due()
            except DivergedError as exc:
                self._diverged(str(exc))
                return
            except (SourceError,) + TRANSPORT_ERRORS as exc:
                self._disconnected(exc)
            except InvokeError as exc:
                self._disconnected(SourceError("refused: %s" % exc))
            except AuthenticationError as exc:
                self._disconnected(SourceError(str(exc)))
            finally:
                await self._disconnect()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def copy(self, progress: Optional[Callable[[int, Optional[int]], None]] = None) -> int:
        """Pull until caught up with the source once (``prserv mirror``); returns the
        rows copied.  Errors propagate (``MirrorError``, connection errors)."""
        copied = 0
        try:
            async for rows in self._pulls(wait=False):
                copied += rows
                if progress is not None:
                    progress(copied, self.behind)
                if self.state == FOLLOWING:
                    return copied
        finally:
            await self._disconnect()
        return copied

    async def _disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def _pulls(self, wait: bool = True) -> Any:
        """Pull and apply forever; yields the rows applied by each pull."""
        client = PRAsyncClient(timeout=self.timeout, credentials=self.credentials, tls_context=self.tls_context,
                               outages=None)
        self._client = client
        await within(client.connect_address(self.source), self.timeout)
        drained = False
        """The last answer left nothing to copy: the next pull may wait on the source."""
        while True:
            held = self.target.mirror_state()
            count = not self.complete and time.monotonic() - self._last_count >= COUNT_INTERVAL
            if count:
                self._last_count = time.monotonic()
            started = time.monotonic()
            answer = FeedAnswer(await within(client.mirror_pull(
                held.position, PULL_ROWS, self.timeout / 2 if wait and drained else 0, count, given=True),
                self.timeout), PULL_ROWS)
            self._contact()
            if not self._same_history(held, answer):
                if not wait:
                    raise MirrorError("the source %s is a mirror that has not reached position %s yet"
                                      % (self.source, held.position))
                self.outages.recovered(self.source)
                drained = True
                yield 0                                 # a mirror source behind us: wait on it
                continue
            if not wait and not answer.rows and not answer.complete:
                raise MirrorError("the source %s is a mirror still catching up: its copy is not "
                                  "complete" % self.source)
            done = len(answer.rows) < PULL_ROWS and answer.complete
            drained = len(answer.rows) < PULL_ROWS
            if answer.rows or (done and not held.complete and answer.identity is not None):
                await self.target.apply_changes(answer.identity, answer.rows, done)  # type: ignore[arg-type]
            self.outages.recovered(self.source)         # an answer taken whole ends an outage
            self.complete = self.complete or done
            self.state = FOLLOWING if done else CATCHING_UP
            if answer.pending is not None:
                self.behind = answer.pending
            elif done:
                self.behind = 0
            elif self.behind is not None:
                self.behind = max(0, self.behind - len(answer.rows))
            yield len(answer.rows)
            if drained and wait:
                await asyncio.sleep(max(0.0, MIN_PULL_INTERVAL - (time.monotonic() - started)))

    def _contact(self) -> None:
        self.last_contact = time.monotonic()
        if self.state == DISCONNECTED:
            self.reason = ""
            self.state = CATCHING_UP

    def _same_history(self, held: Any, answer: FeedAnswer) -> bool:
        """Whether to apply the answer; ``DivergedError`` if the source holds another
        history; False if the source is a mirror still behind this one."""
        self.source_behind = False
        if held.identity is not None and answer.identity != held.identity:
            raise DivergedError("the source holds history %s; this mirror copied %s"
                                % (answer.identity, held.identity))
        if held.position is None:
            return True
        if not answer.reached:
            if answer.origin:
                raise DivergedError("the source does not hold position %s, which this mirror does: "
                                    "restored from an older copy?" % held.position)
            self.source_behind = True                   # another mirror, not this far yet
            return False
        if answer.at is None:
            self._warn("the source no longer holds the row at position %s (deleted there); kept here"
                       % held.position)
        elif held.at is not None and tuple(answer.at) != tuple(held.at):
            raise DivergedError("the source holds %s at position %s; this mirror holds %s"
                                % (list(answer.at), held.position, list(held.at)))
        return True

    # ------------------------------------------------------------------ audit
    async def _audit_if_due(self) -> None:
        if not self.audit_interval or time.monotonic() < self._next_audit or self.state != FOLLOWING:
            return
        self._next_audit = time.monotonic() + self.audit_interval
        await self.audit_now()

    async def audit_now(self) -> Dict[str, Any]:
        """Compare every row held with the source's, range by range.  A row of the
        source's that the mirror lacks or holds otherwise: ``DivergedError``; rows the
        source no longer has: a warning (the mirror never deletes what it served)."""
        assert self._client is not None
        checked, missing_at_source, after = 0, 0, None
        while True:
            until = self.target.audit_bound(after, AUDIT_ROWS)
            if until is None:
                break
            mine = await self.target.rows_between(after, until) or []   # type: ignore[attr-defined]
            theirs = mirror_audit_of(await self._source_audit(after, until, rows=False))
            if theirs is None:
                break                                   # a mirror source not this far yet
            if theirs != feed_digest(iter(mine)):
                missing_at_source += self._compare(mine, await self._source_rows(after, until))
            checked += len(mine)
            after = until
        self.audit = {"result": "ok" if not missing_at_source else "warning",
                      "rows_checked": checked, "missing_at_source": missing_at_source,
                      "at": time.time()}
        if missing_at_source:
            self._warn("%d rows held here are no longer held by the source (kept here)" % missing_at_source)
        return self.audit

    async def _source_audit(self, after: Optional[str], until: str, rows: bool) -> Any:
        return await within(self._client.mirror_audit(after, until, rows), self.timeout)  # type: ignore[union-attr]

    async def _source_rows(self, after: Optional[str], until: str) -> Dict[str, Tuple[str, ...]]:
        answer = await self._source_audit(after, until, rows=True)
        mirror_audit_of(answer)                         # checked as any audit answer
        return mirror_audit_rows_of(answer)

    def _compare(self, mine: List[PositionedRow], theirs: Dict[str, Tuple[str, ...]]) -> int:
        """Rows the source lacks (counted); ``DivergedError`` where it holds more or other."""
        held = {row[0]: tuple(row[1:]) for row in mine}
        for position, row in theirs.items():
            if held.get(position) != row:
                raise DivergedError("audit: the source holds %s at position %s; this mirror holds %s"
                                    % (list(row), position, list(held[position]) if position in held
                                       else "nothing"))
        return len(set(held) - set(theirs))

    # ------------------------------------------------------------------ reporting
    def _warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)
            self.logger.warning("mirror of %s: %s", self.source, warning)

    def _disconnected(self, exc: BaseException) -> None:
        nonsense = isinstance(exc, SourceError) or isinstance(exc.__cause__, ProtocolError)
        what = NONSENSE if nonsense else UNREACHABLE
        reason = "source %s %s: %s" % (self.source, what, exc or type(exc).__name__)
        self.state = DISCONNECTED
        self.reason = reason
        self.outages.failed(self.source, str(exc) or type(exc).__name__, nonsense=nonsense)

    def _diverged(self, reason: str) -> None:
        self.state = DIVERGED
        self.reason = reason
        self.logger.error("mirror of %s diverged: %s. Serving what is held and applying nothing more; "
                          "`prserv mirror-reset` (server stopped) copies afresh", self.source, reason)


__all__ = ["Follower", "FeedAnswer", "MirrorError", "CATCHING_UP", "FOLLOWING", "DISCONNECTED", "DIVERGED"]
