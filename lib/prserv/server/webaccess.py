"""Who sees what on the HTTP listener: the ``Viewer`` of each request.

``allow`` decides who may connect at all (at accept, as for every listener).  Of
those, a client "may write" -- and then also sees who was given each value, and
``/metrics`` -- as a PR session may store values (``session.may_write``): its address
is in ``allow_write``, or it proves a token with the ``write`` (or ``admin``)
permission.  Over HTTP a token is proved with Basic authentication (the user name,
the token as password, checked by ``session.prove_user``, slow to fail as ``auth``
is), on every request that carries it.

Credentials cross the network as sent: they are taken over HTTPS, or over plain HTTP
from this host only (the socket's peer on loopback: a local client, or a proxy on
this host that terminates TLS).  Sent in the clear from elsewhere they are refused
(403), whether right or not.  Wrong ones are 401 with a Basic challenge, so a browser
asks again.

Behind a trusted proxy the client's address is its ``X-Forwarded-For`` (the
rightmost entry that is not a trusted proxy, as for websockets:
``AccessRules.forwarded_client``), read per request: a proxy may carry several
clients' requests on one connection.  ``allow`` then applies to that address too.

Tokens and the ``Authorization`` header are never logged.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, List, Optional, Protocol, Tuple

from ..access import AccessRules, parse_address
from ..asyncrpc.httpsession import Client, Headers, Viewer
from ..storage.engine import Engine
from .session import may_write, prove_user

REALM = "prserv"
CHALLENGE = ("WWW-Authenticate", 'Basic realm="%s"' % REALM)
"""What a 401 answer carries: browsers then ask for a user name and token."""


class Refusal(Exception):
    """A request refused before any route sees it: ``status``, the message, and the
    headers the answer carries."""

    def __init__(self, status: int, message: str, headers: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class Guarded(Protocol):
    """What the decision reads of a server (``PRServer``)."""

    access: AccessRules
    engine: Optional[Engine]
    logger: Any


def header_values(headers: Headers, name: str) -> List[str]:
    """Every value of header ``name`` (lower case: h11 gives names so)."""
    return [value for key, value in headers if key == name]


def client_host(access: AccessRules, client: Client, headers: Headers) -> Optional[str]:
    """The address a request comes from: ``client.host``, or behind a trusted proxy
    its ``X-Forwarded-For`` client."""
    host = client.host
    forwarded = header_values(headers, "x-forwarded-for")
    if host is None or not forwarded:
        return host
    return access.forwarded_client(host, ", ".join(forwarded))


def basic_credentials(values: List[str]) -> Optional[Tuple[str, str]]:
    """(user, token) from one ``Authorization: Basic`` header; None if it is not one."""
    if len(values) != 1:
        return None
    scheme, _, encoded = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, token = text.partition(":")
    return (user, token) if colon and user and token else None


def in_the_clear_from_elsewhere(client: Client) -> bool:
    """Plain HTTP from another host: what is sent can be read on the way."""
    if client.secure:
        return False
    address = parse_address(client.socket_host) if client.socket_host is not None else None
    return address is None or not address.is_loopback


async def viewer_of(server: Guarded, client: Client, headers: Headers) -> Viewer:
    """Who sends a request with ``headers`` from ``client`` (``Refusal`` for a client
    ``allow`` shuts out behind a proxy, credentials in the clear, wrong credentials)."""
    access = server.access
    host = client_host(access, client, headers)
    if host != client.host and not access.may_connect(host):
        raise Refusal(403, "not allowed to connect from %s" % host)
    network_writes = access.may_write(host)
    authorization = header_values(headers, "authorization")
    if not authorization:
        return Viewer(may_write(network_writes, frozenset()))
    if in_the_clear_from_elsewhere(client):
        raise Refusal(403, "credentials are accepted over https only (or over http from this host)")
    credentials = basic_credentials(authorization)
    record = None
    if credentials is not None and server.engine is not None:
        record = await prove_user(server.engine, *credentials)
    if record is None:
        server.logger.warning("[Client %s] HTTP authentication failed for user %.64r", host,
                              credentials[0] if credentials is not None else None)
        raise Refusal(401, "unknown user, wrong token or expired token (HTTP Basic: the user name, "
                           "the token as password)", [CHALLENGE])
    return Viewer(may_write(network_writes, record.permissions), record.username)
