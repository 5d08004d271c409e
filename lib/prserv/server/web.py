"""The HTTP listener's routes (``--http HOST:PORT``): the JSON API, the pages, ``/metrics``.

The session (``asyncrpc.httpsession``) parses HTTP and refuses what no route takes
(other methods, bodies, oversized heads); this module answers the requests it
passes on, from what the server already knows.  The routes:

* ``GET /api/v1/status``: the server's role, engine, version, upstream and mirror
  source, the history's identity, its figures and its sources' state;
* ``GET /api/v1/history?version=V&pkgarch=A``: every row of one package in numeric
  value order (``history``), 404 for a package without rows; with an ``ETag`` (a hash
  of the answer) that ``If-None-Match`` turns into 304;
* ``GET /api/v1/packages?prefix=&pkgarch=&limit=&after=``: packages in (version,
  pkgarch) byte order with their largest values, those whose version starts with
  ``prefix`` (literally, case-sensitive); ``limit`` 1 to 1000 (100 by default);
  ``next`` (and a ``Link: rel="next"`` header) is the opaque cursor ``after`` takes
  for the page after, the last package shown, so that values added while paging
  neither repeat nor skip a package;
* ``GET /api/v1/recent?since=&after=&limit=``: values newest first, those given at or
  after ``since`` (RFC 3339), paginated the same way;
* ``GET /api/v1/openapi.json``: the API's description (``server.openapi``);
* ``GET /metrics``: Prometheus' text, as ``--metrics`` serves it, to clients that
  may write (``webaccess``); 404 to everyone else (its existence is not advertised);
* the HTML pages ``/``, ``/packages``, ``/package``, ``/recent`` and their stylesheet
  (``server.pages``), each rendered from the document its JSON twin sends, errors as
  pages;
* anything else: 404.  A target whose percent-encoding is broken, or does not
  decode to UTF-8, is 400.

Every other answer is JSON, errors as ``{"error": {"message": ...}}``.  Its
HTTP stack (h11, in the ``web`` extra: ``pip install 'prserv[web]'``) is imported
only by the session when a client connects: bitbake's copy of ``lib/prserv`` never
needs it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import json
import re
import time
from typing import Any, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union
from urllib.parse import parse_qs, unquote_to_bytes, urlencode, urlsplit

from ..asyncrpc.address import parse_tcp_address
from ..asyncrpc.httpsession import Client, Headers, Response, Viewer
from ..errors import InvalidRequestError
from ..storage.postgresql.url import is_url
from ..version import __version__
from ..timestamps import now_us, parse_rfc3339, rfc3339
from . import metrics, openapi, pages
from .parentstate import ParentState
from .history import history_document, recent_items
from .webaccess import Refusal, viewer_of

EXTRA = "web"
HTTP_PREFIX = "http://"
HTTPS_PREFIX = "https://"
STATUS_PATH = "/api/v1/status"
HISTORY_PATH = "/api/v1/history"
PACKAGES_PATH = "/api/v1/packages"
RECENT_PATH = "/api/v1/recent"
OPENAPI_PATH = "/api/v1/openapi.json"
METRICS_PATH = "/metrics"
DAY_US = 24 * 3600 * 10**6
FIGURE_SECONDS = 5.0
"""How long the status' count of the last 24 hours' values is shown before it is
counted again."""
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
JSON_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def available() -> bool:
    """Whether h11 can be imported (checked without importing it; an import hook
    that refuses it counts as its absence)."""
    try:
        return importlib.util.find_spec("h11") is not None
    except ImportError:
        return False


def endpoint(address: str) -> Tuple[str, int]:
    """(host, port) to listen on, from ``HOST:PORT``, ``[V6]:PORT``,
    ``http://HOST:PORT`` or ``https://HOST:PORT`` (``uses_tls``); ``ValueError``
    saying what is wrong (another form, or h11 not installed)."""
    text = address.strip()
    for prefix in (HTTPS_PREFIX, HTTP_PREFIX):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].rstrip("/")
            break
    endpoint = parse_tcp_address(text, "expected HOST:PORT, [V6]:PORT, http://HOST:PORT or https://HOST:PORT")
    if not available():
        raise ValueError("the HTTP listener needs h11: pip install 'prserv[%s]'" % EXTRA)
    return endpoint


def uses_tls(address: str) -> bool:
    """Whether the listener at ``address`` serves HTTPS (``https://HOST:PORT``), with
    the server's ``tls_certificate`` and ``tls_key``."""
    return address.strip().lower().startswith(HTTPS_PREFIX)


def role(read_only: bool, mirror: Optional[str]) -> str:
    """What the status calls a server: ``mirror``, ``read-only`` or ``read-write``."""
    return "mirror" if mirror else "read-only" if read_only else "read-write"


class Described(Protocol):
    """What the status reads of a server (``PRServer``)."""

    read_only: bool
    mirror: Optional[str]
    upstream: Optional[str]
    dbfile: str
    engine: Any
    """The server's ``storage.engine.Engine``."""
    allocator: Any
    """The server's ``server.allocator.Allocator`` (its ``upstream``)."""

    shown_as: Optional[Dict[str, Any]]
    """What the status says of the server's role, upstream and mirror source when
    they are another server's (``role``, ``upstream``, ``mirror_of``: the server this
    one serves the pages of; ``parent``: that server's private address, asked for the
    state of its mirror and upstream, ``parentstate``), else None."""

    def mirror_status(self) -> Optional[Dict[str, Any]]: ...


def request_path(target: str) -> str:
    """The decoded path of a request target (origin or absolute form); ``ValueError``
    for broken percent-encoding (anywhere in the target) or a path that is not UTF-8."""
    if _BAD_PERCENT.search(target):
        raise ValueError("bad percent-encoding in the request target")
    if not target.isascii():
        raise ValueError("the request target is not ASCII (percent-encode it)")
    path = target.split("?", 1)[0] if target.startswith("/") else urlsplit(target).path
    try:
        return unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the request target's path is not UTF-8") from None


def request_query(target: str) -> Dict[str, List[str]]:
    """The query parameters of a request target, decoded (``ValueError`` if they are
    not UTF-8); call after ``request_path`` has checked the percent-encoding."""
    query = target.split("?", 1)[1] if "?" in target else ""
    return parse_qs(query, keep_blank_values=True, errors="strict")


Query = Dict[str, List[str]]
"""A request's query parameters, decoded (``request_query``)."""


class HTTPError(Exception):
    """A request a route cannot answer: ``status`` (400, 404) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def optional(query: Query, name: str) -> Optional[str]:
    """A query parameter given at most once; None when absent or empty."""
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValueError("query parameter %r is given %d times" % (name, len(values)))
    return values[0] or None


def required(query: Query, name: str) -> str:
    """A query parameter given once, not empty (``ValueError`` saying which)."""
    value = optional(query, name)
    if value is None:
        raise ValueError("query parameter %r is required" % name)
    return value


def page_size(query: Query) -> int:
    text = optional(query, "limit")
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isdigit() and text.isascii()) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError("query parameter 'limit' must be a whole number from 1 to %d" % MAX_LIMIT)
    return int(text)


def cursor(place: Sequence[str]) -> str:
    """The opaque token of a place in a listing (the package, or the position, shown
    last)."""
    return base64.urlsafe_b64encode(json.dumps(list(place)).encode("utf-8")).decode("ascii").rstrip("=")


def after_cursor(text: Optional[str], parts: int = 2) -> Optional[Tuple[str, ...]]:
    """The place a ``cursor`` of ``parts`` strings names (``ValueError`` for anything
    else)."""
    if text is None:
        return None
    try:
        place = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8"))
    except ValueError:
        raise ValueError("query parameter 'after' is not a cursor this server gave") from None
    if not (isinstance(place, list) and len(place) == parts and all(isinstance(part, str) for part in place)):
        raise ValueError("query parameter 'after' is not a cursor this server gave")
    return tuple(place)


async def rendered(parts: Iterable[bytes]) -> bytes:
    """A page made of ``parts``, other requests answered between them."""
    made = []
    for part in parts:
        made.append(part)
        await asyncio.sleep(0)
    return b"".join(made)


def linked(response: Response, path: str, following: Optional[List[Tuple[str, str]]]) -> Response:
    """``response`` with a ``Link: rel="next"`` header to the page after, if any."""
    if following is None or response.status != 200:
        return response
    return response.with_headers(("Link", '<%s?%s>; rel="next"' % (path, urlencode(following))))


def json_response(status: int, document: Any) -> Response:
    return Response(status, list(JSON_HEADERS), json.dumps(document).encode("utf-8"))


def tagged(response: Response, headers: Headers) -> Response:
    """``response`` with an ``ETag`` (a hash of its body), or 304 without a body when
    the request's ``If-None-Match`` names that tag already."""
    tag = '"%s"' % hashlib.sha256(response.body).hexdigest()[:32]
    for name, value in headers:
        if name.lower() == "if-none-match" and (value.strip() == "*" or tag in
                                                 [part.strip() for part in value.split(",")]):
            return Response(304, [("ETag", tag), ("Cache-Control", "no-cache")])
    kept = [header for header in response.headers if header[0] != "Cache-Control"]
    return Response(response.status, kept + [("Cache-Control", "no-cache"), ("ETag", tag)], response.body)


def form_values(query: Query, *names: str) -> List[str]:
    """The parameters a page's form shows again, "" when absent (``HTTPError`` 400
    for one given twice, as the document's own checks say)."""
    try:
        return [optional(query, name) or "" for name in names]
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None


class WebRoutes:
    """The routes of one server (``asyncrpc.httpsession.Routes``)."""

    def __init__(self, server: Described) -> None:
        self.server = server
        self._given_24h: Optional[Tuple[float, Optional[int]]] = None
        self._parent: Optional[ParentState] = None

    async def viewer(self, client: Client, headers: Headers) -> Union[Viewer, Response]:
        """Who sends the request (``webaccess``), or the answer refusing it."""
        try:
            return await viewer_of(self.server, client, headers)       # type: ignore[arg-type]
        except Refusal as refusal:
            return self.error(refusal.status, refusal.message).with_headers(*refusal.headers)

    async def handle(self, method: str, target: str, headers: Headers, viewer: Viewer) -> Response:
        try:
            path, query = request_path(target), request_query(target)
        except ValueError as exc:
            return self.error(400, str(exc))
        if path == STATUS_PATH:
            return json_response(200, await self.status())
        if path == HISTORY_PATH:
            return await self.history(query, headers, viewer)
        if path == PACKAGES_PATH:
            return await self.packages(query, headers)
        if path == RECENT_PATH:
            return await self.recent(query, headers, viewer)
        if path == OPENAPI_PATH:
            return json_response(200, openapi.document())
        if path == METRICS_PATH and viewer.may_write and metrics.available():
            return await self.metrics()
        if path in pages.ROUTES:
            return await self.page(path, query, viewer)
        if path == pages.STYLESHEET_URL:
            return tagged(Response(200, list(pages.STYLESHEET_HEADERS), pages.STYLESHEET), headers)
        return self.error(404, "no such resource: %s" % path)

    async def history(self, query: Query, headers: Headers, viewer: Viewer) -> Response:
        try:
            document = await self.history_data(query, viewer)
        except HTTPError as exc:
            return self.error(exc.status, exc.message)
        return tagged(json_response(200, document), headers)

    async def packages(self, query: Query, headers: Headers) -> Response:
        try:
            document, following = await self.packages_data(query)
        except HTTPError as exc:
            return self.error(exc.status, exc.message)
        return linked(tagged(json_response(200, document), headers), PACKAGES_PATH, following)

    async def recent(self, query: Query, headers: Headers, viewer: Viewer) -> Response:
        try:
            document, following = await self.recent_data(query, viewer)
        except HTTPError as exc:
            return self.error(exc.status, exc.message)
        return linked(tagged(json_response(200, document), headers), RECENT_PATH, following)

    async def page(self, path: str, query: Query, viewer: Viewer) -> Response:
        """An HTML page, rendered from the document its JSON twin sends; an
        ``HTTPError`` becomes an error page saying the JSON answer's message."""
        try:
            if path == pages.PACKAGES:
                document, following = await self.packages_data(query)
                body = pages.packages_page(document, *form_values(query, "prefix", "pkgarch"), following)
            elif path == pages.PACKAGE:
                body = await rendered(pages.package_parts(await self.history_data(query, viewer), viewer.may_write))
            elif path == pages.RECENT:
                document, following = await self.recent_data(query, viewer)
                body = pages.recent_page(document, *form_values(query, "since"), following, viewer.may_write)
            else:
                recent, _ = await self.recent_data({"limit": [str(pages.HOME_RECENT)]}, viewer)
                body = pages.home_page(await self.status(), recent, viewer.may_write)
        except HTTPError as exc:
            return Response(exc.status, list(pages.HEADERS), pages.error_page(exc.status, exc.message))
        return Response(200, list(pages.HEADERS), body)

    # -- what each route shows, as a document: the JSON API sends it, a page renders it
    async def history_data(self, query: Query, viewer: Viewer) -> Dict[str, Any]:
        """``/api/v1/history``'s document (``HTTPError`` 400 or 404)."""
        try:
            version, pkgarch = required(query, "version"), required(query, "pkgarch")
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        rows = await self.server.engine.history(version, pkgarch)
        if not rows:
            raise HTTPError(404, "no package %s/%s" % (version, pkgarch))
        return history_document(version, pkgarch, rows, viewer.may_write)

    async def packages_data(self, query: Query) -> Tuple[Dict[str, Any], Optional[List[Tuple[str, str]]]]:
        """``/api/v1/packages``' document, and the query parameters of the page after
        it (None on the last page); ``HTTPError`` 400."""
        try:
            prefix, pkgarch = optional(query, "prefix") or "", optional(query, "pkgarch")
            limit, after = page_size(query), after_cursor(optional(query, "after"))
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        found = await self.server.engine.packages(prefix, pkgarch, after, limit + 1)   # type: ignore[arg-type]
        shown = found[:limit]
        following = cursor(shown[-1][:2]) if len(found) > limit else None
        document = {"items": [{"version": version, "pkgarch": arch, "latest": latest, "given": rfc3339(given)}
                              for version, arch, latest, given in shown],
                    "next": following}
        if following is None:
            return document, None
        parameters = [("prefix", prefix)] if prefix else []
        parameters += [("pkgarch", pkgarch)] if pkgarch else []
        parameters += [("limit", str(limit)), ("after", following)]
        return document, parameters

    async def recent_data(self, query: Query, viewer: Viewer) -> Tuple[Dict[str, Any], Optional[List[Tuple[str, str]]]]:
        """``/api/v1/recent``'s document, newest first, and the query parameters of the
        page after it (None on the last page); ``HTTPError`` 400."""
        try:
            since_text = optional(query, "since")
            since = None if since_text is None else parse_rfc3339(since_text)
            limit, after = page_size(query), after_cursor(optional(query, "after"), 1)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        try:
            found = await self.server.engine.recent(since, None if after is None else after[0], limit + 1)
        except InvalidRequestError:
            raise HTTPError(400, "query parameter 'after' is not a cursor this server gave") from None
        shown = found[:limit]
        following = cursor([shown[-1][0]]) if len(found) > limit else None
        document = {"items": recent_items(shown, viewer.may_write), "next": following}
        if following is None:
            return document, None
        parameters = [("since", since_text)] if since_text else []
        return document, parameters + [("limit", str(limit)), ("after", following)]

    def error(self, status: int, message: str) -> Response:
        return json_response(status, {"error": {"message": message}})

    async def metrics(self) -> Response:
        """``/metrics``: the server's figures read now, as ``--metrics`` shows them.  In
        an HTTP child, those of the server it serves the pages of, with the child's
        HTTP requests and connections added (503 while that server does not answer)."""
        shown = metrics.figures(self.server)            # type: ignore[arg-type]
        parent = self.parent()
        if parent is not None:
            served = await parent.figures()
            if served is None:
                return self.error(503, "the server whose pages these are did not answer")
            shown = metrics.combined(served, shown)
        content_type, body = metrics.exposition(metrics.registry_reading(lambda: shown))
        return Response(200, [("Content-Type", content_type), ("Cache-Control", "no-store")], body)

    def parent(self) -> Optional[ParentState]:
        """The server whose pages these are, when it is another process (an HTTP
        child's parent, ``server.shown_as``); None when it is this one."""
        shown_as = self.server.shown_as
        if self._parent is None and shown_as is not None and shown_as.get("parent"):
            self._parent = ParentState(shown_as["parent"])
        return self._parent

    async def given_24h(self) -> Optional[int]:
        """Values given in the last 24 hours, counted at most every ``FIGURE_SECONDS``
        (the count reads the day's records: not on every view of a busy status)."""
        now = time.monotonic()
        if self._given_24h is None or now - self._given_24h[0] >= FIGURE_SECONDS:
            self._given_24h = (now, await self.server.engine.given_since(now_us() - DAY_US))
        return self._given_24h[1]

    async def status(self) -> Dict[str, Any]:
        """What this server is (role, engine, version, upstream, mirror source, the
        history's identity), its figures and the state of its sources.  Figures come
        from what the engine keeps counted or indexed, never a count of the table."""
        server = self.server
        engine = server.engine
        upstream = server.allocator.upstream if server.allocator is not None else None
        described = {"role": role(server.read_only, server.mirror), "upstream": server.upstream,
                     "mirror_of": server.mirror}
        mirror_state = server.mirror_status()
        upstream_state = None if upstream is None else {
            "address": upstream.address, "down": upstream.is_down, **upstream.outcomes}
        if server.shown_as is not None:
            described.update({key: server.shown_as.get(key) for key in described})
            parent = self.parent()
            if parent is not None:
                mirror_state, upstream_state = await parent.read()
        return {"role": described["role"], "engine": "postgresql" if is_url(server.dbfile) else "sqlite",
                "version": __version__, "upstream": described["upstream"], "mirror_of": described["mirror_of"],
                "identity": (await engine.changes(None, 0)).identity,
                "figures": {"packages": await engine.packages_stored(), "values": await engine.values_stored(),
                            "given_24h": await self.given_24h()},
                "mirror": mirror_state, "upstream_state": upstream_state}
