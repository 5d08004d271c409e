"""The JSON-lines RPC session: setup, then each request dispatched to its handler.

A subclass of ``AsyncServerConnection`` names one coroutine method per command in
its class attribute ``commands`` (dispatch order: its bases' commands, then its own,
in order).  This module knows nothing of what the commands mean.  The session is a
``session.Session`` (what the server's admission, idle watch, shutdown and log use)
and keeps its gated answers in a ``answers.HeldAnswers`` queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple, Union

from . import protocol
from .answers import Gate, HeldAnswers
from .connection import Connection
from .eager import start_eagerly
from .exceptions import (ClientError, ConnectionClosedError, HandshakeError, InvokeError, ProtocolError,
                         RequestRefused, ServerError)
from .session import ClientLoggerAdapter, Session


class AsyncServerConnection(Session, HeldAnswers):
    """One client session: setup, then request -> handler -> response, in order.

    A handler returns the response message (``NO_RESPONSE`` for none).  Raising
    ``InvokeError`` or ``ClientError`` answers ``{"invoke-error": {"message": ...}}``
    and closes this connection; so do malformed messages.  A JSON ``null`` message
    ends the session quietly; a refused setup closes without a byte sent.

    Requests are handled one after the other, in the order received.  An answer
    may be held back until an ``answer_gate`` completes (a commit, say) while the
    next requests are already handled; answers still leave in request order.
    """

    NO_RESPONSE = object()
    proto_versions = ((1, 0),)
    command = "unknown"
    """The wire name of the request being handled (set by ``dispatch_message``)."""
    secret_commands: frozenset = frozenset()
    """Requests whose arguments never reach the log (they carry a token)."""
    commands: Dict[str, str] = {"ping": "handle_ping"}
    """Wire name -> name of the coroutine method that answers it.  A subclass's
    ``commands`` adds to its bases' (``__init_subclass__`` resolves them once per
    class, so a connection builds no table of its own)."""
    dispatch_table: Tuple[Tuple[str, Callable[..., Awaitable[Any]]], ...] = ()
    """(wire name, unbound handler), in dispatch order: the first name present in a
    request chooses its handler (the reference's rule)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.dispatch_table = _dispatch_table(cls)

    def __init__(self, connection: Connection, proto_name: str, logger: logging.Logger) -> None:
        self.connection = connection
        self.socket = connection            # bitbake's attribute name
        self.proto_name = proto_name
        self.logger = ClientLoggerAdapter(logger, {"address": connection.address})
        self.client_headers: Dict[str, str] = {}
        self._held = collections.deque()        # HeldAnswers' state
        self._watched_gate = None
        self._sender = None
        self._all_sent_waiter = None
        self._failed = False
        self.opened_at = time.monotonic()
        self.setup_done = False
        self.requests = 0
        self.end_reason = "closed by the client"
        self.evicted = False
        self._closer: Optional[asyncio.Task] = None

    async def handle_headers(self, headers: Dict[str, str]) -> Dict[str, str]:
        """Headers to answer ``needs-headers: true`` with (none by default)."""
        return {}

    async def handle_ping(self, request: Any) -> Dict[str, bool]:
        return {"alive": True}

    def answer_gate(self) -> Optional[Gate]:
        """What the answer just produced must wait for before it is sent, or None.

        A ``Gate``: an ``asyncio.Future`` or anything with the same ``done``,
        ``exception`` and ``add_done_callback``.  If it fails, that answer and the
        ones after it are replaced by an invoke-error and the session ends.  The
        default holds nothing back."""
        return None

    async def close(self) -> None:
        await self.connection.close()

    async def process_requests(self) -> None:
        try:
            if await self._setup():
                try:
                    await self._serve_messages()
                finally:
                    await self._send_held_answers()
        except ConnectionClosedError:
            pass
        except (OSError, ConnectionError) as exc:
            self.end_reason = "connection error: %s" % exc
        finally:
            if self._sender is not None:
                self._sender.cancel()
            await self.close()
            self.log_closed()

    def silent_since(self) -> Optional[float]:
        """``time.monotonic()`` since when this session has been idle -- set up, no
        request in hand, no answer owed, not already being closed -- counted from the
        later of the last bytes received and the last request handled; None if it is
        not idle.  The idle timeout and the connection limits both ask this."""
        connection = self.connection
        if not self.setup_done or self.evicted or not self.idle or connection.busy:
            return None
        return connection.last_activity

    def stop_receiving(self) -> None:
        """Server shutdown: take no more requests; close once the answers in flight
        have left (the connection closes by itself if a request is in hand)."""
        self.end_reason = "server stopping"
        if self.connection.stop_receiving():        # idle: nothing in flight but answers
            self._closer = asyncio.get_running_loop().create_task(self._close_when_sent())

    async def _close_when_sent(self) -> None:
        with contextlib.suppress(ConnectionClosedError, OSError):
            await self._all_sent()
        await self.close()

    async def _setup(self) -> bool:
        setup = protocol.ServerSetup(self.proto_name, self.proto_versions)
        max_line = self.limits.max_handshake_line
        connection = self.connection
        try:
            while True:
                line = connection.buffered_line()
                if line is None:
                    line = await connection.recv_line()
                if len(line) > max_line:
                    raise HandshakeError("setup line longer than %d bytes" % max_line)
                if setup.feed_line(line):
                    break
        except (HandshakeError, ProtocolError) as exc:
            self.end_reason = "refused connection setup: %s" % exc
            self.logger.warning("refused connection setup: %s", exc)
            return False
        self.setup_done = True
        self.client_headers = setup.headers
        if setup.needs_headers:
            headers = await self.handle_headers(setup.headers)
            await self.connection.send_lines(protocol.header_block_lines(headers))
        return True

    async def _serve_messages(self) -> None:
        try:
            await self.connection.pump_messages(self._deliver)
        except ProtocolError as exc:
            await self._refuse(str(exc))

    def _deliver(self, message: Any) -> Union[bool, "asyncio.Task[bool]"]:
        """Answer one message: at once if its handler never waits, else in a task."""
        if message is None:
            self.end_reason = "ended by the client (null message)"
            return False                    # JSON null: the client ends the session
        self.requests += 1
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("request %d: %s", self.requests, self._loggable(message)[:300])
        return start_eagerly(self._answer(message))

    def _loggable(self, message: Any) -> str:
        if isinstance(message, dict) and any(name in message for name in self.secret_commands):
            return protocol.dumps({name: "(not logged)" for name in message})
        return protocol.dumps(message)

    async def _answer(self, message: Any) -> bool:
        """Handle one request and send its answer; False once the session must end."""
        started = time.perf_counter()
        self.command = "unknown"
        try:
            response = await self.dispatch_message(message)
        except RequestRefused as exc:
            self._count(started, False)
            self.logger.info("refused: %s", exc)
            await self._send(protocol.invoke_error(str(exc)), None)
            return True
        except (InvokeError, ClientError) as exc:
            self._count(started, False)
            await self._refuse(str(exc))
            return False
        except ServerError as exc:
            self._count(started, False)
            self.logger.error("request failed: %s", exc)
            await self._refuse(str(exc))
            return False
        except (ConnectionClosedError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a handler bug must not kill the server
            self._count(started, False)
            self.logger.exception("internal error handling a request")
            await self._refuse("internal server error: %s: %s" % (type(exc).__name__, exc))
            return False
        stats = self.stats
        if stats is not None:                   # _count, written out: every answer passes here
            stats.record(self.command, time.perf_counter() - started)
        if response is not self.NO_RESPONSE:
            gate = self.answer_gate()
            if gate is None and not self._held and self._sender is None:
                await self.connection.send_message(response)    # the common case, inline
            else:
                await self._send(response, gate)
        return True

    def _count(self, started: float, ok: bool) -> None:
        stats = self.stats
        if stats is not None:
            stats.record(self.command, time.perf_counter() - started, ok)

    async def _refuse(self, message: str) -> None:
        self.end_reason = "invoke-error: %s" % message
        self.logger.info("invoke-error: %s", message)
        await self._send(protocol.invoke_error(message), None)

    async def dispatch_message(self, message: Any) -> Any:
        if not isinstance(message, dict):
            raise ClientError("a request must be a JSON object, not %s" % protocol.describe_json_type(message))
        for name, handler in self.dispatch_table:
            if name in message:
                self.command = name
                return await handler(self, message[name])
        names = ", ".join(sorted(map(str, message)))[:200]
        raise ClientError("unknown command (request keys: %s); known: %s"
                          % (names or "none", ", ".join(name for name, _ in self.dispatch_table)))

    def command_of(self, message: Dict[str, Any]) -> str:
        """The request's command as dispatch chooses it ("request" if none is known)."""
        return next((name for name, _ in self.dispatch_table if name in message), "request")


def _dispatch_table(cls: type) -> Tuple[Tuple[str, Callable[..., Awaitable[Any]]], ...]:
    commands: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        commands.update(vars(klass).get("commands", {}))
    return tuple((name, getattr(cls, method)) for name, method in commands.items())


AsyncServerConnection.dispatch_table = _dispatch_table(AsyncServerConnection)
