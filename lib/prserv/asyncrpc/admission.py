"""Who gets a connection, and how a refusal is said.

A PR server's clients are build hosts, each with one connection per parallel task,
kept open between tasks; nobody should be able to keep everyone else out by holding
idle connections.  So:

* a connection is idle when it is set up with no request in hand and no answer
  owed, or still in its setup ``SETUP_IDLE_SECONDS`` after it was accepted;
  ``longest_idle`` picks the one silent the longest;
* one address holds at most ``Limits.max_connections_per_address`` connections: a
  newcomer from an address that holds that many is admitted by closing that
  address's longest-idle connection, never another address's, and refused only when
  none of them is idle (build hosts behind one NAT address share it, and a client
  reopens a closed idle connection when it next needs it).  Unix-socket peers, this
  host's own, are not counted per address;
* when the server holds ``max_connections``, the longest-idle connection of any
  address is closed to admit the newcomer; only when none is idle is the newcomer
  refused;
* ``max_connections`` never exceeds the open-file limit minus ``FILES_RESERVED``
  (the database, logs, listeners, refusals in progress), so accepting never fails
  for want of a file descriptor;
* a refused client is told why where the protocol allows it: its setup is read
  (and a header block sent if it asked for one), and its first request answered
  with an invoke-error (an HTTP client's first request: ``503 Service Unavailable``
  with ``Retry-After``, ``httpsession.answer_refused``); at most
  ``REFUSALS_AT_ONCE`` are told at a time, within ``REFUSAL_SECONDS``, the others
  are closed at once.

A client outside the server's ``allow`` networks (``prserv.access``) is closed at
once, before its setup, without an answer (``shut_out``).

Refusals are logged at WARNING, at most once a minute per address.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any, Dict, Iterable, Optional, Set

from . import protocol
from .connection import Connection
from .deadline import within
from .exceptions import AsyncRPCError
from .httpsession import answer_refused
from .httpstream import HTTPConnection
from .limits import Limits
from .session import Session

SETUP_IDLE_SECONDS = 2.0
"""A connection still in its setup this long after it was accepted may be closed to
admit a newcomer.  A client sends its whole setup as soon as it connects, usually in
one packet (bitbake's does), so a real one is never in its setup for seconds; one
that is holds a place it does not use (``handshake_timeout`` ends it only after 30 s)."""
FILES_RESERVED = 128
"""Open files kept for the server itself and for refusals in progress."""
REFUSALS_AT_ONCE = 32
REFUSAL_SECONDS = 5.0
"""How long a refused client has to send its setup and first request."""
MAX_SETUP_LINES = 64
LOG_INTERVAL_SECONDS = 60.0


def connection_limit(limits: Limits, logger: logging.Logger) -> int:
    """``limits.max_connections`` (0: none), capped by the open-file limit in force."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    configured = limits.max_connections
    if soft == resource.RLIM_INFINITY:
        return configured
    cap = max(1, soft - FILES_RESERVED)
    if configured and configured <= cap:
        return configured
    logger.info("max_connections %s: %d, the open-file limit (%d) less %d for the server's own files",
                configured or "unlimited", cap, soft, FILES_RESERVED)
    return cap


class Admission:
    """The connection limits of one server, applied as clients arrive."""

    def __init__(self, limits: Limits, limit: int, logger: logging.Logger) -> None:
        self.limits = limits
        self.limit = limit
        """Connections at most (0: no limit), ``connection_limit``'s answer."""
        self.logger = logger
        self.per_address: Dict[str, Set[Any]] = {}
        """The sessions each address holds (one closed to admit another no longer counts)."""
        self._address_of: Dict[Any, str] = {}
        self.refusing = 0
        self._logged: Dict[str, float] = {}

    def refusal(self, host: Optional[str], sessions: Iterable[Session]) -> Optional[str]:
        """Why a new connection from ``host`` must be refused, or None to admit it
        (having closed the longest-idle session to make room: that address's own at
        its ``max_connections_per_address``, any address's if the server is full).
        ``sessions``: the open sessions, of any kind."""
        now = time.monotonic()
        per_address = self.limits.max_connections_per_address
        if host is not None and per_address:
            own = self.per_address.get(host, ())
            if len(own) >= per_address:
                victim = longest_idle(own, now)
                if victim is None:
                    return ("too many connections from %s (max_connections_per_address %d)"
                            % (host, per_address))
                self._evict(victim, "closed to admit a new connection from the same address, the longest "
                                    "idle of %d (max_connections_per_address)" % len(own))
                return None                 # one out, one in: the server holds no more
        sessions = list(sessions)
        if not self.limit or len(sessions) < self.limit:
            return None
        victim = longest_idle(sessions, now)
        if victim is None:
            return "server full: %d connections open, none idle (max_connections)" % len(sessions)
        self._evict(victim, "closed to admit a new connection, the longest idle of %d (max_connections)"
                    % len(sessions))
        return None

    def admitted(self, host: Optional[str], session: Any) -> None:
        """``session`` from ``host`` (None: a unix-socket peer) is open; called with no
        await since ``refusal`` admitted it, so no other newcomer came in between."""
        if host is not None:
            self.per_address.setdefault(host, set()).add(session)
            self._address_of[session] = host

    def left(self, session: Any) -> None:
        """``session`` has ended."""
        host = self._address_of.pop(session, None)
        if host is not None:
            own = self.per_address[host]
            own.discard(session)
            if not own:
                del self.per_address[host]

    def _evict(self, victim: Any, reason: str) -> None:
        """Close ``victim`` (idle) to make room; its address no longer counts it."""
        victim.evict(reason)
        self.left(victim)

    async def refuse(self, connection: Connection, reason: str) -> None:
        """Tell the client ``reason`` as the answer to its first request, then close."""
        self._log(connection, reason)
        if self.refusing >= REFUSALS_AT_ONCE:
            await connection.close()
            return
        self.refusing += 1
        try:
            answer = answer_refused if isinstance(connection, HTTPConnection) else _answer_with
            await within(answer(connection, reason), REFUSAL_SECONDS)
        except (AsyncRPCError, OSError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.refusing -= 1
            await connection.close()

    async def shut_out(self, connection: Connection) -> None:
        """Close a client its address does not allow to connect, telling it nothing."""
        self._log(connection, "not in allow")
        await connection.close()

    def log_refusal(self, connection: Connection, reason: str) -> None:
        """Log (at most once a minute per address) why a connection was closed."""
        self._log(connection, reason)

    def _log(self, connection: Connection, reason: str) -> None:
        host = connection.peer_host or "unix"
        now = time.monotonic()
        if now - self._logged.get(host, -LOG_INTERVAL_SECONDS) < LOG_INTERVAL_SECONDS:
            return
        if len(self._logged) > 10000:           # a flood from many addresses: forget the old
            self._logged = {h: t for h, t in self._logged.items() if now - t < LOG_INTERVAL_SECONDS}
        self._logged[host] = now
        self.logger.warning("[Client %s] refused: %s", connection.address, reason)


def longest_idle(sessions: Iterable[Session], now: float) -> Optional[Session]:
    """The idle session silent the longest (None if none is idle): set up with no
    request in hand and no answer owed (``silent_since``), or still in its setup
    ``SETUP_IDLE_SECONDS`` after it was accepted (silent since its last bytes)."""
    best, best_since = None, 0.0
    for session in sessions:
        if session.setup_done:
            since = session.silent_since()
            if since is None:
                continue
        elif session.evicted or now - session.opened_at < SETUP_IDLE_SECONDS:
            continue
        else:
            since = session.connection.last_activity
        if best is None or since < best_since:
            best, best_since = session, since
    return best


async def _answer_with(connection: Connection, reason: str) -> None:
    """Read the client's setup (answering a header request with an empty block) and
    its first request; answer that with ``{"invoke-error": {"message": reason}}``."""
    wants_headers = False
    for _ in range(MAX_SETUP_LINES):
        line = await connection.recv_line()
        name, _, value = line.partition(":")
        if name.strip().lower() == "needs-headers" and value.strip() == "true":
            wants_headers = True
        if not line.strip():
            break
    else:
        return
    if wants_headers:
        await connection.send_lines(protocol.header_block_lines({}))
    await connection.recv_message()
    await connection.send_message(protocol.invoke_error(reason))
