"""The PR server: request validation and one handler per method.

Handlers check the request's fields, call the table or the allocator, and shape
the answer; framing and sessions come from ``prserv.asyncrpc``, the decisions from
``prserv.policy`` / ``prserv.alloc``, storage from ``prserv.db``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple, Union

from . import backup, logger
from .alloc import Allocator
from .asyncrpc import AsyncServer, AsyncServerConnection, InvokeError, ServerError
from .asyncrpc.connection import Connection
from .asyncrpc.limits import Limits
from .asyncrpc.protocol import JSONStream, describe_json_type, dumps
from .commit import IMMEDIATE, GroupCommit, PendingCommit, SyncMode, parse_sync_mode
from .config import load_config
from .daemon import (PIDPREFIX, is_running, pidfile_for, resolve_host,  # noqa: F401 (API)
                     start_daemon_config, stop_daemon_pidfile)
from .db import PRData, PRTable, export_row, import_value_text
from .errors import ConfigError, InvalidRequestError, InvalidRevisionError, PRServiceError
from .upstream import DEFAULT_TIMEOUT as DEFAULT_UPSTREAM_TIMEOUT
from .upstream import Upstream

PROTO_NAME = "PRSERVICE"

_MISSING = object()


# --------------------------------------------------------------------------- validation

def _arguments(request: Any, command: str) -> Dict[str, Any]:
    if not isinstance(request, dict):
        raise InvalidRequestError("the argument must be a JSON object, not %s" % describe_json_type(request))
    return request


def _text(args: Dict[str, Any], name: str) -> str:
    """A required, non-empty string field."""
    value = args.get(name, _MISSING)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r" % name)
    if not isinstance(value, str):
        raise InvalidRequestError("field %r must be a string, not %s" % (name, describe_json_type(value)))
    if not value:
        raise InvalidRequestError("field %r must not be empty" % name)
    return _unicode(value, name)


def _unicode(value: str, name: str) -> str:
    """``value`` if it can be stored: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which are not text (SQLite takes UTF-8)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError("field %r is not valid Unicode text (a lone surrogate)"
                                      % name) from None
    return value


def _checksum_fields(args: Dict[str, Any]) -> Tuple[str, str, str]:
    """``version``, ``pkgarch``, ``checksum``: required, non-empty strings.

    Checked together in one expression first (the every-request case), field by
    field only to name what is wrong."""
    version, pkgarch, checksum = args.get("version"), args.get("pkgarch"), args.get("checksum")
    if type(version) is str and type(pkgarch) is str and type(checksum) is str \
            and version.isascii() and pkgarch.isascii() and checksum.isascii() \
            and version and pkgarch and checksum:
        return version, pkgarch, checksum
    return _text(args, "version"), _text(args, "pkgarch"), _text(args, "checksum")


def _filter(args: Dict[str, Any], name: str) -> Optional[str]:
    """An export filter: a string, or null / "" for any."""
    value = args.get(name, _MISSING)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r (use null for any)" % name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError("field %r must be a string or null, not %s" % (name, describe_json_type(value)))
    return _unicode(value, name) if value else None


def _flag(args: Dict[str, Any], name: str, default: Any = _MISSING) -> bool:
    """A JSON boolean field; ``default`` when absent, if given.  Nothing else: the
    reference goes by truthiness, so the string "false" meant true there."""
    value = args.get(name, default)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r" % name)
    if isinstance(value, bool):
        return value
    raise InvalidRequestError("field %r must be true or false, not %s" % (name, describe_json_type(value)))


def _export_pieces(metainfo: Dict[str, Any], rows: Iterable[tuple]) -> Iterator[str]:
    """``{"metainfo": ..., "datainfo": [...]}`` as text, one row at a time: the same
    characters as ``dumps`` of the whole answer, without holding it in memory."""
    yield '{"metainfo": %s, "datainfo": [' % dumps(metainfo)
    separator = ""
    for row in rows:
        yield separator + dumps(export_row(row))
        separator = ", "
    yield "]}"


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
            "dump-db": self.handle_dump_db,
        })

    @property
    def table(self) -> PRTable:
        return self.server.table

    def answer_gate(self) -> Optional[PendingCommit]:
        """Immediate mode: an answer leaves once everything written before it is on disk
        (its own value, or one it reports that another request just wrote)."""
        commits = self.server.commits
        return commits.pending_commit() if commits is not None else None

    async def dispatch_message(self, message: Any) -> Any:
        try:
            return await super().dispatch_message(message)
        except (InvalidRequestError, InvalidRevisionError) as exc:
            raise InvokeError("%s: %s" % (self._command_of(message), exc)) from exc
        except PRServiceError as exc:
            raise InvokeError(str(exc)) from exc
        except sqlite3.Error as exc:
            self.logger.error("database error: %s", exc)
            raise ServerError("database error: %s" % exc) from exc

    def _command_of(self, message: Dict[str, Any]) -> str:
        """The request's command, as dispatch chose it (the first known key)."""
        return next((name for name in self.handlers if name in message), "request")

    async def handle_get_pr(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "get-pr")
        version, pkgarch, checksum = _checksum_fields(args)
        history = _flag(args, "history", False)
        allocator = self.server.allocator
        if allocator.upstream is None:      # decided locally, never waits: no coroutine
            return {"value": self.table.get_value(version, pkgarch, checksum, history)}
        return {"value": await allocator.get_pr(version, pkgarch, checksum, history)}

    async def handle_test_pr(self, request: Any) -> Dict[str, Any]:
        args = _arguments(request, "test-pr")
        version, pkgarch, checksum = _checksum_fields(args)
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
        version, pkgarch, checksum = _checksum_fields(args)
        if "value" not in args:
            raise InvalidRequestError("missing field 'value'")
        value = args["value"]
        try:
            import_value_text(value)        # reject non-revisions even when read-only
        except InvalidRevisionError as exc:
            raise InvalidRevisionError("field 'value': %s" % exc) from None
        if self.server.read_only:
            return None                     # the reference answers null
        return {"value": self.table.importone(version, pkgarch, checksum, value)}

    async def handle_export(self, request: Any) -> JSONStream:
        args = _arguments(request, "export")
        version, pkgarch, checksum = _filter(args, "version"), _filter(args, "pkgarch"), _filter(args, "checksum")
        colinfo = _flag(args, "colinfo")
        history = _flag(args, "history", False)
        rows = self.table.iter_export(version, pkgarch, checksum, history)
        return JSONStream(_export_pieces(self.table.export_metainfo(colinfo), rows))

    async def handle_is_readonly(self, request: Any) -> Dict[str, bool]:
        return {"readonly": self.server.read_only}

    async def handle_dump_db(self, request: Any) -> JSONStream:
        """``{"dump": "<SQL text>"}`` of a consistent snapshot, sent as it is read."""
        _arguments(request, "dump-db")
        return JSONStream(self.server.start_dump(self).pieces())

    async def close(self) -> None:
        self.server.end_dump(self)          # a dump still being sent to this client stops
        await super().close()


class PRServer(AsyncServer):
    """bitbake's ``PRServer``: a database file, optionally read-only, optionally chained."""

    def __init__(self, dbfile: str, read_only: bool = False, upstream: Optional[str] = None,
                 upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
                 sync_mode: Union[str, SyncMode] = IMMEDIATE, limits: Optional[Limits] = None) -> None:
        super().__init__(logger, limits)
        self.dbfile = os.path.abspath(dbfile)
        self.read_only = read_only
        self.upstream = upstream or None
        self.upstream_timeout = upstream_timeout
        self.sync_mode = sync_mode if isinstance(sync_mode, SyncMode) else parse_sync_mode(sync_mode)
        self.db: Optional[PRData] = None
        self.table: Optional[PRTable] = None
        self.allocator: Optional[Allocator] = None
        self.commits: Optional[GroupCommit] = None
        self.dump: Optional[backup.DumpStream] = None
        """The dump being sent (one at a time: a second request is refused)."""
        self._dump_session: Optional[PRServerClient] = None

    def start_dump(self, session: PRServerClient) -> backup.DumpStream:
        """Begin a dump for ``session``: a snapshot taken now (``backup.open_server_snapshot``;
        in a buffered mode this commits and pauses for a copy)."""
        if self.dump is not None:
            raise backup.BackupError("a dump is already in progress; try again when it has finished")
        exclusive = self.sync_mode.buffered and not self.read_only
        conn, description = backup.open_server_snapshot(
            self.dbfile, self.db.connection, exclusive, self.commits.commit if self.commits else None)
        self.dump = backup.DumpStream(conn, description, session.logger, self._dump_ended, session.abort)
        self._dump_session = session
        return self.dump

    def _dump_ended(self, dump: backup.DumpStream) -> None:
        if self.dump is dump:
            self.dump, self._dump_session = None, None

    def end_dump(self, session: Optional[PRServerClient] = None) -> None:
        """Stop the dump in progress (only if ``session`` sends it, when given)."""
        if self.dump is not None and (session is None or session is self._dump_session):
            self.dump.close()

    def accept_client(self, connection: Connection) -> PRServerClient:
        return PRServerClient(connection, self)

    async def open_resources(self) -> None:
        buffered = self.sync_mode.buffered and not self.read_only
        self.db = PRData(self.dbfile, read_only=self.read_only,
                         synchronous="NORMAL" if buffered else "FULL", exclusive=buffered,
                         background_checkpoints=not buffered)
        self.table = self.db["PRMAIN"]
        self.table.recheck_later = asyncio.get_running_loop().call_soon
        if not self.read_only:
            self.commits = self.table.group = GroupCommit(self.table, self.sync_mode, after_commit=self.db.checkpoint_tail)
        upstream = Upstream(self.upstream, self.upstream_timeout) if self.upstream else None
        self.allocator = Allocator(self.table, upstream)

    async def start_serving(self) -> str:
        address = await super().start_serving()
        self.logger.info("Started PRServer with DBfile: %s, Address: %s, PID: %s%s%s",
                         self.dbfile, ", ".join(self.addresses), os.getpid(),
                         " (read-only)" if self.read_only else ", sync mode %s" % self.sync_mode,
                         ", upstream: %s" % self.upstream if self.upstream else "")
        return address

    async def close_resources(self) -> None:
        self.end_dump()
        if self.allocator is not None:
            await self.allocator.close()
        if self.commits is not None:
            self.commits.commit()
            self.logger.info("%d commits (sync mode %s)", self.commits.commits, self.sync_mode)
            self.commits = None
        if self.db is not None:
            self.db.disconnect()
            self.db = None
        self.logger.info("PRServer stopped (%s)", self.dbfile)


class PRServiceConfigError(ConfigError):
    """Bad PR service configuration (bitbake's cooker catches this name)."""


# --------------------------------------------------------------------------- daemons (bitbake-prserv)

def start_daemon(dbfile: str, host: str, port: int, logfile: str, read_only: bool = False,
                 upstream: Optional[str] = None) -> int:
    """Daemonize a server on ``gethostbyname(host):port``; 0 once it accepts connections,
    1 with a message on stderr if the pidfile names a running daemon or it cannot start."""
    ip = resolve_host(host)
    address = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
    config = load_config({"database": dbfile, "bind": [address], "log_file": logfile,
                          "read_only": read_only, "upstream": upstream or None}, environ={})
    return start_daemon_config(config, pidfile=pidfile_for(host, port))


def stop_daemon(host: str, port: int) -> int:
    """SIGTERM the daemon of ``host:port`` (its pidfile), wait for it, remove the pidfile."""
    return stop_daemon_pidfile(pidfile_for(host, port), host)


# --------------------------------------------------------------------------- bitbake's cooker

class PRServSingleton:
    """The private server ``PRSERV_HOST = "localhost:0"`` asks for, in a child process."""

    def __init__(self, dbfile: str, logfile: str, host: str, port: int,
                 upstream: Optional[str]) -> None:
        self.dbfile = dbfile
        self.logfile = logfile
        self.host = host
        self.port = port
        self.upstream = upstream
        self.prserv: Optional[PRServer] = None
        self.process = None

    def start(self) -> None:
        """Serve in a child; return once it listens, with ``port`` set to the bound port."""
        self.prserv = PRServer(self.dbfile, upstream=self.upstream)
        self.prserv.start_tcp_server(resolve_host(self.host), self.port)
        try:
            self.process = self.prserv.serve_as_process(prefunc=_log_to_file, args=(self.logfile,),
                                                        log_level=logging.WARNING)
        except ServerError as exc:
            raise PRServiceConfigError("cannot start the local PR server: %s" % exc) from exc
        if not self.port:
            self.port = int(self.prserv.address.rsplit(":", 1)[1])


def _log_to_file(server: PRServer, logfile: str) -> None:
    """In the singleton's child: log to ``logfile`` only, not through the cooker's handlers."""
    handler = logging.FileHandler(logfile)
    handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s %(message)s"))
    server.logger.addHandler(handler)
    server.logger.propagate = False


singleton: Optional[PRServSingleton] = None
"""The ``PRServSingleton`` started by ``auto_start``, if any."""


def _config_error(message: str) -> PRServiceConfigError:
    logger.critical(message)
    return PRServiceConfigError(message)


def auto_start(d: Any) -> Optional[str]:
    """What bitbake's cooker calls with its datastore; the ``host:port`` tasks should use.

    Empty ``PRSERV_HOST``: no PR service (a running singleton is stopped).
    ``localhost:0``: a private server on ``PERSISTENT_DIR``/``CACHE``/prserv.sqlite3.
    Anything else is an existing server, which must answer a ping.
    """
    global singleton

    host_params = [part for part in (d.getVar("PRSERV_HOST") or "").split(":") if part]
    if not host_params:
        auto_shutdown()
        return None
    if len(host_params) != 2 or not host_params[1].strip().isdigit():
        auto_shutdown()
        raise _config_error("PRSERV_HOST: incorrect format %r\n"
                            'Usage: PRSERV_HOST = "<hostname>:<port>"' % d.getVar("PRSERV_HOST"))
    host = host_params[0].strip().lower()
    port = int(host_params[1])
    upstream = d.getVar("PRSERV_UPSTREAM") or None

    if is_local_special(host, port):
        cachedir = d.getVar("PERSISTENT_DIR") or d.getVar("CACHE")
        if not cachedir:
            raise _config_error("Please set the 'PERSISTENT_DIR' or 'CACHE' variable")
        dbfile = os.path.abspath(os.path.join(cachedir, "prserv.sqlite3"))
        logfile = os.path.abspath(os.path.join(cachedir, "prserv.log"))
        if singleton is not None and singleton.dbfile != dbfile:
            auto_shutdown()
        if singleton is None:
            os.makedirs(cachedir, exist_ok=True)
            started = PRServSingleton(dbfile, logfile, host, port, upstream)
            started.start()
            singleton = started
    if singleton is not None:
        host, port = singleton.host, singleton.port

    try:
        ping(host, port)
    except Exception as exc:
        raise _config_error("PRservice %s:%d not available: %s" % (host, port, exc)) from exc
    return "%s:%d" % (host, port)


def auto_shutdown() -> None:
    """Stop the singleton (SIGTERM, wait) and forget it."""
    global singleton
    if singleton is not None and singleton.process is not None:
        singleton.process.terminate()
        singleton.process.join()
    singleton = None


# --------------------------------------------------------------------------- OpenEmbedded

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
