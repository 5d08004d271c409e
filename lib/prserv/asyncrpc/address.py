"""Address strings: which transport, and where (docs/protocol.md §1).

``unix:///path`` selects a unix stream socket, ``ws://`` / ``wss://`` a websocket,
``[v6addr]:port`` and ``host:port`` TCP.  Servers report their bound address in
the same forms, so a reported address can be handed straight to a client.
"""

from __future__ import annotations

import re
import socket
from typing import Tuple, Union

UNIX_PREFIX = "unix://"
WS_PREFIX = "ws://"
WSS_PREFIX = "wss://"

ADDR_TYPE_UNIX = 0
ADDR_TYPE_TCP = 1
ADDR_TYPE_WS = 2

_BRACKETED = re.compile(r"\[(?P<host>[^\]]*)\]:(?P<port>[0-9]+)\Z")


class AddressError(ValueError):
    """An address string that names no transport."""


def parse_address(addr: str) -> Tuple[int, Tuple[Union[str, int], ...]]:
    """``(ADDR_TYPE_*, args)``: ``(path,)``, ``(uri,)`` or ``(host, port)``.

    Same forms and precedence as bitbake's ``bb.asyncrpc.client.parse_address``,
    with a clear ``AddressError`` instead of an unpacking error.
    """
    if not isinstance(addr, str):
        raise AddressError("address must be a string, not %s" % type(addr).__name__)
    if addr.startswith(UNIX_PREFIX):
        path = addr[len(UNIX_PREFIX):]
        if not path:
            raise AddressError("unix address without a path: %r" % addr)
        return ADDR_TYPE_UNIX, (path,)
    if addr.startswith(WS_PREFIX) or addr.startswith(WSS_PREFIX):
        return ADDR_TYPE_WS, (addr,)
    match = _BRACKETED.match(addr)
    if match:
        return ADDR_TYPE_TCP, (match.group("host"), int(match.group("port")))
    parts = addr.split(":")
    if len(parts) != 2 or not parts[1].isascii() or not parts[1].isdigit():
        raise AddressError("expected HOST:PORT, [V6ADDR]:PORT, unix://PATH or ws://HOST:PORT, got %r" % addr)
    port = int(parts[1])
    if port > 65535:
        raise AddressError("port out of range in %r" % addr)
    return ADDR_TYPE_TCP, (parts[0], port)


def parse_tcp_address(addr: str, expected: str = "expected HOST:PORT or [V6ADDR]:PORT") -> Tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``[V6ADDR]:PORT``; ``AddressError(expected)``
    for any other form (for a listener that can only be TCP)."""
    try:
        kind, args = parse_address(addr)
    except AddressError:
        kind = None
    if kind != ADDR_TYPE_TCP:
        raise AddressError(expected)
    return str(args[0]), int(args[1])


def split_ws_uri(uri: str) -> Tuple[str, int]:
    """Host and port a ``ws://host:port[/path]`` server listens on."""
    rest = uri.split("://", 1)[1].split("/", 1)[0]
    match = _BRACKETED.match(rest)
    if match:
        return match.group("host"), int(match.group("port"))
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise AddressError("websocket address needs an explicit port: %r" % uri)
    return host, int(port)


def format_tcp_address(sockname: tuple, family: int, scheme: str = "") -> str:
    """``HOST:PORT`` / ``[HOST]:PORT`` of a bound socket (with ``scheme`` prefixed)."""
    host, port = sockname[0], sockname[1]
    if family == socket.AF_INET6:
        return "%s[%s]:%d" % (scheme, host, port)
    return "%s%s:%d" % (scheme, host, port)
