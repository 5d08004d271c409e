"""asyncrpc client: lazy connect, setup, one request at a time, bounded retries.

Behaviour of bitbake's client (docs/protocol.md §6), kept on purpose: a request that
fails on a transport error is re-sent on a fresh connection, 4 attempts in all,
then ``ConnectionError``.  Two deliberate improvements: the TCP connect is bounded
by the timeout, and after an invoke-error the client drops the connection the
server is closing, so the next call does not waste an attempt on it.

Unlike bitbake's client, a failed attempt is logged at DEBUG only: a request that
fails for good is an outage of the server, reported once through an ``OutageLog``
(``outage``) however often it is retried, and its end once when an answer comes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, Optional

from . import protocol
from .address import ADDR_TYPE_TCP, ADDR_TYPE_UNIX, parse_address
from .connection import Connection
from .stream import open_tcp_connection, open_unix_connection
from .websocket import open_websocket_connection
from .exceptions import ConnectionClosedError, InvokeError, ProtocolError
from .outage import OutageLog, shared

ATTEMPTS = 4
DEFAULT_TIMEOUT = 30


_END = object()
SHARED = object()
"""``outages`` default: the process's ``OutageLog`` for the client's logger."""


class AsyncClient:
    """Base of protocol clients; subclasses add one coroutine per command."""

    def __init__(self, proto_name: str, proto_version: str, logger: logging.Logger,
                 timeout: float = DEFAULT_TIMEOUT, server_headers: bool = False,
                 headers: Optional[Dict[str, str]] = None, outages: Any = SHARED) -> None:
        """``outages``: where a request that fails for good, and the next answer, are
        reported (default: shared by the process's clients with this logger; None:
        the owner reports them, as a mirror does)."""
        self.proto_name = proto_name
        self.proto_version = proto_version
        self.logger = logger
        self.timeout = timeout
        self.needs_server_headers = server_headers
        self.headers = dict(headers or {})
        self.server_headers: Dict[str, str] = {}
        self.max_chunk = protocol.MAX_CHUNK
        self.socket: Optional[Connection] = None
        self._connect_sock: Optional[Callable[[], Awaitable[Connection]]] = None
        self.address: Optional[str] = None
        self.tls_context: Optional[ssl.SSLContext] = None
        """Checks a ``wss://`` server's certificate (None: the system's CAs)."""
        self.outages: Optional[OutageLog] = shared(logger) if outages is SHARED else outages

    # -- choosing where to connect (nothing happens on the network yet)
    async def connect_tcp(self, address: str, port: int) -> None:
        self.address = "%s:%s" % (address, port)
        self._connect_sock = lambda: open_tcp_connection(address, port, self.timeout,
                                                         max_chunk=self.max_chunk)

    async def connect_unix(self, path: str) -> None:
        self.address = "unix://" + path
        self._connect_sock = lambda: open_unix_connection(path, self.timeout,
                                                          max_chunk=self.max_chunk)

    async def connect_websocket(self, uri: str) -> None:
        self.address = uri
        self._connect_sock = lambda: open_websocket_connection(uri, self.timeout, ssl=self.tls_context)

    async def connect_address(self, addr: str) -> None:
        """Choose the transport from an address string."""
        kind, args = parse_address(addr)
        if kind == ADDR_TYPE_TCP:
            await self.connect_tcp(*args)
        elif kind == ADDR_TYPE_UNIX:
            await self.connect_unix(*args)
        else:
            await self.connect_websocket(*args)

    # -- session
    async def setup_connection(self) -> None:
        lines = protocol.client_setup_lines(self.proto_name, self.proto_version,
                                            self.needs_server_headers, self.headers)
        await self.socket.send_lines(lines)
        self.server_headers = {}
        if self.needs_server_headers:
            header_lines = []
            while True:
                line = await self.socket.recv_line()
                if not line.strip():
                    break
                header_lines.append(line)
            self.server_headers = protocol.parse_header_block(header_lines)

    async def connect(self) -> None:
        if self.socket is None:
            if self._connect_sock is None:
                raise ConnectionError("no address set: call connect_tcp/connect_unix/connect_websocket")
            self.socket = await self._connect_sock()
            try:
                await self.setup_connection()
            except BaseException:
                await self.disconnect()
                raise

    async def get_header(self, tag: str, default: Any) -> Any:
        await self.connect()
        return self.server_headers.get(tag, default)

    async def disconnect(self) -> None:
        if self.socket is not None:
            socket, self.socket = self.socket, None
            try:
                await socket.close()
            except (OSError, ConnectionError):
                pass

    async def close(self) -> None:
        await self.disconnect()

    async def _send_wrapper(self, proc: Callable[[], Awaitable[Any]]) -> Any:
        attempt = 1
        while True:
            try:
                await self.connect()
                result = await proc()
            except (OSError, ConnectionError, ConnectionClosedError, ProtocolError,
                    asyncio.TimeoutError) as exc:
                self.logger.debug("Error talking to server %s (attempt %d of %d): %s", self.address,
                                  attempt, ATTEMPTS, exc)
                await self.disconnect()
                if attempt >= ATTEMPTS:
                    if self.outages is not None:
                        self.outages.failed(str(self.address), str(exc) or type(exc).__name__,
                                            nonsense=isinstance(exc, ProtocolError))
                    if isinstance(exc, ConnectionError):
                        raise
                    raise ConnectionError(str(exc)) from exc
                attempt += 1
            else:
                if self.outages is not None:
                    self.outages.recovered(str(self.address))
                return result

    async def invoke(self, message: Any) -> Any:
        async def proc() -> Any:
            await self.socket.send_message(message)
            return await self.socket.recv_message()

        result = await self._send_wrapper(proc)
        error = protocol.invoke_error_text(result)
        if error is not None:
            await self.disconnect()      # the server closes after an invoke-error
            raise InvokeError(error)
        return result

    async def invoke_pipelined(self, messages: Iterable[Any], window: int = 64) -> AsyncIterator[Any]:
        """Yield the answers to ``messages`` in order, keeping up to ``window`` requests
        in flight on one connection (the server answers a connection's requests in order).

        Saves a round trip per request for bulk work such as imports.  There are no
        retries: after a transport error it is unknown which requests took effect, so
        ``ConnectionError`` propagates and the caller decides.  An invoke-error answer
        raises ``InvokeError`` (the server closes the connection after it).
        """
        await self.connect()
        socket = self.socket
        pending = 0
        requests = iter(messages)
        more = True
        try:
            while True:
                while more and pending < window:
                    message = next(requests, _END)
                    if message is _END:
                        more = False
                    else:
                        await socket.send_message(message)
                        pending += 1
                if not pending:
                    return
                result = await socket.recv_message()
                pending -= 1
                error = protocol.invoke_error_text(result)
                if error is not None:
                    raise InvokeError(error)
                yield result
        except (OSError, ConnectionClosedError, ProtocolError, asyncio.TimeoutError) as exc:
            await self.disconnect()
            raise ConnectionError("pipelined requests to %s failed: %s" % (self.address, exc)) from exc
        except BaseException:
            await self.disconnect()
            raise

    async def ping(self) -> Any:
        return await self.invoke({"ping": {}})

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


class Client:
    """Blocking wrapper: runs an ``AsyncClient`` on a private event loop."""

    def __init__(self) -> None:
        self.client = self._get_async_client()
        self.loop: Optional[asyncio.AbstractEventLoop] = asyncio.new_event_loop()
        # As bitbake does: make this loop current, replacing any stale one.
        asyncio.set_event_loop(self.loop)
        self._add_methods("connect_tcp", "connect_websocket", "connect_address", "ping")

    def _get_async_client(self) -> AsyncClient:
        raise NotImplementedError

    def _get_downcall_wrapper(self, downcall: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.loop is None:
                raise ConnectionError("client is closed")
            return self.loop.run_until_complete(downcall(*args, **kwargs))

        wrapper.__name__ = getattr(downcall, "__name__", "downcall")
        wrapper.__doc__ = getattr(downcall, "__doc__", None)
        return wrapper

    def _add_methods(self, *methods: str) -> None:
        for name in methods:
            setattr(self, name, self._get_downcall_wrapper(getattr(self.client, name)))

    def connect_unix(self, path: str) -> None:
        """Unlike TCP, connects at once (as bitbake's blocking client does)."""
        self.loop.run_until_complete(self.client.connect_unix(path))
        self.loop.run_until_complete(self.client.connect())

    @property
    def max_chunk(self) -> int:
        return self.client.max_chunk

    @max_chunk.setter
    def max_chunk(self, value: int) -> None:
        self.client.max_chunk = value

    def disconnect(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.client.close())

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.client.close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
        self.loop = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        self.close()
        return False
