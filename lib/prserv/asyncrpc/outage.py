"""Outages of the servers a process is a client of, logged once each.

A client that retries fails many times while a server is down: the client layer
tries each request 4 times, a mirror's follower reconnects with a back-off, a
downstream server's upstream pool tries again every second.  Logging each failure
buried the one fact an operator needs (a mirror whose source restarted for 31 s
wrote 29 lines).  ``OutageLog`` logs an outage's first failure (WARNING, or ERROR
for a server that answered nonsense), then at most once per ``REPEAT_INTERVAL``
while it lasts, and its end at INFO; every other failure goes to DEBUG.

Outages are kept by address, so the several connections of a pool, or the
successive clients of a follower, report one outage together.  Clients that say
nothing else share one ``OutageLog`` per logger (``shared``); a client whose owner
knows better when the server is back (a mirror: when an answer is valid, not merely
received) reports through its own and gives its client none.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Optional

REPEAT_INTERVAL = 60.0
"""While an outage lasts, a failure is logged again once this many seconds passed
since the last line about it (so that a log read later still shows it going on)."""

UNREACHABLE, NONSENSE = "is unreachable", "answered nonsense"


class _Outage:
    __slots__ = ("since", "logged", "failures")

    def __init__(self, now: float) -> None:
        self.since = now
        self.logged = now
        self.failures = 0


class OutageLog:
    """Reports failures and recoveries of servers, one outage per address at a time.

    ``name`` precedes the address in each line (``"mirror: source"``, ``"upstream"``);
    ``consequence`` follows the first line and its repetitions (what the process does
    meanwhile).  ``clock`` is the time source (seconds; monotonic)."""

    def __init__(self, logger: logging.Logger, name: str = "server", consequence: str = "",
                 interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.name = name
        self.consequence = consequence
        self.interval = interval
        self.clock = clock
        self._down: Dict[str, _Outage] = {}
        self._lock = threading.Lock()        # blocking clients of one process may run in threads

    def is_down(self, address: str) -> bool:
        return address in self._down

    def down_since(self, address: str) -> Optional[float]:
        outage = self._down.get(address)
        return None if outage is None else outage.since

    def failed(self, address: str, reason: str, nonsense: bool = False) -> None:
        """One failure to talk to ``address``: logged if it starts an outage, or if the
        last line about this outage is ``interval`` seconds old; else at DEBUG.
        ``nonsense``: the server answered, but not what the protocol allows (ERROR)."""
        problem = NONSENSE if nonsense else UNREACHABLE
        level = logging.ERROR if nonsense else logging.WARNING
        now = self.clock()
        with self._lock:
            outage = self._down.get(address)
            if outage is None:
                outage = self._down[address] = _Outage(now)
                outage.failures = 1
                self.logger.log(level, "%s %s %s: %s%s", self.name, address, problem, reason,
                                self.consequence)
                return
            outage.failures += 1
            if now - outage.logged >= self.interval:
                outage.logged = now
                self.logger.log(level, "%s %s %s: %s (for %.0f s, %d failures so far)%s", self.name,
                                address, problem, reason, now - outage.since, outage.failures,
                                self.consequence)
                return
        self.logger.debug("%s %s %s: %s (failure %d of this outage)", self.name, address, problem,
                          reason, outage.failures)

    def recovered(self, address: str) -> None:
        """``address`` answered: the end of its outage, if one was reported (INFO).
        Called after every answer, so the usual case costs one dict lookup."""
        if address not in self._down:
            return
        with self._lock:
            outage = self._down.pop(address, None)
        if outage is not None:
            self.logger.info("%s %s is back after %.1f s (%d failure%s)", self.name, address,
                             self.clock() - outage.since, outage.failures,
                             "" if outage.failures == 1 else "s")


_shared: Dict[str, OutageLog] = {}
_shared_lock = threading.Lock()


def shared(logger: logging.Logger) -> OutageLog:
    """The ``OutageLog`` of every client writing to ``logger`` that was given none:
    the clients of one process to one server report an outage once between them."""
    with _shared_lock:
        log = _shared.get(logger.name)
        if log is None:
            log = _shared[logger.name] = OutageLog(logger)
        return log
