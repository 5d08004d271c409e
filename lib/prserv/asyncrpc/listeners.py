"""Listeners: endpoints handing each accepted connection to the server.

A listener binds one address (TCP, a unix socket, a websocket), wraps each accepted
client in its ``Connection`` kind and calls ``handler(connection)`` -- the server's
``AsyncServer.admit``, the one hand-off every kind of listener uses (``session``
draws the seam) -- in a task of its own, which it records on the connection.  On
``stop`` it cancels the sessions still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, Awaitable, Callable, Dict, Optional, Set

from .address import format_tcp_address
from .connection import Connection
from .deadline import within
from .httpstream import HTTPConnection, HTTPProtocol
from .limits import Limits
from .sockets import bind_unix_socket, set_tcp_listener_options
from .stream import LineProtocol, StreamConnection
from .websocket import WebsocketConnection, serve

ConnectionHandler = Callable[[Connection], Awaitable[None]]
"""What a listener calls per accepted connection (``AsyncServer.admit``)."""


class Listener:
    """One listening endpoint; calls ``handler(connection)`` per accepted client."""

    address: str = ""
    private = False
    """A listener for this program's own processes (``AsyncServer.start_private_server``):
    its address is not handed to clients."""

    def __init__(self, handler: ConnectionHandler, logger: logging.Logger,
                 limits: Optional[Limits] = None) -> None:
        self.handler = handler
        self.logger = logger
        limits = limits or Limits()
        self.max_line = limits.line_limit
        self.max_message = limits.max_message
        self.max_depth = limits.max_depth
        self.server: Any = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        """The loop serving this listener (set as it starts)."""
        self._tasks: Set[asyncio.Task] = set()

    def _accepted(self, line_protocol: LineProtocol) -> None:
        connection = self._connection(line_protocol)
        self._prepare(connection)
        task = connection.task = line_protocol.loop.create_task(self.handler(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _connection(self, line_protocol: LineProtocol) -> StreamConnection:
        """The connection an accepted client's protocol is wrapped in."""
        return StreamConnection(line_protocol, -1, max_message=self.max_message, max_depth=self.max_depth)

    def _prepare(self, connection: StreamConnection) -> None:
        """Called for each accepted connection before its session starts."""

    def _protocol_factory(self) -> LineProtocol:
        return LineProtocol(self.max_line, on_connection=self._accepted, loop=self.loop)

    async def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting connections (open ones go on)."""
        if self.server is not None:
            self.server.close()

    async def stop(self) -> None:
        """Stop accepting, end every open session, and wait for them."""
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await within(self.server.wait_closed(), 5)
        self.cleanup()

    def cleanup(self) -> None:
        pass


class TCPListener(Listener):
    def __init__(self, host: str, port: int, handler: ConnectionHandler, logger: logging.Logger,
                 *, reuseport: bool = False, limits: Optional[Limits] = None,
                 trusts_proxy: Optional[Callable[[Optional[str]], bool]] = None) -> None:
        """``trusts_proxy(host)``: a connection from ``host`` starts with a PROXY header."""
        super().__init__(handler, logger, limits)
        self.host, self.port, self.reuseport = host, port, reuseport
        self.trusts_proxy = trusts_proxy

    def _prepare(self, connection: StreamConnection) -> None:
        if self.trusts_proxy is not None and self.trusts_proxy(connection.peer_host):
            connection.expect_proxy_header()

    def _server_options(self) -> Dict[str, Any]:
        """More of ``create_server``'s options (a TLS context)."""
        return {}

    async def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol_factory, self.host, self.port,
                                               reuse_port=self.reuseport or None, **self._server_options())
        for sock in self.server.sockets:
            set_tcp_listener_options(sock)
            self.logger.debug("listening on %r", sock.getsockname())
        first = self.server.sockets[0]
        self.address = format_tcp_address(first.getsockname(), first.family)


class HTTPListener(TCPListener):
    """HTTP/1.1 on TCP, plain or over TLS: each client an ``HTTPConnection`` answered
    by ``routes`` (an ``httpsession.Routes``), admitted by the same handler as every
    listener's."""

    def __init__(self, host: str, port: int, routes: Any, handler: ConnectionHandler, logger: logging.Logger,
                 *, limits: Optional[Limits] = None,
                 trusts_proxy: Optional[Callable[[Optional[str]], bool]] = None,
                 tls: Optional[Callable[[], Any]] = None) -> None:
        """``tls``: gives the server's TLS context when listening starts (HTTPS)."""
        super().__init__(host, port, handler, logger, limits=limits, trusts_proxy=trusts_proxy)
        self.routes = routes
        self.tls = tls
        self.handshake_timeout = (limits or Limits()).handshake_timeout

    def _server_options(self) -> Dict[str, Any]:
        if self.tls is None:
            return {}
        # The TLS handshake comes before the connection is handed over: bound it here.
        return {"ssl": self.tls(), "ssl_handshake_timeout": self.handshake_timeout or None}

    def _protocol_factory(self) -> LineProtocol:
        return HTTPProtocol(on_connection=self._accepted, loop=self.loop)

    def _connection(self, line_protocol: LineProtocol) -> StreamConnection:
        return HTTPConnection(line_protocol, self.routes)     # type: ignore[arg-type]

    async def start(self) -> None:
        await super().start()
        self.address = ("https://" if self.tls is not None else "http://") + self.address


class UnixListener(Listener):
    def __init__(self, path: str, handler: ConnectionHandler, logger: logging.Logger,
                 limits: Optional[Limits] = None) -> None:
        super().__init__(handler, logger, limits)
        self.path = os.path.abspath(path)

    async def start(self) -> None:
        sock = bind_unix_socket(self.path)
        loop = self.loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(self._protocol_factory, sock=sock)
        self.logger.debug("listening on %s", self.path)
        self.address = "unix://" + self.path

    def cleanup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class WebsocketListener(Listener):
    def __init__(self, host: str, port: int, handler: ConnectionHandler, logger: logging.Logger,
                 limits: Optional[Limits] = None, tls: Optional[Callable[[], Any]] = None,
                 forwarded_client: Optional[Callable[[str, Optional[str]], str]] = None) -> None:
        """``tls``: gives the server's TLS context when listening starts (``wss://``).
        ``forwarded_client(peer, x_forwarded_for)``: the client (``peer`` unless it is
        a trusted proxy)."""
        super().__init__(handler, logger, limits)
        self.host, self.port = host, port
        self.tls = tls
        self.forwarded_client = forwarded_client

    def close(self) -> None:
        """Nothing yet: the websocket library's close() also closes open connections,
        so that waits for ``stop`` (after the server let its sessions finish)."""

    async def start(self) -> None:
        context = self.tls() if self.tls is not None else None
        self.server = await serve(self._serve_websocket, self.host, self.port, self.max_message, ssl=context)
        for sock in self.server.sockets:
            set_tcp_listener_options(sock, nodelay=False)
        first = list(self.server.sockets)[0]
        self.address = format_tcp_address(first.getsockname(), first.family,
                                          "wss://" if context is not None else "ws://")

    async def _serve_websocket(self, websocket: Any, *path: Any) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            connection = WebsocketConnection(websocket, -1, self.max_message, self.max_depth)
            connection.task = task
            peer = connection.peer_host
            if self.forwarded_client is not None and peer is not None:
                client = self.forwarded_client(peer, connection.forwarded_for())
                if client != peer:
                    connection.forwarded = (client, None)
            await self.handler(connection)
        finally:
            self._tasks.discard(task)
