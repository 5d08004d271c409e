"""Telling a PostgreSQL outage from a request's own error, and remembering one.

An outage is the database being unreachable, or reachable but not the primary:
a connection refused, reset or closed under a request (SQLSTATE class 08), a
server shutting down or starting up (57P01, 57P02, 57P03), a write refused by a
node that was demoted (25006), no connection slot left (53300), or no host of a
multi-host URL that is the primary (``target_session_attrs``), or a connection the
driver can no longer use (``InternalClientError``: asyncpg's "another operation is
in progress" after a server ended the connection mid-way).  A request waits
one out (``PostgreSQLEngine``: up to ``db_outage_wait``), because a build host
raises on an error answer and fails its task, while a late answer only costs time.
Every other error -- a lock timeout, a constraint, a schema newer than the server
-- is the request's own and is answered at once.

``Outage`` keeps the log to one WARNING as an outage starts and one INFO as it
ends (how long, how many requests waited, how many of them gave up), whatever the
number of requests caught in it.  It ends with the first success on a connection
opened since it began: a primary being stopped answers on some of its connections
for a moment after others were cut.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006", "53300"})
"""admin shutdown, crash shutdown, cannot connect now, read-only transaction, too
many connections; and every state of class 08 (connection exceptions)."""


def is_outage(exc: BaseException, driver: Any) -> bool:
    """Whether ``exc`` (raised by asyncpg or the socket layer) says the database is
    out rather than that the request was wrong."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, driver.exceptions.InternalClientError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, driver.PostgresError) and isinstance(sqlstate, str):
        return sqlstate in OUTAGE_SQLSTATES or sqlstate.startswith("08")
    return False


def cause(exc: BaseException) -> str:
    """``exc`` in a few words: its type, and its message if it has one."""
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


class Outage:
    """One engine's view of whether its database is out; logs its start and end.

    ``shown_url`` has no password; ``hide`` takes one out of a driver's message."""

    def __init__(self, shown_url: str, wait: float, logger: logging.Logger, hide: Any) -> None:
        self.shown_url = shown_url
        self.wait = wait
        """Seconds a request waits for the database before it is answered with an error."""
        self.logger = logger
        self.hide = hide
        self.started: Optional[float] = None
        """``time.monotonic()`` of the failure that began the current outage."""
        self.waited = 0
        """Requests that waited during the current outage."""
        self.gave_up = 0
        """Requests of the current outage answered with an error after the wait."""

    @property
    def active(self) -> bool:
        return self.started is not None

    def failed(self, exc: BaseException, first_for_request: bool) -> None:
        """A request met ``exc`` (an outage); the first such failure begins the outage."""
        if self.started is None:
            self.started = time.monotonic()
            self.waited = self.gave_up = 0
            self.logger.warning("PostgreSQL %s is out (%s): requests wait up to %g s for it "
                                "(db_outage_wait)", self.shown_url, self.hide(cause(exc)), self.wait)
        if first_for_request:
            self.waited += 1

    def gave_up_on(self) -> None:
        """A request waited ``wait`` seconds in vain and is answered with an error."""
        self.gave_up += 1

    def reached(self, opened_at: float) -> None:
        """A request succeeded on a connection opened at ``opened_at``: if that was
        since the outage began, the outage is over.  (An older connection may still
        reach a server on its way down, or one no longer the primary.)"""
        if self.started is None or opened_at < self.started:
            return
        lasted = time.monotonic() - self.started
        self.started = None
        self.logger.info("PostgreSQL %s is back after %.1f s; %d request(s) waited for it, %d of them "
                         "answered with an error after %g s", self.shown_url, lasted, self.waited,
                         self.gave_up, self.wait)
