"""The server's lifecycle: its sessions, from each one's admission to shutdown.

``AsyncServer`` chooses its listeners (``start_server``), starts them with its
resources (``start_serving``), admits every connection they accept (``admit``: a
trusted proxy's PROXY header, the access rules, the connection limits), watches the
open sessions for the handshake and idle timeouts, and on ``stop_serving`` lets the
requests in flight finish before closing everything.  It sees sessions only through
``session.Session`` (whose docstring draws the listener seam); running it as a
process is ``process.ServingProcess``'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable, Dict, List, Optional

from ..access import AccessRules
from . import loops
from .address import ADDR_TYPE_TCP, ADDR_TYPE_UNIX, WSS_PREFIX, parse_address, split_ws_uri
from .admission import Admission, connection_limit
from .connection import Connection
from .deadline import within
from .exceptions import ConnectionClosedError, ServerError
from .limits import Limits
from .httpsession import HTTPSession
from .httpstream import HTTPConnection
from .listeners import HTTPListener, Listener, TCPListener, UnixListener, WebsocketListener
from .process import ServingProcess
from .proxyproto import ProxyHeaderError
from .session import Session
from .stats import RequestStats
from .tls import TLSConfigError

PROXY_HEADER_TIMEOUT = 30.0
"""Seconds a trusted proxy has to send its PROXY header when there is no handshake timeout."""


class AsyncServer(ServingProcess):
    """Owns its listeners and an event loop; runs in this process or a child.

    Each ``start_*_server`` call adds a listening endpoint (bitbake makes one call;
    a deployment may listen on TCP, a unix socket and a websocket at once).
    ``address`` is the first endpoint's bound address, ``addresses`` all of them.
    Subclasses implement ``accept_client`` and may override ``open_resources`` /
    ``close_resources`` (called in the serving process, e.g. to open a database
    after ``fork``).  ``serve_forever`` / ``serve_as_process`` come from
    ``ServingProcess``.
    """

    def __init__(self, logger: logging.Logger, limits: Optional[Limits] = None) -> None:
        self.logger = logger
        self.limits = limits or Limits()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.listeners: List[Listener] = []
        self.address: Optional[str] = None
        self.addresses: List[str] = []
        self.http_addresses: List[str] = []
        """The bound addresses of HTTP listeners (``http://HOST:PORT``), kept out of
        ``addresses``: those are handed to PR clients."""
        self.process = None
        self.sessions: Dict[Session, asyncio.Task] = {}
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
        self.on_reload: List[Callable[[], None]] = []
        """What SIGHUP does, in order (``ServingProcess``; the runtime adds them)."""

    # -- choosing the transport (nothing is bound until serving starts)
    def start_tcp_server(self, host: str, port: int, *, reuseport: bool = False) -> None:
        self.listeners.append(TCPListener(host, port, self.admit, self.logger,
                                          reuseport=reuseport, limits=self.limits,
                                          trusts_proxy=self._trusts_proxy))

    def start_unix_server(self, path: str) -> None:
        self.listeners.append(UnixListener(path, self.admit, self.logger, self.limits))

    def start_private_server(self, path: str) -> None:
        """A unix socket for this program's own processes (the HTTP child asks its
        server there): served like any listener, but left out of ``addresses``, so
        neither the start-up line nor a daemon's report names it."""
        listener = UnixListener(path, self.admit, self.logger, self.limits)
        listener.private = True
        self.listeners.append(listener)

    def start_websocket_server(self, host: str, port: int, reuseport: bool = False, tls: bool = False) -> None:
        """``tls``: a ``wss://`` listener, with ``tls_context`` (set before serving)."""
        self.listeners.append(WebsocketListener(host, port, self.admit, self.logger,
                                                self.limits, tls=self._server_tls if tls else None,
                                                forwarded_client=self._forwarded_client))

    def start_http_server(self, host: str, port: int, routes: Any, tls: bool = False) -> None:
        """An HTTP/1.1 listener whose requests ``routes`` answers (an
        ``httpsession.Routes``); h11 must be importable when serving starts.
        ``tls``: HTTPS, with ``tls_context`` (set before serving); its clients' PROXY
        headers are not read (TLS starts the connection), ``X-Forwarded-For`` is."""
        self.listeners.append(HTTPListener(host, port, routes, self.admit, self.logger, limits=self.limits,
                                           trusts_proxy=None if tls else self._trusts_proxy,
                                           tls=self._server_tls if tls else None))

    def _trusts_proxy(self, host: Optional[str]) -> bool:
        return self.access.is_trusted_proxy(host)

    def _forwarded_client(self, peer: str, forwarded_for: Optional[str]) -> str:
        return self.access.forwarded_client(peer, forwarded_for)

    def _server_tls(self) -> Any:
        if self.tls_context is None:
            raise TLSConfigError("a wss:// or https:// address needs a TLS certificate and key (tls_certificate, tls_key)")
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
    def accept_client(self, connection: Connection) -> Session:
        """The session that will serve ``connection`` (a subclass's choice of kind)."""
        raise NotImplementedError

    async def admit(self, connection: Connection) -> None:
        """Serve one accepted connection, of any kind: the one hand-off from every
        listener.  Reads a trusted proxy's PROXY header, closes a client the access
        rules shut out, refuses or makes room by the connection limits, then runs the
        session ``accept_client`` builds until it ends."""
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
        client: Optional[Session] = None
        try:
            client = (HTTPSession(connection, connection.routes, self.logger)
                      if isinstance(connection, HTTPConnection) else self.accept_client(connection))
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
        self.addresses = [listener.address for listener in self.listeners
                          if not isinstance(listener, HTTPListener) and not listener.private]
        self.http_addresses = [listener.address for listener in self.listeners
                               if isinstance(listener, HTTPListener)]
        self.address = (self.addresses or self.http_addresses)[0]
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
