"""A framed JSON-lines RPC protocol compatible with bitbake's ``bb.asyncrpc``.

Pure framing lives in ``protocol`` (no I/O); ``connection`` is the transport
interface, ``stream`` (TCP, unix sockets) and ``websocket`` implement it;
``rpcsession`` (one session), ``lifecycle`` (the server) and ``client`` build on
top.  Nothing here knows about PR numbers.
"""

from .address import (ADDR_TYPE_TCP, ADDR_TYPE_UNIX, ADDR_TYPE_WS, AddressError,
                      parse_address)
from .client import AsyncClient, Client
from .exceptions import (AsyncRPCError, ClientError, ConnectionClosedError, HandshakeError,
                         InvokeError, LineTooLongError, RequestRefused, ProtocolError, ReadTimeoutError,
                         ServerError)
from .protocol import MAX_CHUNK
from .lifecycle import AsyncServer
from .rpcsession import AsyncServerConnection

DEFAULT_MAX_CHUNK = MAX_CHUNK

__all__ = [
    "ADDR_TYPE_TCP", "ADDR_TYPE_UNIX", "ADDR_TYPE_WS", "AddressError", "AsyncClient",
    "AsyncRPCError", "AsyncServer", "AsyncServerConnection", "Client", "ClientError",
    "ConnectionClosedError", "DEFAULT_MAX_CHUNK", "HandshakeError", "InvokeError", "RequestRefused",
    "LineTooLongError", "MAX_CHUNK", "ProtocolError", "ReadTimeoutError", "ServerError",
    "parse_address",
]
