"""The HTTP listener's routes (``--http HOST:PORT``): a JSON status API, for now.

The session (``asyncrpc.httpsession``) parses HTTP and refuses what no route takes
(other methods, bodies, oversized heads); this module answers the requests it
passes on, from what the server already knows.  Routes so far:

* ``GET /api/v1/status``: the server's role, engine, version, upstream and mirror
  source;
* ``GET /metrics``: Prometheus' text, as ``--metrics`` serves it, to clients that
  may write (``webaccess``); 404 to everyone else (its existence is not advertised);
* anything else: 404.  A target whose percent-encoding is broken, or does not
  decode to UTF-8, is 400.

Every answer is JSON, errors as ``{"error": {"message": ...}}``, never cached.  Its
HTTP stack (h11, in the ``web`` extra: ``pip install 'prserv[web]'``) is imported
only by the session when a client connects: bitbake's copy of ``lib/prserv`` never
needs it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any, Dict, Optional, Protocol, Tuple, Union
from urllib.parse import unquote_to_bytes, urlsplit

from ..asyncrpc.address import parse_tcp_address
from ..asyncrpc.httpsession import Client, Headers, Response, Viewer
from ..storage.postgresql.url import is_url
from ..version import __version__
from . import metrics
from .webaccess import Refusal, viewer_of

EXTRA = "web"
HTTP_PREFIX = "http://"
HTTPS_PREFIX = "https://"
STATUS_PATH = "/api/v1/status"
METRICS_PATH = "/metrics"
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


class Described(Protocol):
    """What the status reads of a server (``PRServer``)."""

    read_only: bool
    mirror: Optional[str]
    upstream: Optional[str]
    dbfile: str


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


def json_response(status: int, document: Any) -> Response:
    return Response(status, list(JSON_HEADERS), json.dumps(document).encode("utf-8"))


class WebRoutes:
    """The routes of one server (``asyncrpc.httpsession.Routes``)."""

    def __init__(self, server: Described) -> None:
        self.server = server
        self._registry: Optional[Any] = None

    async def viewer(self, client: Client, headers: Headers) -> Union[Viewer, Response]:
        """Who sends the request (``webaccess``), or the answer refusing it."""
        try:
            return await viewer_of(self.server, client, headers)       # type: ignore[arg-type]
        except Refusal as refusal:
            answer = self.error(refusal.status, refusal.message)
            return Response(answer.status, answer.headers + refusal.headers, answer.body)

    async def handle(self, method: str, target: str, headers: Headers, viewer: Viewer) -> Response:
        try:
            path = request_path(target)
        except ValueError as exc:
            return self.error(400, str(exc))
        if path == STATUS_PATH:
            return json_response(200, self.status())
        if path == METRICS_PATH and viewer.may_write and metrics.available():
            return self.metrics()
        return self.error(404, "no such resource: %s" % path)

    def error(self, status: int, message: str) -> Response:
        return json_response(status, {"error": {"message": message}})

    def metrics(self) -> Response:
        """``/metrics``: the server's figures read now, as ``--metrics`` shows them."""
        if self._registry is None:
            self._registry = metrics.registry_of(self.server)      # type: ignore[arg-type]
        content_type, body = metrics.exposition(self._registry)
        return Response(200, [("Content-Type", content_type), ("Cache-Control", "no-store")], body)

    def status(self) -> Dict[str, Any]:
        """What this server is: role, engine, version, upstream, mirror source."""
        server = self.server
        role = "mirror" if server.mirror else "read-only" if server.read_only else "read-write"
        return {"role": role, "engine": "postgresql" if is_url(server.dbfile) else "sqlite",
                "version": __version__, "upstream": server.upstream, "mirror_of": server.mirror}
