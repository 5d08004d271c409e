"""Thin adapter over the ``websockets`` package (imported only when used).

Supports the new asyncio implementation (websockets >= 13) and falls back to the
legacy one.  Pings are disabled on both ends, as bitbake's asyncrpc does.
"""

from __future__ import annotations

import asyncio
import sys
from ssl import SSLError
from typing import Any, Awaitable, Callable, Tuple

from .deadline import within

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
