"""The websocket transport: one text message per line or JSON message.

``WebsocketConnection`` implements ``connection.Connection`` over the ``websockets``
package (imported only when used; no chunk streams on websockets).  Supports the
new asyncio implementation (websockets >= 13) and falls back to the legacy one.
Pings are disabled on both ends, as bitbake's asyncrpc does.
"""

from __future__ import annotations

import asyncio
import sys
import time
from ssl import SSLError
from typing import Any, Awaitable, Callable, List, Optional, Tuple

from . import protocol
from .connection import Connection
from .deadline import within
from .exceptions import ConnectionClosedError, ReadTimeoutError

MIN_VERSION: Tuple[int, ...] = (10, 0) if sys.version_info >= (3, 10) else (9, 1)


def _import_websockets() -> Any:
    import websockets

    try:
        version = tuple(int(v) for v in websockets.__version__.split(".")[:len(MIN_VERSION)])
    except ValueError:
        raise ImportError("unable to parse websockets version %r" % websockets.__version__) from None
    if version < MIN_VERSION:
        raise ImportError("websockets %s is older than the required %s"
                          % (websockets.__version__, ".".join(map(str, MIN_VERSION))))
    return websockets


async def connect(uri: str, timeout: float, ssl: Any = None) -> Any:
    """Open a client websocket (``ssl``: the context for ``wss://``, else the library's
    default); failures become ``ConnectionError``."""
    websockets = _import_websockets()
    try:
        from websockets.asyncio.client import connect as ws_connect
    except ImportError:  # websockets < 13
        ws_connect = websockets.connect
    try:
        # The deadline is ours: the library's open_timeout needs a current task.
        options = {"ssl": ssl} if ssl is not None and uri.startswith("wss://") else {}
        return await within(ws_connect(uri, ping_interval=None, open_timeout=None, max_size=None, **options),
                            timeout)
    except asyncio.TimeoutError:
        raise ConnectionError("timeout while connecting to websocket %s" % uri) from None
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI, SSLError) as exc:
        raise ConnectionError("could not connect to websocket %s: %s" % (uri, exc)) from exc


async def serve(handler: Callable[[Any], Awaitable[None]], host: str, port: int,
                max_size: int, ssl: Any = None) -> Any:
    """Start a websocket server (``ssl``: a server context for ``wss://``); returns the
    library's server object."""
    _import_websockets()
    try:
        from websockets.asyncio.server import serve as ws_serve
    except ImportError:  # websockets < 13
        from websockets.server import serve as ws_serve
    return await ws_serve(handler, host, port, ping_interval=None, max_size=max_size, ssl=ssl)


class WebsocketConnection(Connection):
    """A websocket connection: one text message per line or JSON message."""

    def __init__(self, websocket: Any, timeout: float = -1,
                 max_message: int = protocol.MAX_ANSWER_SIZE,
                 max_depth: Optional[int] = None) -> None:
        super().__init__(max_message, max_depth)
        self.websocket = websocket
        self.timeout = timeout

    def _own_address(self) -> str:
        remote = self.websocket.remote_address
        if isinstance(remote, tuple):
            return "%s:%s" % (remote[0], remote[1])
        return str(remote)

    def _own_host(self) -> Optional[str]:
        remote = self.websocket.remote_address
        return str(remote[0]) if isinstance(remote, tuple) else None

    def forwarded_for(self) -> Optional[str]:
        """The request's ``X-Forwarded-For`` header (all of its values, comma-joined)."""
        request = getattr(self.websocket, "request", None)          # websockets >= 13
        headers = getattr(request, "headers", None) if request is not None else None
        if headers is None:
            headers = getattr(self.websocket, "request_headers", None)   # the legacy implementation
        if headers is None:
            return None
        values = headers.get_all("X-Forwarded-For")
        return ", ".join(values) if values else None

    async def recv_line(self) -> str:
        from websockets.exceptions import ConnectionClosed

        try:
            if self.timeout is None or self.timeout < 0:
                data = await self.websocket.recv()
            else:
                try:
                    data = await within(self.websocket.recv(), self.timeout)
                except asyncio.TimeoutError:
                    raise ReadTimeoutError("no data within %g s" % self.timeout) from None
        except ConnectionClosed:
            raise ConnectionClosedError("websocket closed") from None
        self._last_activity = time.monotonic()
        if isinstance(data, bytes):
            data = protocol.decode_line(data)
        return data

    async def _send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.websocket.send(text)
        except ConnectionClosed:
            raise ConnectionClosedError("websocket closed") from None

    async def send_lines(self, lines: List[str]) -> None:
        for line in lines:
            await self._send(line)

    async def send_message(self, message: Any) -> None:
        if isinstance(message, protocol.JSONStream):
            # One websocket message in fragments (the library sends an iterable so).
            await self._send(protocol.join_pieces(message.pieces, protocol.MAX_CHUNK))  # type: ignore[arg-type]
            return
        await self._send(protocol.dumps(message))

    async def close(self) -> None:
        await self.websocket.close()


async def open_websocket_connection(uri: str, timeout: float = -1,
                                    max_message: int = protocol.MAX_ANSWER_SIZE,
                                    ssl: Any = None) -> WebsocketConnection:
    """Open a websocket; the opening handshake is bounded by ``timeout``; ``ssl``: the
    TLS context for a ``wss://`` URI (None: the system's CAs)."""
    websocket = await connect(uri, timeout, ssl)
    return WebsocketConnection(websocket, timeout, max_message)
