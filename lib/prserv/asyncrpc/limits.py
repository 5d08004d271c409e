"""What a server accepts from its clients, and for how long.

A PR server sits on a build network for years, and a read-only one may face the
internet: every resource a client can make it spend is bounded here.  Each limit
is enforced per connection; hitting one ends only that connection and is logged
once with the peer's address.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from .protocol import DEFAULT_MAX_LINE, MAX_REQUEST_NESTING

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_message: int = DEFAULT_MAX_MESSAGE
    """Bytes of one request: a line, or a chunk stream's total.  A longer single line
    is dropped as it arrives (at most ``max_line`` bytes are ever held)."""
    max_line: int = DEFAULT_MAX_LINE
    """Bytes of one unchunked line held in memory while it arrives."""
    max_depth: int = MAX_REQUEST_NESTING
    """Levels of arrays and objects in one request; deeper is refused unparsed."""
    max_handshake_line: int = 4096
    """Bytes of one connection-setup line (protocol line or header)."""
    max_connections: int = 10000
    """Open client connections (0: no limit; the open-file limit caps it in any case).
    When they are all open, the longest-idle one is closed to admit a new one."""
    max_connections_per_address: int = 256
    """Open connections from one address (0: no limit).  When it holds them all, its
    longest-idle one is closed to admit a new one; only when none is idle is the new
    one refused (``admission``)."""
    idle_timeout: float = 3600.0
    """Seconds without a byte from an established client before it is closed (0: never).
    Builds keep connections open between tasks, hence the hour."""
    handshake_timeout: float = 30.0
    """Seconds a new connection has to complete its setup (0: no limit): slow-loris."""
    shutdown_timeout: float = 10.0
    """Seconds requests in flight get to finish when the server stops."""

    @property
    def line_limit(self) -> int:
        """The line length the line buffer enforces."""
        return min(self.max_line, self.max_message)

    def watch_interval(self) -> float:
        """How often timeouts are checked: a quarter of the shortest, within [0.05, 5] s."""
        timeouts = [t for t in (self.idle_timeout, self.handshake_timeout) if t > 0]
        if not timeouts:
            return 0.0
        return max(0.05, min(5.0, min(timeouts) / 4))


def raise_open_file_limit(logger: logging.Logger) -> int:
    """Raise this process's soft limit on open files to its hard limit, so that
    thousands of client connections fit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    logger.debug("open-file limit raised from %d to %d", soft, hard)
    return hard
