"""The HTTP listener's routes (``--http HOST:PORT``): a JSON status API, for now.

The session (``asyncrpc.httpsession``) parses HTTP and refuses what no route takes
(other methods, bodies, oversized heads); this module answers the requests it
passes on, from what the server already knows.  Routes so far:

* ``GET /api/v1/status``: the server's role, engine, version, upstream and mirror
  source;
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
from typing import Any, Dict, Optional, Protocol, Tuple
from urllib.parse import unquote_to_bytes, urlsplit

from ..asyncrpc.address import parse_tcp_address
from ..asyncrpc.httpsession import Headers, Response
from ..storage.postgresql.url import is_url
from ..version import __version__

EXTRA = "web"
HTTP_PREFIX = "http://"
HTTPS_PREFIX = "https://"
STATUS_PATH = "/api/v1/status"
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

    async def handle(self, method: str, target: str, headers: Headers) -> Response:
        try:
            path = request_path(target)
        except ValueError as exc:
            return self.error(400, str(exc))
        if path == STATUS_PATH:
            return json_response(200, self.status())
        return self.error(404, "no such resource: %s" % path)

    def error(self, status: int, message: str) -> Response:
        return json_response(status, {"error": {"message": message}})

    def status(self) -> Dict[str, Any]:
        """What this server is: role, engine, version, upstream, mirror source."""
        server = self.server
        role = "mirror" if server.mirror else "read-only" if server.read_only else "read-write"
        return {"role": role, "engine": "postgresql" if is_url(server.dbfile) else "sqlite",
                "version": __version__, "upstream": server.upstream, "mirror_of": server.mirror}
