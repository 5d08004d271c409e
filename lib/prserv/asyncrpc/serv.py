"""asyncrpc server: listeners for three transports and the per-connection loop.

A subclass of ``AsyncServer`` says how to build a per-connection handler
(``accept_client``); a subclass of ``AsyncServerConnection`` names one coroutine
method per command in its class attribute ``commands`` (dispatch order: its bases'
commands, then its own, in order).  This module knows nothing of what the commands
mean.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Set, Tuple, Union

from ..access import AccessRules
from ..errors import PRServiceError
from . import loops, protocol
from .address import (ADDR_TYPE_TCP, ADDR_TYPE_UNIX, WSS_PREFIX, format_tcp_address, parse_address,
                      split_ws_uri)
from .connection import Connection, LineProtocol, StreamConnection, WebsocketConnection
from .deadline import within
from .eager import start_eagerly
from .admission import Admission, connection_limit
from .limits import Limits, raise_open_file_limit
from .exceptions import (ClientError, ConnectionClosedError, HandshakeError, InvokeError, RequestRefused,
                         ProtocolError, ServerError)
from .proxyproto import ProxyHeaderError
from .stats import RequestStats
from .tls import TLSConfigError
from .sockets import bind_unix_socket, set_tcp_listener_options

ConnectionHandler = Callable[[Connection], Awaitable[None]]
Gate = Any
"""What an answer waits for: ``done()``, ``exception()``, ``add_done_callback(fn)``."""


async def _completion(gate: Gate) -> None:
    """Wait until ``gate`` is done (without cancelling it if we are cancelled)."""
    if gate.done():
        return
    waiter = asyncio.get_running_loop().create_future()
    gate.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
    await waiter

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
HANDLED_SIGNALS = STOP_SIGNALS + (signal.SIGHUP,)
PROXY_HEADER_TIMEOUT = 30.0
"""Seconds a trusted proxy has to send its PROXY header when there is no handshake timeout."""


class ClientLoggerAdapter(logging.LoggerAdapter):
    """Prefixes every record with the peer's address."""

    def process(self, msg: Any, kwargs: Any) -> Any:
        return "[Client %s] %s" % (self.extra["address"], msg), kwargs


class AsyncServerConnection:
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
    max_held_answers = 1024
    """Answers held back at most; beyond, reading this client's requests waits."""
    limits = Limits()
    """The server's limits (``AsyncServer`` sets its own on each session)."""
    stats: Optional[RequestStats] = None
    """Where answered requests are counted (``AsyncServer`` sets its own)."""
    command = "unknown"
    """The wire name of the request being handled (set by ``dispatch_message``)."""
    user: Optional[str] = None
    """Who the client proved to be (a subclass's ``auth``), for the log."""
    info_line: Optional[Callable[[str], None]] = None
    """Writes one INFO line as the log would show it, without the logging module's
    record machinery (a serving process's ``runtime.logs`` sets it up; it costs a
    short connection a third of what ``logger.info`` does).  None: the logger."""
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
        self._held: Deque[Tuple[Optional[Gate], Any]] = collections.deque()
        self._watched_gate: Optional[Gate] = None
        self._sender: Optional[asyncio.Task] = None
        self._all_sent_waiter: Optional[asyncio.Future] = None
        self._failed = False
        self.opened_at = time.monotonic()
        self.setup_done = False
        self.requests = 0
        self.end_reason = "closed by the client"
        self.evicted = False
        self._closer: Optional[asyncio.Task] = None
        self.last_answered = 0.0
        """``time.monotonic()`` when a request was last handled: idleness counts from
        the later of this and the last bytes received (a long-poll or a long export is
        not idleness, nor is the moment right after it)."""

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
            self._log_closed()

    def _log_closed(self) -> None:
        """The INFO line every connection ends with (operators count and trace builds
        by it): through ``info_line`` when the process set one up, else the logger."""
        logger = self.logger
        if not logger.logger.isEnabledFor(logging.INFO):
            return
        # The address as the session began: uvloop cannot tell a closed transport's peer.
        text = "[Client %s] connection closed after %d request%s in %.1f s: %s%s" % (
            logger.extra["address"], self.requests, "" if self.requests == 1 else "s",
            time.monotonic() - self.opened_at, self.end_reason,
            "" if self.user is None else " (user %s)" % self.user)
        info_line = self.info_line
        if info_line is not None:
            info_line(text)
        else:
            logger.logger.info("%s", text)

    @property
    def idle(self) -> bool:
        """No answer is waiting to be sent (the client is not owed anything)."""
        return not self._held and self._sender is None

    def silent_since(self) -> Optional[float]:
        """``time.monotonic()`` since when this session has been idle -- set up, no
        request in hand, no answer owed, not already being closed -- counted from the
        later of the last bytes received and the last request handled; None if it is
        not idle.  The idle timeout and the connection limits both ask this."""
        connection = self.connection
        if not self.setup_done or self.evicted or not self.idle or connection.busy:
            return None
        return max(connection.last_activity, self.last_answered)

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

    def abort(self, reason: str) -> None:
        """End the session now, logging ``reason`` (a limit was hit)."""
        self.end_reason = reason
        self.logger.warning("closing the connection: %s", reason)
        asyncio.get_running_loop().create_task(self.close())

    def evict(self, reason: str) -> None:
        """End this idle session to make room for a new one (it owes nothing)."""
        self.evicted = True
        self.end_reason = reason
        self.logger.info("closing the connection: %s", reason)
        asyncio.get_running_loop().create_task(self.close())

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
            self.last_answered = time.monotonic()
        except RequestRefused as exc:
            self._count(started, False)
            self.logger.info("refused: %s", exc)
            await self._send({"invoke-error": {"message": str(exc)}}, None)
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
        self._count(started, True)
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
        await self._send({"invoke-error": {"message": message}}, None)

    # -- held answers (see ``answer_gate``)
    async def _send(self, response: Any, gate: Optional[Gate]) -> None:
        """Send now if nothing is held back, else hold it behind the others."""
        if self._failed:
            return                          # the session is ending with an invoke-error
        if gate is None and not self._held and self._sender is None:
            await self.connection.send_message(response)
            return
        self._held.append((gate, response))
        self._release_held()
        if len(self._held) >= self.max_held_answers:
            await self._all_sent()          # a peer not reading: stop taking its requests

    def _release_held(self, _gate: Any = None) -> None:
        """Send the held answers whose gates completed, in order, right now (a gate's
        callback: no loop turn in between); a task takes over if the transport
        cannot take them without waiting."""
        while self._held and self._sender is None:
            gate, response = self._held[0]
            if gate is not None and not gate.done():
                if gate is not self._watched_gate:
                    self._watched_gate = gate
                    gate.add_done_callback(self._release_held)
                return
            if gate is not None and gate.exception() is not None:
                self._fail_held(gate.exception())
                return
            try:
                sent = self.connection.send_message_now(response)
            except ConnectionClosedError:
                self._held.clear()
                break
            if not sent:                   # slow peer, or a transport that only awaits
                self._sender = asyncio.get_running_loop().create_task(self._send_held())
                return
            self._held.popleft()
        if not self._held:
            self._wake_all_sent()

    async def _send_held(self) -> None:
        """The slow path of ``_release_held``: await each gate and each send."""
        try:
            while self._held:
                gate, response = self._held[0]
                if gate is not None:
                    await _completion(gate)
                    if gate.exception() is not None:
                        self._sender = None
                        self._fail_held(gate.exception())
                        return
                await self.connection.send_message(response)
                self._held.popleft()
        except ConnectionClosedError:
            self._held.clear()
        finally:
            self._sender = None
        self._wake_all_sent()

    def _fail_held(self, exc: BaseException) -> None:
        """A gate failed: its answer and the ones behind it are never sent; the client
        gets an invoke-error and the connection is closed."""
        self._held.clear()
        self._failed = True
        message = "request failed: %s" % exc
        self.logger.error(message)
        self._sender = asyncio.get_running_loop().create_task(self._send_error_and_close(message))

    async def _send_error_and_close(self, message: str) -> None:
        try:
            with contextlib.suppress(ConnectionClosedError, OSError):
                await self.connection.send_message({"invoke-error": {"message": message}})
            await self.connection.close()
        finally:
            self._sender = None
            self._wake_all_sent()

    async def _all_sent(self) -> None:
        """Wait until no answer is held back."""
        if not self._held and self._sender is None:
            return
        if self._all_sent_waiter is None:
            self._all_sent_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._all_sent_waiter)

    def _wake_all_sent(self) -> None:
        waiter, self._all_sent_waiter = self._all_sent_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send_held_answers(self) -> None:
        """At the end of a session: let the held answers go out first."""
        if not self._held and self._sender is None:
            return
        with contextlib.suppress(ConnectionClosedError, OSError):
            await self._all_sent()

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


# --------------------------------------------------------------------------- listeners

class Listener:
    """One listening endpoint; calls ``handler(connection)`` per accepted client."""

    address: str = ""

    def __init__(self, handler: ConnectionHandler, logger: logging.Logger,
                 limits: Optional[Limits] = None) -> None:
        self.handler = handler
        self.logger = logger
        limits = limits or Limits()
        self.max_line = limits.line_limit
        self.max_message = limits.max_message
        self.max_depth = limits.max_nesting
        self.server: Any = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        """The loop serving this listener (set as it starts)."""
        self._tasks: Set[asyncio.Task] = set()

    def _accepted(self, line_protocol: LineProtocol) -> None:
        connection = StreamConnection(line_protocol, -1, max_message=self.max_message,
                                      max_depth=self.max_depth)
        self._prepare(connection)
        task = connection.task = line_protocol.loop.create_task(self.handler(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    async def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol_factory, self.host, self.port,
                                               reuse_port=self.reuseport or None)
        for sock in self.server.sockets:
            set_tcp_listener_options(sock)
            self.logger.debug("listening on %r", sock.getsockname())
        first = self.server.sockets[0]
        self.address = format_tcp_address(first.getsockname(), first.family)


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
        from .websocket import serve

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


# --------------------------------------------------------------------------- server

def reopen_log_files(logger: logging.Logger) -> int:
    """Reopen the files of the ``FileHandler``s ``logger`` writes through (its own and
    its ancestors'), so a rotated log is left for the new file; returns how many."""
    reopened = 0
    current: Optional[logging.Logger] = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
                reopened += 1
        current = current.parent if current.propagate else None
    return reopened


class AsyncServer:
    """Owns its listeners and an event loop; runs in this process or a child.

    Each ``start_*_server`` call adds a listening endpoint (bitbake makes one call;
    a deployment may listen on TCP, a unix socket and a websocket at once).
    ``address`` is the first endpoint's bound address, ``addresses`` all of them.
    Subclasses implement ``accept_client`` and may override ``open_resources`` /
    ``close_resources`` (called in the serving process, e.g. to open a database
    after ``fork``).
    """

    def __init__(self, logger: logging.Logger, limits: Optional[Limits] = None) -> None:
        self.logger = logger
        self.limits = limits or Limits()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.listeners: List[Listener] = []
        self.address: Optional[str] = None
        self.addresses: List[str] = []
        self.process: Optional[multiprocessing.process.BaseProcess] = None
        self.sessions: Dict[AsyncServerConnection, asyncio.Task] = {}
        """Open client sessions and the task running each."""
        self._stop_requested: Optional[asyncio.Event] = None
        self.admission = Admission(self.limits, self.limits.max_connections, logger)
        """Connection limits as clients arrive (the open-file cap applied once serving)."""
        self._watchdog: Optional[asyncio.Task] = None
        self._serving = False
        self.stats = RequestStats()
        """Every request answered (``get-stats``, metrics)."""
        self.event_loop = loops.AUTO
        """The loop ``serve_forever`` / ``serve_as_process`` run (``loops``)."""
        self.tls_context: Optional[Any] = None
        """The certificate ``wss://`` listeners present (``tls.server_context``)."""
        self.access = AccessRules()
        """Who may connect and who may write (``prserv.access``); replaced on SIGHUP."""
        self.access_reloader: Optional[Callable[[], AccessRules]] = None
        """Reads the rules again from where they came from (SIGHUP), if they can be."""

    # -- choosing the transport (nothing is bound until serving starts)
    def start_tcp_server(self, host: str, port: int, *, reuseport: bool = False) -> None:
        self.listeners.append(TCPListener(host, port, self._client_handler, self.logger,
                                          reuseport=reuseport, limits=self.limits,
                                          trusts_proxy=self._trusts_proxy))

    def start_unix_server(self, path: str) -> None:
        self.listeners.append(UnixListener(path, self._client_handler, self.logger, self.limits))

    def start_websocket_server(self, host: str, port: int, reuseport: bool = False, tls: bool = False) -> None:
        """``tls``: a ``wss://`` listener, with ``tls_context`` (set before serving)."""
        self.listeners.append(WebsocketListener(host, port, self._client_handler, self.logger,
                                                self.limits, tls=self._server_tls if tls else None,
                                                forwarded_client=self._forwarded_client))

    def _trusts_proxy(self, host: Optional[str]) -> bool:
        return self.access.is_trusted_proxy(host)

    def _forwarded_client(self, peer: str, forwarded_for: Optional[str]) -> str:
        return self.access.forwarded_client(peer, forwarded_for)

    def _server_tls(self) -> Any:
        if self.tls_context is None:
            raise TLSConfigError("a wss:// address needs a TLS certificate and key (tls_certificate, tls_key)")
        return self.tls_context

    def start_server(self, addr: str) -> None:
        """Pick the transport from an address string (``host:port``, ``unix://``, ``ws://``)."""
        kind, args = parse_address(addr)
        if kind == ADDR_TYPE_UNIX:
            self.start_unix_server(*args)
        elif kind == ADDR_TYPE_TCP:
            self.start_tcp_server(*args)
        else:
            self.start_websocket_server(*split_ws_uri(args[0]), tls=str(args[0]).startswith(WSS_PREFIX))

    # -- per connection
    def accept_client(self, connection: Connection) -> AsyncServerConnection:
        raise NotImplementedError

    async def _client_handler(self, connection: Connection) -> None:
        if connection.expects_proxy_header and not await self._proxy_header(connection):
            return
        host = connection.peer_host
        if not self.access.may_connect(host):
            await self.admission.shut_out(connection)
            return
        refusal = self.admission.refusal(host, self.sessions)
        if refusal is not None:
            await self.admission.refuse(connection, refusal)
            return
        client: Optional[AsyncServerConnection] = None
        try:
            client = self.accept_client(connection)
            client.limits = self.limits
            client.stats = self.stats
            self.sessions[client] = connection.task  # type: ignore[assignment]
            self.admission.admitted(host, client)   # no await since ``refusal``
            await client.process_requests()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.logger.exception("error from client %s", connection.address)
        finally:
            if client is not None:
                self.admission.left(client)
                self.sessions.pop(client, None)     # the session closed its connection
            else:
                with contextlib.suppress(Exception):
                    await connection.close()

    async def _proxy_header(self, connection: Connection) -> bool:
        """Read a trusted proxy's PROXY header, within the handshake timeout; close the
        connection (logged once a minute per proxy) if it does not come or is not one."""
        timeout = self.limits.handshake_timeout or PROXY_HEADER_TIMEOUT
        try:
            await within(connection.read_proxy_header(), timeout)
            return True
        except asyncio.TimeoutError:
            reason = "no PROXY header within %g s" % timeout
        except ProxyHeaderError as exc:
            reason = str(exc)
        except ConnectionClosedError:
            reason = "closed before its PROXY header"
        self.admission.log_refusal(connection, "from a trusted proxy: %s" % reason)
        await connection.close()
        return False

    async def _watch_sessions(self, interval: float) -> None:
        """Close connections that outstay the handshake or idle timeout."""
        limits = self.limits
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions):
                if not session.setup_done:
                    if limits.handshake_timeout and now - session.opened_at > limits.handshake_timeout:
                        session.abort("no connection setup within %g s (handshake_timeout)"
                                      % limits.handshake_timeout)
                elif limits.idle_timeout:
                    since = session.silent_since()
                    if since is not None and now - since > limits.idle_timeout:
                        session.abort("idle for more than %g s (idle_timeout)" % limits.idle_timeout)

    async def _finish_sessions(self) -> None:
        """Let the requests in flight finish (bounded by ``shutdown_timeout``), then
        cancel what is left.  Sessions still in their setup are simply ended."""
        for session, task in list(self.sessions.items()):
            if session.setup_done:
                session.stop_receiving()
            else:
                task.cancel()
        tasks = list(self.sessions.values())
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.limits.shutdown_timeout)
        if pending:
            self.logger.warning("%d session(s) still busy after %g s (shutdown_timeout): cancelled",
                                len(pending), self.limits.shutdown_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- lifecycle hooks
    async def open_resources(self) -> None:
        """Called in the serving process before listening (open databases here)."""

    async def close_resources(self) -> None:
        """Called after the listener and every session have stopped."""

    def begin_stopping(self) -> None:
        """Called as shutdown begins, before requests in flight are waited for (end
        long waits here)."""

    async def start_serving(self) -> str:
        """Open resources and start listening; returns the bound address."""
        if not self.listeners:
            raise ServerError("no transport chosen: call start_server(addr) first")
        self._stop_requested = asyncio.Event()
        self.admission = Admission(self.limits, connection_limit(self.limits, self.logger), self.logger)
        await self.open_resources()
        started: List[Listener] = []
        try:
            for listener in self.listeners:
                await listener.start()
                started.append(listener)
        except BaseException:
            for listener in reversed(started):
                await listener.stop()
            await self.close_resources()
            raise
        self.addresses = [listener.address for listener in self.listeners]
        self.address = self.addresses[0]
        self._serving = True
        interval = self.limits.watch_interval()
        if interval:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_sessions(interval))
        return self.address

    async def stop_serving(self) -> None:
        """Stop accepting, let requests in flight finish and their answers leave
        (bounded wait), end every session, close resources (commit, database)."""
        if not self._serving:
            return
        self._serving = False
        self.begin_stopping()
        for listener in self.listeners:
            listener.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await self._finish_sessions()
        for listener in self.listeners:
            await listener.stop()
        await self.close_resources()

    def request_stop(self) -> None:
        """Make ``serve``/``serve_forever`` return (safe from signal handlers)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve(self) -> None:
        """Serve until ``request_stop``; then shut down cleanly."""
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop_serving()

    # -- running a loop
    def _create_loop(self) -> None:
        # A loop inherited from a parent process (or created by a client in this
        # one) must not be reused.
        self.loop = loops.new_event_loop(self.event_loop)
        asyncio.set_event_loop(self.loop)

    def _install_signal_handlers(self) -> None:
        """Before anyone learns the server is up: a signal sent as soon as it is must
        find its handler (SIGHUP's default action would kill the process)."""
        for sig in STOP_SIGNALS:
            self.loop.add_signal_handler(sig, self._on_stop_signal, sig)
        self.loop.add_signal_handler(signal.SIGHUP, self.reopen_logs)

    def _run(self, started: Callable[[], None], failed: Callable[[BaseException], None]) -> None:
        """Run the loop once, from start to stop: start serving, install the signal
        handlers, tell ``started()``, serve until stopped.  One run, because uvloop
        handles signals only while its loop runs and drops one that comes between
        two runs (a SIGTERM sent as soon as the server said it was ready).  Signals
        held back by the caller (``pthread_sigmask``) are let through once the
        handlers are in place.  ``failed(exc)``: start-up failed (then raised)."""
        try:
            self.loop.run_until_complete(self._serve_from_start(started, failed))
        finally:
            for sig in HANDLED_SIGNALS:
                self.loop.remove_signal_handler(sig)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _serve_from_start(self, started: Callable[[], None],
                                failed: Callable[[BaseException], None]) -> None:
        try:
            await self.start_serving()
        except BaseException as exc:
            failed(exc)
            raise
        self._install_signal_handlers()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        try:
            started()
        except BaseException:
            await self.stop_serving()
            raise
        # Everything allocated so far (modules, caches) lives as long as the server:
        # leaving it out of the cyclic GC's full collections keeps them short.
        gc.freeze()
        await self.serve()

    def reopen_logs(self) -> None:
        """SIGHUP (logrotate): reopen every log file this server's logger writes to."""
        reopened = reopen_log_files(self.logger)
        self.logger.info("SIGHUP: reopened %d log file(s)", reopened)
        self.reload_access()

    def reload_access(self) -> None:
        """Read the access rules again (open connections keep what they were granted);
        a rule that does not parse leaves the old rules in force."""
        if self.access_reloader is None:
            return
        try:
            rules = self.access_reloader()
        except (ValueError, OSError, PRServiceError) as exc:
            self.logger.error("SIGHUP: access rules not reloaded, the previous ones stay: %s", exc)
            return
        self.access = rules
        self.logger.info("SIGHUP: access rules: %s", rules.describe())

    def _on_stop_signal(self, sig: int) -> None:
        self.logger.debug("got signal %d, stopping", sig)
        self.request_stop()

    def serve_forever(self, ready: Optional[Callable[[], None]] = None) -> None:
        """Serve in this process until SIGTERM, SIGINT or SIGQUIT.

        ``ready()`` is called once listening (``self.address`` is then set).
        """
        raise_open_file_limit(self.logger)
        self._create_loop()
        self._run(ready or (lambda: None), lambda exc: None)

    def serve_as_process(self, *, prefunc: Optional[Callable[..., None]] = None, args: tuple = (),
                         log_level: Optional[int] = None) -> multiprocessing.process.BaseProcess:
        """Serve in a forked child; return once it is listening (``self.address`` set).

        Raises ``ServerError`` (with the child's reason) if the child cannot start.
        """
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        # The child inherits a blocked SIGTERM, so a terminate() sent before its
        # handler is installed is delivered only once it can be handled cleanly.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        try:
            self.process = context.Process(target=self._child_main,
                                           args=(sender, prefunc, args, log_level))
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        sender.close()
        try:
            addresses, error = receiver.recv()
        except EOFError:
            addresses, error = None, "server process exited during start-up"
        finally:
            receiver.close()
        if error is not None:
            self.process.join()
            raise ServerError("server failed to start: %s" % error)
        self.addresses = addresses
        self.address = addresses[0]
        return self.process

    def _child_main(self, sender: Any, prefunc: Optional[Callable[..., None]], args: tuple,
                    log_level: Optional[int]) -> None:
        raise_open_file_limit(self.logger)
        self._create_loop()

        def started() -> None:
            sender.send((self.addresses, None))
            sender.close()
            if prefunc is not None:
                prefunc(self, *args)
            if log_level is not None:
                self.logger.setLevel(log_level)

        start_failed = False

        def failed(exc: BaseException) -> None:
            nonlocal start_failed
            start_failed = True
            sender.send((None, "%s: %s" % (type(exc).__name__, exc)))
            sender.close()

        try:
            self._run(started, failed)
        except Exception:
            if start_failed:
                raise SystemExit(1) from None       # the parent reports it
            raise
