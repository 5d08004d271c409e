"""The transport interface: what session and client code use of a connection.

A ``Connection`` carries lines for the setup and JSON messages afterwards; each
transport implements it (``stream``: TCP and unix sockets, ``websocket``), so the
session, admission and client code above never look at the transport.  Here: the
interface, with the message reading and pumping every transport shares.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, List, Optional, Tuple, Union

from . import protocol


def format_host_port(host: str, port: int) -> str:
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)

Deliver = Callable[[Any], "Union[bool, asyncio.Future]"]
"""Takes one message; returns True (go on), False (stop), or a future of either."""


class Connection:
    """What server and client code use: lines for setup, messages afterwards."""

    timeout: float = -1

    def __init__(self, max_message: int = protocol.MAX_ANSWER_SIZE,
                 max_depth: Optional[int] = None) -> None:
        self._reader = protocol.MessageReader(max_message, max_depth)
        self._stop_receiving = False
        self._receiving = False
        self._handling = False
        self._last_activity = time.monotonic()

    @property
    def last_activity(self) -> float:
        """``time.monotonic()`` when bytes last arrived, or a request that had to wait
        was done (a long-poll or a long export is not idleness): idle-timeout bookkeeping."""
        return self._last_activity

    def stop_receiving(self) -> bool:
        """Deliver no more messages (``pump_messages`` returns once the one in hand is
        done).  True if the connection is idle waiting for a message: then nothing is
        in flight and the caller may simply close it."""
        self._stop_receiving = True
        return self._receiving

    task: "Optional[asyncio.Task]" = None
    """The task serving this connection (its listener sets it)."""

    forwarded: Optional[Tuple[str, Optional[int]]] = None
    """The client behind a trusted proxy, as the proxy told (PROXY header,
    ``X-Forwarded-For``): (host, port or None)."""

    @property
    def address(self) -> str:
        """The peer as logs show it (``client (via proxy)`` behind a trusted proxy)."""
        own = self._own_address()
        if self.forwarded is None:
            return own
        host, port = self.forwarded
        return "%s (via %s)" % (host if port is None else format_host_port(host, port), own)

    @property
    def peer_host(self) -> Optional[str]:
        """The client's IP address (the real one behind a trusted proxy); None for a
        unix-socket peer (this host)."""
        if self.forwarded is not None:
            return self.forwarded[0]
        return self._own_host()

    def _own_address(self) -> str:
        raise NotImplementedError

    def _own_host(self) -> Optional[str]:
        raise NotImplementedError

    @property
    def expects_proxy_header(self) -> bool:
        """The peer is a trusted proxy that sends a PROXY header first."""
        return False

    @property
    def busy(self) -> bool:
        """A delivered message is still being handled (its answer is not given yet)."""
        return self._handling

    async def recv_line(self) -> str:
        """Next line, without its ``\\n``; ``ConnectionClosedError`` at end of stream."""
        raise NotImplementedError

    def buffered_line(self) -> Optional[str]:
        """The next line if it has arrived already, else None (then await
        ``recv_line``): a client's setup lines usually come in one packet."""
        return None

    async def send_lines(self, lines: List[str]) -> None:
        raise NotImplementedError

    async def send_message(self, message: Any) -> None:
        raise NotImplementedError

    def send_message_now(self, message: Any) -> bool:
        """Send without waiting if the transport can take it now; False if not (then
        nothing was sent: await ``send_message``)."""
        return False

    async def close(self) -> None:
        raise NotImplementedError

    async def recv_message(self) -> Any:
        """Next message (chunk streams reassembled)."""
        reader = self._reader
        while True:
            message = reader.feed_line(await self.recv_line())
            if message is not protocol.INCOMPLETE:
                return message

    async def pump_messages(self, deliver: "Deliver") -> None:
        """Hand every message to ``deliver`` until it says stop (see ``Deliver``).

        Returns when ``deliver`` gives False; raises ``ProtocolError`` for a malformed
        message and ``ConnectionClosedError`` at the end of the stream.  The next
        message is not delivered before the previous one's task (if any) finished.
        """
        while not self._stop_receiving:
            self._receiving = True
            try:
                message = await self.recv_message()
            finally:
                self._receiving = False
            outcome = deliver(message)
            if isinstance(outcome, asyncio.Future):
                self._handling = True
                try:
                    outcome = await outcome
                finally:
                    self._handling = False
                    self._last_activity = time.monotonic()     # a long request is not idleness
            if not outcome:
                return
