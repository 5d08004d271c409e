"""What bitbake's cooker and OpenEmbedded call: the build's private server and connections.

``PRSERV_HOST = "localhost:0"`` asks the cooker for a private server: ``auto_start``
starts one in a child process (``PRServSingleton``), on ``prserv.sqlite3`` in the
build's ``PERSISTENT_DIR`` (or ``CACHE``), chained to ``PRSERV_UPSTREAM`` when set,
and ``auto_shutdown`` stops it.  OpenEmbedded opens one connection per packaging
task with ``connect``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from ..asyncrpc import ServerError
from ..client import PRClient
from ..errors import PRServiceConfigError
from ..log import logger
from ..server.prserver import PRServer
from .daemon import resolve_host
from .logs import log_to_file
from .reload import reload_on_sighup


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
        reload_on_sighup(self.prserv)
        try:
            self.process = self.prserv.serve_as_process(prefunc=_log_to_file, args=(self.logfile,),
                                                        log_level=logging.WARNING)
        except ServerError as exc:
            raise PRServiceConfigError("cannot start the local PR server: %s" % exc) from exc
        if not self.port:
            self.port = int(self.prserv.address.rsplit(":", 1)[1])


def _log_to_file(server: PRServer, logfile: str) -> None:
    """In the singleton's child: log to ``logfile`` only, not through the cooker's handlers."""
    log_to_file(server.logger, logfile)


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


def is_local_special(host: str, port: int) -> bool:
    """``localhost:0`` / ``127.0.0.1:0``: "start a private server for this build"."""
    return host.strip().lower() in ("localhost", "127.0.0.1") and not port


def connect(host: str, port: int) -> PRClient:
    """A blocking ``PRClient`` for ``host:port`` (OpenEmbedded: once per packaging task).

    ``localhost`` with port 0 means the singleton's real port.
    """
    if host.strip().lower() == "localhost" and not port and singleton is not None:
        host, port = "localhost", singleton.port
    conn = PRClient()
    conn.connect_tcp(host, port)
    return conn


def ping(host: str, port: int) -> Any:
    """The server's ping answer (``{"alive": True}``); raises when unreachable."""
    with connect(host, port) as conn:
        return conn.ping()
