"""The HTTP session: HTTP/1.1 requests over an ``HTTPConnection``, parsed by h11.

A kind of ``session.Session`` (the listener seam), admitted, timed out, evicted,
stopped and logged as a JSON-lines session is.  h11 is sans-I/O: this session feeds
it the bytes the connection reads and writes the bytes it makes, so the transport,
the event loop and the limits stay the server's own.  h11 (the ``web`` extra) is
imported only when a session starts: ``lib/prserv`` imports without it.

What the session decides itself, whatever the routes: GET and HEAD only (any other
method is 405 with ``Allow``); no request bodies (400, or 405 for another method,
and the connection is closed: the body is never read); a request line with headers
over ``MAX_HEAD`` bytes is 431; a malformed request is 400 (both closed too).
Requests on one connection are answered one after another, in order (keep-alive and
pipelining); ``Connection: close`` is honoured.  What a request gets otherwise is the
``Routes``' answer: the server supplies them, so this layer knows no page.  Before a
request is handed to them the routes say who sends it (``Routes.viewer``: a
``Viewer``, from the ``Client`` the connection comes from and the request's
headers), so a page can show more to clients that may write; the user a client
proved is named in the closing line.

Every answer, the session's own included, is counted in the server's request
figures (``Session.stats``: ``get-stats``, ``/metrics``) under ``http GET``, ``http
HEAD`` or ``http other`` (any other method, or a request too malformed to have
one: a bounded set of names, whatever clients send), an error if its status is 400
or above; its time runs from the request read whole (or refused) to its answer made.

Session attributes as ``session.Session`` documents them: ``setup_done`` once the
first request has arrived whole (until then the handshake timeout applies);
``silent_since()`` is when the last answer left, while the next request has not
arrived whole (so the idle timeout bounds a request that trickles in, too).
"""

from __future__ import annotations

import http
import logging
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Protocol, Tuple, Union

from .exceptions import ConnectionClosedError
from .httpstream import HTTPConnection
from .session import Session

MAX_HEAD = 16 * 1024
"""Bytes of a request line with its headers at most (h11's incomplete-event limit)."""
ALLOWED_METHODS = ("GET", "HEAD")
ALLOW = ", ".join(ALLOWED_METHODS)
ALLOW_HEADER = ("Allow", ALLOW)
LINGER_SECONDS = 2.0
"""How long a connection closed after an error answer waits for the client's rest."""
COMMANDS = {method.encode("ascii"): "http " + method for method in ALLOWED_METHODS}
"""The names HTTP requests are counted under in the server's figures, by method."""
OTHER_COMMAND = "http other"
RETRY_AFTER_SECONDS = 1
"""When a client the connection limits refused may try again (``Retry-After``)."""

Headers = List[Tuple[str, str]]


@dataclass
class Response:
    """An answer: status, headers (``Content-Length`` is added), body."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""

    def with_headers(self, *headers: Tuple[str, str]) -> "Response":
        """This answer with ``headers`` added after its own."""
        return Response(self.status, self.headers + list(headers), self.body)


@dataclass(frozen=True)
class Client:
    """Where a connection's requests come from, as the routes judge them."""

    host: Optional[str]
    """The client's address (behind a trusted proxy, the one its PROXY header names)."""
    socket_host: Optional[str]
    """The address this server's socket is connected to (the proxy, if any): the hop
    that credentials cross in the clear over plain HTTP."""
    secure: bool
    """The connection is HTTPS."""


@dataclass(frozen=True)
class Viewer:
    """Who sent a request, as far as pages need to know: whether the client may write
    (it then also sees who was given each value, and ``/metrics``), and the user it
    proved (None: anonymous)."""

    may_write: bool = False
    user: Optional[str] = None


class Routes(Protocol):
    """What answers requests (the server supplies it): every request the session
    accepts (GET or HEAD, no body) goes to ``viewer``, then to ``handle``; ``error``
    shapes the answers the session gives itself (400, 405, 431), so that all errors
    look alike."""

    async def viewer(self, client: Client, headers: Headers) -> Union[Viewer, Response]:
        """Who sends a request with ``headers`` from ``client``; or the answer that
        refuses it (wrong credentials, credentials sent in the clear...)."""

    async def handle(self, method: str, target: str, headers: Headers, viewer: Viewer) -> Response:
        """The answer to ``method`` (GET or HEAD: answer as for GET, the session
        drops a HEAD answer's body) on ``target`` (the request target as sent), for
        ``viewer``."""

    def error(self, status: int, message: str) -> Response:
        """An error answer with ``status`` saying ``message``."""


def import_h11() -> Any:
    """The h11 module (``ImportError`` without the ``web`` extra)."""
    import h11

    return h11


def head_size(request: Any) -> int:
    """The size of an h11 ``Request``'s request line with its headers, as h11 keeps
    them (optional blanks stripped): h11 only limits a head that is still incomplete,
    so one that arrived whole in a single read is measured here."""
    size = len(request.method) + len(request.target) + len(request.http_version) + 9
    for name, value in request.headers:
        size += len(name) + len(value) + 4
    return size + 2


class HTTPSession(Session):
    """One HTTP client connection: its requests answered in order by ``routes``."""

    def __init__(self, connection: HTTPConnection, routes: Routes, logger: logging.Logger) -> None:
        self.begin(connection, logger)
        self.connection: HTTPConnection = connection
        self.routes = routes
        self.client = Client(connection.peer_host, connection.socket_host, connection.secure)
        self._idle_since: Optional[float] = None
        self._stopping = False
        self._closed = False

    # -- the Session interface
    def silent_since(self) -> Optional[float]:
        return None if self._closed else self._idle_since

    def stop_receiving(self) -> None:
        self._stopping = True
        self.connection.stop_receiving()

    async def close(self) -> None:
        self._closed = True
        await self.connection.close()

    async def process_requests(self) -> None:
        h11 = import_h11()
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            await self._serve(h11, parser)
        except ConnectionClosedError:
            if not self._closed:
                self.end_reason = "connection lost"
        finally:
            await self.close()
            self.log_closed()

    # -- serving
    async def _serve(self, h11: Any, parser: Any) -> None:
        request = None
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if not self._closed:
                    status = exc.error_status_hint
                    message = ("request line and headers over %d bytes" % MAX_HEAD if status == 431
                               else "malformed request: %s" % _what(exc))
                    await self._fail(h11, parser, None, status, message)
                return
            if event is h11.NEED_DATA:
                data = await self.connection.read()
                if self._stopping and parser.their_state is h11.IDLE:
                    self.end_reason = "server stopping"
                    return
                parser.receive_data(data)
            elif isinstance(event, h11.Request):
                self.requests += 1
                self._idle_since = None
                request = event
                if await self._refused_at_head(h11, parser, request):
                    return
            elif isinstance(event, h11.EndOfMessage):
                self.setup_done = True
                started = time.perf_counter()
                response = await self._answer(request)
                self._count(request.method, response.status, started)
                await self._send(h11, parser, request.method, response, close=self._stopping)
                if parser.our_state is h11.MUST_CLOSE:
                    self.end_reason = ("server stopping" if self._stopping
                                       else "closed after an answer (Connection: close)")
                    return
                parser.start_next_cycle()
                self._idle_since = time.monotonic()
            elif isinstance(event, h11.ConnectionClosed):
                return
            else:                       # a body's data: refused at its head, never read
                await self._fail(h11, parser, request, 400, "unexpected %s" % type(event).__name__)
                return

    async def _refused_at_head(self, h11: Any, parser: Any, request: Any) -> bool:
        """Answer and close for a head over the limit or a request with a body."""
        if head_size(request) > MAX_HEAD:
            await self._fail(h11, parser, request, 431, "request line and headers over %d bytes" % MAX_HEAD)
            return True
        body = False
        for name, value in request.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
                body = True
        if not body:
            return False
        method = request.method.decode("latin-1")
        if method not in ALLOWED_METHODS:
            await self._fail(h11, parser, request, 405, _not_allowed(method))
        else:
            await self._fail(h11, parser, request, 400, "requests carry no body here")
        return True

    async def _answer(self, request: Any) -> Response:
        method = request.method.decode("latin-1")
        if method not in ALLOWED_METHODS:
            return self.routes.error(405, _not_allowed(method)).with_headers(ALLOW_HEADER)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers]
        try:
            viewer = await self.routes.viewer(self.client, headers)
            if isinstance(viewer, Response):
                return viewer
            if viewer.user is not None:
                self.user = viewer.user
            return await self.routes.handle(method, request.target.decode("latin-1"), headers, viewer)
        except Exception:
            self.logger.exception("error answering %s %r", method, request.target)
            return self.routes.error(500, "internal error")

    def _count(self, method: Optional[bytes], status: int, started: float) -> None:
        stats = self.stats
        if stats is not None:
            stats.record(COMMANDS.get(method, OTHER_COMMAND), time.perf_counter() - started, status < 400)

    async def _fail(self, h11: Any, parser: Any, request: Any, status: int, message: str) -> None:
        """Answer ``status`` and close (lingering: the client reads the answer)."""
        self._count(request.method if request is not None else None, status, time.perf_counter())
        self.end_reason = "%d: %s" % (status, message)
        response = self.routes.error(status, message)
        if status == 405:
            response = response.with_headers(ALLOW_HEADER)
        try:
            await self._send(h11, parser, request.method if request is not None else b"GET", response,
                             close=True)
        except h11.LocalProtocolError:
            return                      # nothing can be said in this state: just close
        await self.connection.linger(LINGER_SECONDS)

    async def _send(self, h11: Any, parser: Any, method: bytes, response: Response, close: bool) -> None:
        self.connection.write(response_bytes(h11, parser, method, response, close))
        await self.connection.drain()


def response_bytes(h11: Any, parser: Any, method: bytes, response: Response, close: bool) -> bytes:
    """``response`` as h11's ``parser`` writes it (``Content-Length`` added but to a
    304; no body for HEAD; ``Connection: close`` if ``close``)."""
    headers = list(response.headers)
    if response.status != 304:          # a 304's length would be its 200's
        headers.append(("Content-Length", str(len(response.body))))
    if close:
        headers.append(("Connection", "close"))
    data = parser.send(h11.Response(status_code=response.status, headers=headers,
                                    reason=_reason(response.status)))
    if method != b"HEAD" and response.body:
        data += parser.send(h11.Data(data=response.body))
    data += parser.send(h11.EndOfMessage())
    return data


async def answer_refused(connection: HTTPConnection, reason: str) -> None:
    """Tell a client the connection limits refuse (``admission.refuse``) why: its first
    request is answered ``503`` with ``Retry-After`` and the routes' error body, then
    the connection closes.  A malformed request, or none, gets no answer (the caller
    bounds the wait)."""
    h11 = import_h11()
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            return
        if event is h11.NEED_DATA:
            parser.receive_data(await connection.read())
        elif isinstance(event, h11.Request):
            break
        else:
            return                              # closed before a request
    answer = connection.routes.error(503, reason)
    answer = answer.with_headers(("Retry-After", str(RETRY_AFTER_SECONDS)))
    try:
        connection.write(response_bytes(h11, parser, event.method, answer, close=True))
    except h11.LocalProtocolError:
        return
    await connection.drain()
    await connection.linger(LINGER_SECONDS)


def _what(exc: Exception) -> str:
    """h11's reason for refusing a request, without the bytes it quotes (they are
    the client's, maybe long: not for the answer or the log)."""
    return str(exc).split(": bytearray(", 1)[0][:100]


def _not_allowed(method: str) -> str:
    return "method %s not allowed (%s only)" % (method, ALLOW)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""
