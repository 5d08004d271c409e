"""Exceptions of the asyncrpc protocol layer.

Every error this layer raises derives from ``AsyncRPCError``.  Names that bitbake's
``bb.asyncrpc`` also has (``ClientError``, ``ServerError``, ``ConnectionClosedError``,
``InvokeError``) keep their meaning, so code written against bitbake's classes reads
the same against ours.
"""


class AsyncRPCError(Exception):
    """Base class of every error raised by ``prserv.asyncrpc``."""


class ProtocolError(AsyncRPCError):
    """The peer broke the wire protocol (bad framing, bad JSON, bad handshake)."""


class HandshakeError(ProtocolError):
    """The connection setup lines (protocol line, headers) were refused."""


class LineTooLongError(ProtocolError):
    """A line (or a reassembled chunk stream) exceeded the configured limit."""


class ClientError(AsyncRPCError):
    """A client sent a request the server cannot accept (unknown command, bad fields)."""


class ServerError(AsyncRPCError):
    """The server failed while handling a request."""


class ConnectionClosedError(AsyncRPCError, ConnectionError):
    """The peer closed the connection (end of stream)."""


class ReadTimeoutError(AsyncRPCError, ConnectionError):
    """No complete line arrived within the connection's timeout."""


class InvokeError(AsyncRPCError):
    """The server answered ``{"invoke-error": {"message": ...}}``.

    Raised by a handler, the server sends that answer and closes the connection;
    received by a client, it is raised to the caller without any retry.
    """


class RequestRefused(InvokeError):
    """Raised by a handler: answer ``{"invoke-error": ...}`` but keep the session (a
    failed ``auth``: the connection goes on as it was)."""
