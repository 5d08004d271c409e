"""The HTTP transport: raw bytes over TCP, for a session that parses HTTP itself.

An HTTP session (``httpsession``) hands bytes to a sans-I/O parser, so its
connection carries bytes, not lines: ``HTTPProtocol`` buffers what arrives (after a
trusted proxy's PROXY header, read as ``stream.LineProtocol`` reads it, whose flow
control and PROXY handling it inherits) and ``HTTPConnection`` reads and writes
those bytes.  A trusted proxy's PROXY header is optional here: an HTTP proxy tells
the client by ``X-Forwarded-For`` instead, so a connection whose first bytes cannot
begin a PROXY header is read as HTTP from the proxy itself.  Addresses, the PROXY header and closing are ``StreamConnection``'s, so
admission, the access rules and the log see an HTTP client as any TCP client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from .deadline import within
from .exceptions import ConnectionClosedError
from .proxyproto import ABSENT, begins_header
from .stream import READ_BYTES, LineProtocol, StreamConnection

PAUSE_READING_BYTES = 4 * READ_BYTES
"""Bytes buffered unread before the peer is slowed down (pipelined requests)."""
LINGER_BYTES = 64 * 1024
"""Most bytes read and dropped after an error answer before closing anyway."""


class HTTPProtocol(LineProtocol):
    """Buffers the bytes a client sends for one reader (``read``), with flow control."""

    def __init__(self, on_connection: Any = None, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        super().__init__(on_connection=on_connection, loop=loop)
        self._received = bytearray()
        self._stopped = False
        self._undecided: Optional[bytes] = None
        """A trusted proxy's first bytes while they may still begin a PROXY header."""

    def expect_proxy_header(self) -> None:
        """A trusted proxy's connection: a PROXY header may come first (or not)."""
        super().expect_proxy_header()
        self._undecided = b""

    def _past_proxy_header(self, data: bytes) -> Optional[bytes]:
        if self._undecided is not None:
            seen = self._undecided + data
            header = begins_header(seen)
            if header is None:
                self._undecided = seen
                return None
            self._undecided = None
            if not header:                      # plain HTTP from the proxy itself
                self._proxy_parser = None
                if self.proxy_waiter is not None and not self.proxy_waiter.done():
                    self.proxy_waiter.set_result(ABSENT)
                return seen
            data = seen
        return super()._past_proxy_header(data)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self._discard or self._proxy_parser is not None:
            data = self._past_proxy_header(data) or b""
        if data:
            self._received += data
            if len(self._received) > PAUSE_READING_BYTES and not self._read_paused:
                self.transport.pause_reading()
                self._read_paused = True
            self._wake()

    def stop(self) -> None:
        """Server shutdown: a ``read`` waiting for bytes returns empty at once."""
        self._stopped = True
        self._wake()

    async def read(self) -> bytes:
        """Every byte received and not read yet, waiting for some; empty at the end of
        the stream (or once ``stop`` was called and nothing is buffered)."""
        while not self._received:
            if self._eof or self._stopped:
                return b""
            await self._wait_for_data(-1)
        data = bytes(self._received)
        self._received.clear()
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        return data


class HTTPConnection(StreamConnection):
    """A TCP connection (plain or TLS) carrying HTTP/1.1 as bytes (``read``, ``write``,
    ``drain``).

    It carries no lines: ``recv_line`` reports the stream closed (a client the
    connection limits refuse is answered by ``httpsession.answer_refused``)."""

    def __init__(self, http_protocol: HTTPProtocol, routes: Any) -> None:
        """``routes``: what answers this connection's requests (an
        ``httpsession.Routes``), given by its listener."""
        super().__init__(http_protocol, -1)
        self._http = http_protocol
        self.routes = routes
        self.secure = self._transport.get_extra_info("ssl_object") is not None
        """The connection is HTTPS (what it carries cannot be read on the way)."""

    @property
    def socket_host(self) -> Optional[str]:
        """The address the socket is connected to (a proxy's, behind one)."""
        return self._own_host()

    def stop_receiving(self) -> bool:
        self._stop_receiving = True
        self._http.stop()
        return False

    async def recv_line(self) -> str:
        raise ConnectionClosedError("an HTTP connection carries no lines")

    def buffered_line(self) -> Optional[str]:
        return None

    async def read(self) -> bytes:
        """The bytes received since the last read (waits for some); empty at the end."""
        return await self._http.read()

    def write(self, data: bytes) -> None:
        """``ConnectionClosedError`` if the connection is closed."""
        self._write(data)

    async def drain(self) -> None:
        """Wait while the peer reads slower than answers are written."""
        if self._http.must_drain:
            await self._http.drain()

    async def linger(self, seconds: float) -> None:
        """Before closing after an error answer: stop writing, then read and drop what
        the client still sends (until it closes, ``seconds`` pass or ``LINGER_BYTES``
        were dropped).  Closing with unread bytes would reset the connection, and a
        reset can destroy the answer before the client has read it."""
        transport = self._transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        try:
            await within(self._drop(LINGER_BYTES), seconds)
        except asyncio.TimeoutError:
            pass

    async def _drop(self, most: int) -> None:
        dropped = 0
        while dropped < most:
            data = await self._http.read()
            if not data:
                return
            dropped += len(data)
