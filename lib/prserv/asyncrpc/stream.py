"""The stream transport: connections over TCP or a unix socket.

A ``StreamConnection`` reads through ``LineProtocol``, an ``asyncio.Protocol``
feeding the sans-I/O ``LineBuffer`` -- cheaper per request than
``StreamReader.readline`` -- that first takes a trusted proxy's PROXY header when
one is expected.  A server pumps messages out of it (``pump_messages``,
``_MessagePump``) straight from ``data_received``, so a request that needs no
waiting is answered without a task switch.  ``open_tcp_connection`` /
``open_unix_connection`` open one as a client.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Callable, Deque, List, Optional

from . import protocol
from .connection import Connection, Deliver
from .deadline import within
from .exceptions import ConnectionClosedError, ReadTimeoutError
from .proxyproto import ProxyHeader, ProxyHeaderError, ProxyHeaderParser

_PAUSE_READING_LINES = 256   # pipelined lines buffered before the peer is slowed down
_RESUME_READING_LINES = 64
_YIELD_EVERY_BYTES = 32 * 1024   # a long streamed answer lets other clients in this often
READ_BYTES = 64 * 1024
"""Most bytes one read of an asyncio transport asks for (asyncio's default, 256 KiB,
is over glibc's mmap threshold of 128 KiB: unless some earlier free happened to raise
that threshold, every read then cost an mmap, an mremap and a munmap -- about 10 µs
of server CPU per get-pr on asyncio, in some server processes and not others).  A
request is a line of about 150 bytes; 64 KiB still holds hundreds of pipelined ones.
uvloop reads into a buffer of its own and has no such setting."""


class LineProtocol(asyncio.Protocol):
    """Buffers complete lines for one reader coroutine, with flow control both ways."""

    def __init__(self, max_line: int = protocol.DEFAULT_MAX_LINE,
                 on_connection: Optional[Callable[["LineProtocol"], None]] = None,
                 loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """``loop``: the running loop, if the caller has it at hand (asking for it
        costs a system call per connection before Python 3.12)."""
        self.loop = loop or asyncio.get_running_loop()
        self._buffer = protocol.LineBuffer(max_line)
        self._lines: Deque[Optional[bytes]] = collections.deque()
        self._waiter: Optional[asyncio.Future] = None
        self._drain_waiter: Optional[asyncio.Future] = None
        self._eof = False
        self._lost = False
        self._read_paused = False
        self._write_paused = False
        self._on_connection = on_connection
        self._consumer: Optional[Callable[[], None]] = None
        self.transport: Optional[asyncio.Transport] = None
        self.last_activity = time.monotonic()
        self._proxy_parser: Optional[ProxyHeaderParser] = None
        self.proxy_waiter: Optional["asyncio.Future[ProxyHeader]"] = None
        """Set when the peer is a trusted proxy: the PROXY header, once read."""

    def expect_proxy_header(self) -> None:
        """The first bytes are a PROXY header (v1 or v2): parse it before any line."""
        self._proxy_parser = ProxyHeaderParser()
        self.proxy_waiter = self.loop.create_future()

    def _take_proxy_header(self, data: bytes) -> Optional[bytes]:
        """Feed the header parser; the bytes after a complete header, else None."""
        assert self._proxy_parser is not None and self.proxy_waiter is not None
        try:
            result = self._proxy_parser.feed(data)
        except ProxyHeaderError as exc:
            self._proxy_parser = None
            self._discard = True                # nothing after a bad header is read
            if not self.proxy_waiter.done():
                self.proxy_waiter.set_exception(exc)
            return None
        if result is None:
            return None
        header, rest = result
        self._proxy_parser = None
        if not self.proxy_waiter.done():
            self.proxy_waiter.set_result(header)
        return rest

    def _no_proxy_header(self) -> None:
        """The stream ended: a PROXY header still awaited will not come."""
        waiter = self.proxy_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosedError("closed before its PROXY header"))

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if getattr(transport, "max_size", 0) > READ_BYTES:
            transport.max_size = READ_BYTES     # type: ignore[attr-defined]
        if self._on_connection is not None:
            self._on_connection(self)

    _discard = False

    def _past_proxy_header(self, data: bytes) -> Optional[bytes]:
        """What of ``data`` comes after a PROXY header still expected (None: nothing, or
        everything is dropped after a bad header)."""
        if self._discard:
            return None
        return self._take_proxy_header(data)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self._discard or self._proxy_parser is not None:
            data = self._past_proxy_header(data)    # type: ignore[assignment]
            if not data:
                return
        lines = self._buffer.feed(data)
        if lines:
            self._lines.extend(lines)
            if len(self._lines) > _PAUSE_READING_LINES and not self._read_paused:
                self.transport.pause_reading()
                self._read_paused = True
            self._wake()

    def eof_received(self) -> bool:
        """The peer will send nothing more, but may still read: keep the transport
        open for the answers still owed (``printf ... | nc -N`` half-closes so)."""
        self._eof = True
        self._no_proxy_header()
        self._wake()
        return True

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._no_proxy_header()
        self._eof = self._lost = True
        self._wake()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosedError("connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by StreamConnection
    def _wake(self) -> None:
        if self._consumer is not None:
            self._consumer()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def set_consumer(self, consumer: Optional[Callable[[], None]]) -> None:
        """Push mode: call ``consumer()`` from ``data_received`` / end of stream, instead
        of waking ``readline``.  The consumer takes lines with ``next_line``."""
        self._consumer = consumer

    def next_line(self) -> Optional[bytes]:
        """The next complete line, or None if none is buffered (never waits).

        ``ConnectionClosedError`` once the stream ended and every line was taken;
        ``LineTooLongError`` in place of a line over the limit.
        """
        if not self._lines:
            if self._eof:
                raise ConnectionClosedError("connection closed by peer")
            return None
        line = self._lines.popleft()
        if self._read_paused and len(self._lines) < _RESUME_READING_LINES:
            self._read_paused = False
            self.transport.resume_reading()
        if line is protocol.LINE_TOO_LONG:
            raise protocol.LineTooLongError("line longer than %d bytes" % self._buffer.max_line)
        return line

    async def readline(self, timeout: float = -1) -> bytes:
        while True:
            line = self.next_line()
            if line is not None:
                return line
            await self._wait_for_data(timeout)

    async def _wait_for_data(self, timeout: float) -> None:
        loop = self.loop
        waiter = self._waiter = loop.create_future()
        timer = None
        if timeout is not None and timeout >= 0:
            timer = loop.call_later(timeout, _expire, waiter, timeout)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    @property
    def must_drain(self) -> bool:
        """Whether a writer has to await ``drain()`` (cheap test before the coroutine)."""
        return self._lost or self._write_paused

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionClosedError("connection lost")
        if not self._write_paused:
            return
        waiter = self._drain_waiter = self.loop.create_future()
        await waiter


def _expire(waiter: asyncio.Future, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeoutError("no data within %g s" % timeout))


class StreamConnection(Connection):
    """A TCP or unix stream connection speaking newline-framed messages."""

    def __init__(self, line_protocol: LineProtocol, timeout: float = -1,
                 max_chunk: int = protocol.MAX_CHUNK,
                 max_message: int = protocol.MAX_ANSWER_SIZE,
                 max_depth: Optional[int] = None) -> None:
        super().__init__(max_message, max_depth)
        self._protocol = line_protocol
        self._transport = line_protocol.transport
        self._peer = self._transport.get_extra_info("peername")
        """Read once: the trust, access and log decisions all need it, and uvloop
        cannot tell a closed transport's peer."""
        self.timeout = timeout
        self.max_chunk = max_chunk
        self._pump: Optional["_MessagePump"] = None

    @property
    def last_activity(self) -> float:
        return self._protocol.last_activity

    def stop_receiving(self) -> bool:
        self._stop_receiving = True
        pump = self._pump
        if pump is None:
            return False
        return pump.stop()

    def _own_address(self) -> str:
        peer = self._peer
        if isinstance(peer, tuple):
            return "%s:%s" % (peer[0], peer[1])
        return str(peer or self._transport.get_extra_info("sockname") or "unix")

    def _own_host(self) -> Optional[str]:
        peer = self._peer
        return str(peer[0]) if isinstance(peer, tuple) else None

    def expect_proxy_header(self) -> None:
        """The peer is a trusted proxy: its PROXY header comes before any line."""
        self._protocol.expect_proxy_header()

    @property
    def expects_proxy_header(self) -> bool:
        return self._protocol.proxy_waiter is not None and self.forwarded is None

    async def read_proxy_header(self) -> None:
        """Wait for the PROXY header (``ProxyHeaderError``, ``ConnectionClosedError``);
        the client it names becomes this connection's peer (a proxy's health check,
        ``LOCAL`` or ``UNKNOWN``, stays the proxy)."""
        header = await self._protocol.proxy_waiter
        if header.source_host is not None:
            self.forwarded = (header.source_host, header.source_port)

    @property
    def busy(self) -> bool:
        pump = self._pump
        return pump is not None and pump.handling

    async def recv_line(self) -> str:
        return protocol.decode_line(await self._protocol.readline(self.timeout))

    def buffered_line(self) -> Optional[str]:
        line = self._protocol.next_line()
        return None if line is None else protocol.decode_line(line)

    async def send_lines(self, lines: List[str]) -> None:
        self._write(("".join(line + "\n" for line in lines)).encode("utf-8"))
        await self._protocol.drain()

    async def send_message(self, message: Any) -> None:
        if isinstance(message, protocol.JSONStream):
            await self._send_stream(message)
            return
        self._write(protocol.encode_message(message, self.max_chunk))
        if self._protocol.must_drain:
            await self._protocol.drain()

    def send_message_now(self, message: Any) -> bool:
        if self._protocol.must_drain or isinstance(message, protocol.JSONStream):
            return False
        self._write(protocol.encode_message(message, self.max_chunk))
        return True

    async def _send_stream(self, message: protocol.JSONStream) -> None:
        """Frame and write the pieces as they come; wait while the peer is slow and
        give the event loop to other clients every ``_YIELD_EVERY_BYTES``."""
        framer = protocol.StreamFramer(self.max_chunk)
        unyielded = 0
        async for piece in message.pieces:
            text = framer.feed(piece)
            if not text:
                continue
            self._write(text.encode("utf-8"))
            unyielded += len(text)
            if self._protocol.must_drain:
                await self._protocol.drain()
                unyielded = 0
            elif unyielded >= _YIELD_EVERY_BYTES:
                await asyncio.sleep(0)
                unyielded = 0
        self._write(framer.finish().encode("utf-8"))
        if self._protocol.must_drain:
            await self._protocol.drain()

    async def pump_messages(self, deliver: Deliver) -> None:
        """Deliver messages from ``data_received`` itself (see ``Connection.pump_messages``)."""
        pump = self._pump = _MessagePump(self._protocol, self._reader, deliver)
        if self._stop_receiving:
            pump.stop()
        self._protocol.set_consumer(pump.run)
        try:
            pump.run()
            if await pump.finished is _PEER_CLOSED:
                raise ConnectionClosedError("connection closed by peer")
        finally:
            self._protocol.set_consumer(None)
            self._pump = None
            pump.cancel()

    def _write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionClosedError("connection is closed")
        self._transport.write(data)

    async def close(self) -> None:
        self._transport.close()


_PEER_CLOSED = object()
"""``_MessagePump.finished``'s result when the stream ended."""


class _MessagePump:
    """Turns a ``LineProtocol``'s lines into ``deliver`` calls as they arrive.

    ``run`` is the protocol's consumer: it handles every buffered line in the
    caller's stack frame.  While a delivered message's task is pending, lines stay
    buffered (the protocol's flow control applies) and ``run`` does nothing; the
    task's completion resumes it.  ``finished`` ends with None (stop),
    ``_PEER_CLOSED`` (the end of every short connection: a result, not an
    exception, whose traceback would tie the session's objects into a cycle left
    to the garbage collector), the protocol or connection error, or cancellation.
    """

    def __init__(self, line_protocol: LineProtocol, reader: protocol.MessageReader,
                 deliver: Deliver) -> None:
        self._protocol = line_protocol
        self._reader = reader
        self._deliver = deliver
        self._pending: Optional[asyncio.Future] = None
        self._stopping = False
        self.finished: asyncio.Future = line_protocol.loop.create_future()

    def run(self) -> None:
        if self._pending is not None or self.finished.done():
            return
        next_line, feed_line, deliver = self._protocol.next_line, self._reader.feed_line, self._deliver
        try:
            while True:
                line = next_line()
                if line is None:
                    return
                message = feed_line(protocol.decode_line(line))
                if message is protocol.INCOMPLETE:
                    continue
                outcome = deliver(message)
                if outcome is True:
                    continue
                if outcome is False:
                    self.finished.set_result(None)
                    return
                self._pending = outcome
                outcome.add_done_callback(self._delivered)
                return
        except ConnectionClosedError:
            self.finished.set_result(_PEER_CLOSED)
        except Exception as exc:  # ProtocolError, or a bug below
            self.finished.set_exception(exc)

    def _delivered(self, outcome: asyncio.Future) -> None:
        self._pending = None
        self._protocol.last_activity = time.monotonic()    # a long request is not idleness
        if self.finished.done():
            return
        if outcome.cancelled():
            self.finished.cancel()
        elif outcome.exception() is not None:
            self.finished.set_exception(outcome.exception())
        elif not outcome.result() or self._stopping:
            self.finished.set_result(None)
        else:
            self.run()

    @property
    def handling(self) -> bool:
        """A delivered message's task is still running."""
        return self._pending is not None

    def stop(self) -> bool:
        """Deliver nothing more; end at once if no message is in hand.  True if idle."""
        self._stopping = True
        if self._pending is None:
            if not self.finished.done():
                self.finished.set_result(None)
            return True
        return False

    def cancel(self) -> None:
        """Stop a delivered message's task still running (the session is over)."""
        if self._pending is not None:
            self._pending.cancel()


# --------------------------------------------------------------------------- opening

def _stream_connection(transport_and_protocol: tuple, timeout: float, **limits: int) -> StreamConnection:
    _, line_protocol = transport_and_protocol
    return StreamConnection(line_protocol, timeout, **limits)


async def open_tcp_connection(host: str, port: int, timeout: float = -1,
                              max_line: int = protocol.DEFAULT_MAX_LINE,
                              **limits: int) -> StreamConnection:
    """Connect over TCP; the connect itself is bounded by ``timeout`` too."""
    loop = asyncio.get_running_loop()
    connecting = loop.create_connection(lambda: LineProtocol(max_line, loop=loop), host, port)
    return _stream_connection(await within(connecting, timeout), timeout, **limits)


async def open_unix_connection(path: str, timeout: float = -1,
                               max_line: int = protocol.DEFAULT_MAX_LINE,
                               **limits: int) -> StreamConnection:
    """Connect to a unix socket (paths beyond the AF_UNIX limit work)."""
    from .sockets import connect_unix_socket

    loop = asyncio.get_running_loop()
    sock = await connect_unix_socket(path)
    pair = await loop.create_unix_connection(lambda: LineProtocol(max_line, loop=loop), sock=sock)
    return _stream_connection(pair, timeout, **limits)
