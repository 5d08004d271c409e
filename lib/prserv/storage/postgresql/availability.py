"""Remembering a PostgreSQL outage, so that it is logged once.

``Outage`` keeps the log to one WARNING as an outage starts and one INFO as it
ends (how long, how many requests waited, how many of them gave up), whatever the
number of requests caught in it.  It ends with the first success on a connection
opened since it began: a primary being stopped answers on some of its connections
for a moment after others were cut.  For the same reason a failure on a connection
opened before the last outage began (one still in use when that outage ended) does
not begin another: it is that outage's tail.  Which errors are an outage: ``errors``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from .errors import cause


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
        self.last_started: Optional[float] = None
        """When the last outage that ended had begun."""

    def failed(self, exc: BaseException, first_for_request: bool, opened_at: Optional[float] = None) -> None:
        """A request met ``exc`` (an outage) on a connection opened at ``opened_at``
        (None: not known, or no connection); the first such failure begins the
        outage, unless the connection is older than the last outage."""
        if self.started is None and opened_at is not None and self.last_started is not None \
                and opened_at < self.last_started:
            return                              # the last outage's tail, on a connection from before it
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
        self.last_started, self.started = self.started, None
        self.logger.info("PostgreSQL %s is back after %.1f s; %d request(s) waited for it, %d of them "
                         "answered with an error after %g s", self.shown_url, lasted, self.waited,
                         self.gave_up, self.wait)
