"""The PR server: request validation and one handler per method.

Handlers check the request's fields, call the table or the allocator, and shape
the answer; framing and sessions come from ``prserv.asyncrpc``, the decisions from
``prserv.policy`` / ``prserv.alloc``, storage from ``prserv.db``.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Dict, Optional

from . import logger
from .alloc import Allocator
from .asyncrpc import AsyncServer, AsyncServerConnection, InvokeError, ServerError
from .asyncrpc.connection import Connection
from .db import PRData, PRTable, import_value_text
from .errors import InvalidRequestError, PRServiceError
from .upstream import DEFAULT_TIMEOUT as DEFAULT_UPSTREAM_TIMEOUT
from .upstream import Upstream

PROTO_NAME = "PRSERVICE"

_MISSING = object()


# --------------------------------------------------------------------------- validation

def _arguments(request: Any, command: str) -> Dict[str, Any]:
    if not isinstance(request, dict):
        raise InvalidRequestError("%s: the argument must be a JSON object" % command)
    return request


def _text(args: Dict[str, Any], name: str) -> str:
    """A required, non-empty string field."""
    value = args.get(name, _MISSING)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r" % name)
    if not isinstance(value, str):
        raise InvalidRequestError("field %r must be a string" % name)
    if not value:
        raise InvalidRequestError("field %r must not be empty" % name)
    return value


def _filter(args: Dict[str, Any], name: str) -> Optional[str]:
    """An export filter: a string, or null / "" for any."""
    value = args.get(name, _MISSING)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r (use null for any)" % name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError("field %r must be a string or null" % name)
    return value or None


def _flag(args: Dict[str, Any], name: str, default: Any = _MISSING) -> bool:
    """A boolean field (null, 0 and 1 accepted); ``default`` when absent, if given."""
    value = args.get(name, default)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r" % name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidRequestError("field %r must be true or false" % name)


# --------------------------------------------------------------------------- sessions

class PRServerClient(AsyncServerConnection):
    """One client session of the PR server."""

    def __init__(self, connection: Connection, server: "PRServer") -> None:
        super().__init__(connection, PROTO_NAME, server.logger)
        self.server = server
        # Dispatch order is the reference's: the first command key present wins.
        self.handlers.update({
            "get-pr": self.handle_get_pr,
            "test-pr": self.handle_test_pr,
            "test-package": self.handle_test_package,
            "max-package-pr": self.handle_max_package_pr,
            "import-one": self.handle_import_one,
            "export": self.handle_export,
            "is-readonly": self.handle_is_readonly,
        })

    @property
    def table(self) -> PRTable:
        return self.server.table

    async def dispatch_message(self, message: Any) -> Any:
        try:
            return await super().dispatch_message(message)
        except PRServiceError as exc:
            raise InvokeError(str(exc)) from exc
        except sqlite3.Error as exc:
            self.logger.error("database error: %s", exc)
            raise ServerError("database error: %s" % exc) from exc

    async def handle_get_pr(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "get-pr")
        version, pkgarch, checksum = _text(args, "version"), _text(args, "pkgarch"), _text(args, "checksum")
        history = _flag(args, "history", False)
        value = await self.server.allocator.get_pr(version, pkgarch, checksum, history)
        return {"value": value}

    async def handle_test_pr(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "test-pr")
        version, pkgarch, checksum = _text(args, "version"), _text(args, "pkgarch"), _text(args, "checksum")
        history = _flag(args, "history", False)
        return {"value": self.table.find_value(version, pkgarch, checksum, history)}

    async def handle_test_package(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "test-package")
        return {"value": self.table.test_package(_text(args, "version"), _text(args, "pkgarch"))}

    async def handle_max_package_pr(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "max-package-pr")
        return {"value": self.table.find_package_max_value(_text(args, "version"), _text(args, "pkgarch"))}

    async def handle_import_one(self, request: Any) -> Optional[Dict[str, Any]]:
        args = _arguments(request, "import-one")
        version, pkgarch, checksum = _text(args, "version"), _text(args, "pkgarch"), _text(args, "checksum")
        if "value" not in args:
            raise InvalidRequestError("missing field 'value'")
        value = args["value"]
        import_value_text(value)            # reject non-revisions even when read-only
        if self.server.read_only:
            return None                     # the reference answers null
        return {"value": self.table.importone(version, pkgarch, checksum, value)}

    async def handle_export(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "export")
        version, pkgarch, checksum = _filter(args, "version"), _filter(args, "pkgarch"), _filter(args, "checksum")
        colinfo = _flag(args, "colinfo")
        history = _flag(args, "history", False)
        metainfo, datainfo = self.table.export(version, pkgarch, checksum, colinfo, history)
        return {"metainfo": metainfo, "datainfo": datainfo}

    async def handle_is_readonly(self, request: Any) -> Dict[str, bool]:
        return {"readonly": self.server.read_only}


class PRServer(AsyncServer):
    """bitbake's ``PRServer``: a database file, optionally read-only, optionally chained."""

    def __init__(self, dbfile: str, read_only: bool = False, upstream: Optional[str] = None,
                 upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT) -> None:
        super().__init__(logger)
        self.dbfile = os.path.abspath(dbfile)
        self.read_only = read_only
        self.upstream = upstream or None
        self.upstream_timeout = upstream_timeout
        self.db: Optional[PRData] = None
        self.table: Optional[PRTable] = None
        self.allocator: Optional[Allocator] = None

    def accept_client(self, connection: Connection) -> PRServerClient:
        return PRServerClient(connection, self)

    async def open_resources(self) -> None:
        self.db = PRData(self.dbfile, read_only=self.read_only)
        self.table = self.db["PRMAIN"]
        upstream = Upstream(self.upstream, self.upstream_timeout) if self.upstream else None
        self.allocator = Allocator(self.table, upstream)

    async def start_serving(self) -> str:
        address = await super().start_serving()
        self.logger.info("Started PRServer with DBfile: %s, Address: %s, PID: %s%s%s",
                         self.dbfile, address, os.getpid(),
                         " (read-only)" if self.read_only else "",
                         ", upstream: %s" % self.upstream if self.upstream else "")
        return address

    async def close_resources(self) -> None:
        if self.allocator is not None:
            await self.allocator.close()
        if self.db is not None:
            self.db.disconnect()
            self.db = None
        self.logger.info("PRServer stopped (%s)", self.dbfile)


class PRServiceConfigError(Exception):
    """Bad PR service configuration (bitbake catches this name)."""


# --------------------------------------------------------------------------- bitbake helpers

singleton = None
"""The ``PRServSingleton`` bitbake's cooker may have started (set by ``auto_start``)."""


def is_local_special(host: str, port: int) -> bool:
    """``localhost:0`` / ``127.0.0.1:0``: "start a private server for this build"."""
    return host.strip().lower() in ("localhost", "127.0.0.1") and not port


def connect(host: str, port: int):
    """A blocking ``PRClient`` for ``host:port`` (OpenEmbedded: once per packaging task).

    ``localhost`` with port 0 means the singleton's real port.
    """
    from .client import PRClient

    if host.strip().lower() == "localhost" and not port and singleton is not None:
        host, port = "localhost", singleton.port
    conn = PRClient()
    conn.connect_tcp(host, port)
    return conn


def ping(host: str, port: int):
    """The server's ping answer (``{"alive": True}``); raises when unreachable."""
    with connect(host, port) as conn:
        return conn.ping()
