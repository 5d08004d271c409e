"""The session interface: what a server needs of a session, whatever its kind.

This is the listener seam.  A listener accepts a connection (a
``connection.Connection``: ``peer_host``, ``address``, ``last_activity``, ``busy``,
``task``, ``close()``; a trusted proxy's PROXY header through
``expects_proxy_header`` / ``read_proxy_header()``) and hands it to
``AsyncServer.admit(connection)``, the one entry for every kind of connection.
``admit`` reads the PROXY header if one is expected, applies the access rules
(``allow``) and the connection limits (``admission``), asks the server subclass's
``accept_client(connection)`` for a session -- any ``Session`` --, counts it in
``AsyncServer.sessions`` and awaits its ``process_requests()``.  From then on the
server uses only what ``Session`` names:

* admission (per-address and global limits, ``admission.longest_idle``):
  ``setup_done``, ``evicted``, ``opened_at``, ``connection.last_activity``,
  ``silent_since()``, ``evict(reason)``;
* the idle watch (``handshake_timeout``, ``idle_timeout``): ``setup_done``,
  ``opened_at``, ``silent_since()``, ``abort(reason)``;
* shutdown: ``setup_done``, ``stop_receiving()``;
* what the server lends each session: ``limits``, ``stats``;
* the line every session ends with (``log_closed``): ``logger`` (a
  ``ClientLoggerAdapter``, holding the peer's address as the session began),
  ``requests``, ``opened_at``, ``end_reason``, ``user``; written through
  ``Session.info_line`` when the serving process set one up (``runtime.logs``).

``rpcsession.AsyncServerConnection`` (JSON lines over a stream or a websocket) is
one kind of session; ``httpsession.HTTPSession`` (HTTP/1.1, ``--http``) another, with
a listener of its own (``listeners.HTTPListener``) and a ``Connection`` subclass
(``httpstream.HTTPConnection``), admitted, evicted, timed out, stopped and logged as
the first is.  ``admission.refuse`` tells a refused client why in its own protocol
(an invoke-error, or an HTTP ``503``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from typing import Any, Callable, Optional

from .connection import Connection
from .limits import Limits
from .stats import RequestStats


class ClientLoggerAdapter(logging.LoggerAdapter):
    """Prefixes every record with the peer's address."""

    def process(self, msg: Any, kwargs: Any) -> Any:
        return "[Client %s] %s" % (self.extra["address"], msg), kwargs


class Session(abc.ABC):
    """One client session, as the server's admission, idle watch, shutdown and log
    see it (the module docstring says who uses what).

    A subclass sets the instance attributes annotated below in its ``__init__`` and
    implements the abstract methods; ``abort``, ``evict`` and ``log_closed`` are
    shared."""

    limits = Limits()
    """The server's limits (``AsyncServer`` sets its own on each session)."""
    stats: Optional[RequestStats] = None
    """Where answered requests are counted (``AsyncServer`` sets its own)."""
    user: Optional[str] = None
    """Who the client proved to be (a subclass's ``auth``), for the log."""
    info_line: Optional[Callable[[str], None]] = None
    """Writes one INFO line as the log would show it, without the logging module's
    record machinery (a serving process's ``runtime.logs`` sets it up; it costs a
    short connection a third of what ``logger.info`` does).  None: the logger."""

    # Set by each session's __init__:
    connection: Connection
    """What the session speaks over (admission reads its ``last_activity``)."""
    logger: ClientLoggerAdapter
    """The server's logger, prefixing the peer's address as the session began."""
    opened_at: float
    """``time.monotonic()`` when the session began."""
    setup_done: bool
    """The session's setup is complete: it takes requests (else the handshake
    timeout applies, and admission may close it after ``SETUP_IDLE_SECONDS``)."""
    evicted: bool
    """Closed to admit a newcomer (``evict``): no longer a candidate for that."""
    requests: int
    """Requests received so far (the closing line)."""
    end_reason: str
    """Why the session ended, as the closing line says it."""

    def begin(self, connection: Connection, logger: logging.Logger) -> None:
        """Set the attributes every session starts with (a subclass's ``__init__``
        may call it): nothing received yet, not set up."""
        self.connection = connection
        self.logger = ClientLoggerAdapter(logger, {"address": connection.address})
        self.opened_at = time.monotonic()
        self.setup_done = False
        self.evicted = False
        self.requests = 0
        self.end_reason = "closed by the client"

    @abc.abstractmethod
    async def process_requests(self) -> None:
        """Serve the session to its end; close the connection and ``log_closed()``."""

    @abc.abstractmethod
    def silent_since(self) -> Optional[float]:
        """``time.monotonic()`` since when the session has been idle (set up, no
        request in hand, no answer owed, not being closed); None if it is not idle.
        The idle timeout and the connection limits both ask this."""

    @abc.abstractmethod
    def stop_receiving(self) -> None:
        """Server shutdown: take no more requests; close once those in hand are
        answered."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (``process_requests`` then ends)."""

    def abort(self, reason: str) -> None:
        """End the session now, logging ``reason`` (a limit was hit)."""
        self.end_reason = reason
        self.logger.warning("closing the connection: %s", reason)
        asyncio.get_running_loop().create_task(self.close())

    def evict(self, reason: str) -> None:
        """End this idle session to make room for a new one (it owes nothing)."""
        self.evicted = True
        self.end_reason = reason
        self.logger.info("closing the connection: %s", reason)
        asyncio.get_running_loop().create_task(self.close())

    def log_closed(self) -> None:
        """The INFO line every connection ends with (operators count and trace builds
        by it): through ``info_line`` when the process set one up, else the logger."""
        logger = self.logger
        if not logger.logger.isEnabledFor(logging.INFO):
            return
        # The address as the session began: uvloop cannot tell a closed transport's peer.
        text = "[Client %s] connection closed after %d request%s in %.1f s: %s%s" % (
            logger.extra["address"], self.requests, "" if self.requests == 1 else "s",
            time.monotonic() - self.opened_at, self.end_reason,
            "" if self.user is None else " (user %s)" % self.user)
        info_line = self.info_line
        if info_line is not None:
            info_line(text)
        else:
            logger.logger.info("%s", text)
