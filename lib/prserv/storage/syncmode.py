"""When writes reach the disk: the three sync modes of a server.

``immediate`` (default): the writes made while the event loop handles one batch of
ready requests share one transaction, committed (and fsync'd) on the loop's next
turn; every answer waits for the commit that covers what it saw.  Requests that
arrive together share one fsync, so throughput grows with load while a value is on
disk before any client sees it.

``periodic:N``: the shared transaction is committed at most every N seconds; answers
do not wait.  A crash loses at most the last N seconds; the file is always consistent.

``on-shutdown``: one transaction for the whole run, committed on a clean shutdown.

The buffered modes keep values that only this process can see until they are
committed, so an engine must hold the database alone meanwhile (SQLite: exclusive
locking).  This module only parses and names the modes (no I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

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
