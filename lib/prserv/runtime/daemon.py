"""Running a PR server as a process: in the foreground, or as a detached daemon.

The daemon is made with ``python-daemon`` (double fork, new session, working
directory ``/``, standard streams on ``/dev/null``).  Unlike bitbake's, starting one
only succeeds once it is accepting connections: the daemon binds and opens its
database after detaching, then reports "ready" (or the reason it could not start)
through a pipe the starting process waits on.

Pidfiles are bitbake's (``/tmp/PRServer_<ip>_<port>.pid``, named by the port asked
for), written by the daemon once it listens and removed when it exits.  A pidfile
whose process is gone is stale: it is removed instead of blocking the next start.

Nothing here prints: outcomes are return values and ``DaemonError``; the command
line (``prserv.cli``) reports them.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import time
from typing import Callable, List, Optional, Tuple

from ..access import AccessRules
from ..errors import ConfigError, DaemonError
from ..log import logger
from ..server.prserver import PRServer
from ..storage.postgresql.url import is_url, masked
from ..version import __version__
from ..asyncrpc.address import ADDR_TYPE_TCP, ADDR_TYPE_UNIX, parse_address, split_ws_uri
from .credentials import credentials_for
from .logs import configure_logging
from .reload import reload_on_sighup
from .settings import STDERR_LOG, Config, limits_of
from . import webprocess

PIDPREFIX = "/tmp/PRServer_%s_%s.pid"
READY_TIMEOUT = 60.0
"""Seconds a start waits for the daemon to report that it listens."""
STOP_TIMEOUT = 30.0
"""Seconds a stop waits for the daemon to exit after SIGTERM."""


# --------------------------------------------------------------------------- pidfiles

def resolve_host(host: str) -> str:
    """The IPv4 address bitbake names pidfiles with (IPv6 literals are kept)."""
    if ":" in host:
        return host
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise DaemonError("cannot resolve host %r: %s" % (host, exc)) from None


def pidfile_for(host: str, port: int) -> str:
    return PIDPREFIX % (resolve_host(host), port)


def default_pidfile(bind: List[str]) -> str:
    """bitbake's pidfile for the first TCP or websocket address, else one per unix path."""
    for address in bind:
        kind, args = parse_address(address)
        if kind == ADDR_TYPE_TCP:
            return pidfile_for(str(args[0]), int(args[1]))
        if kind != ADDR_TYPE_UNIX:
            return pidfile_for(*split_ws_uri(str(args[0])))
    return PIDPREFIX % ("unix", re.sub(r"[^A-Za-z0-9.-]", "_", bind[0][len("unix://"):]))


def read_pid(pidfile: str) -> Optional[int]:
    """The pid in ``pidfile``; None if the file is missing or holds no pid."""
    try:
        with open(pidfile) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (bitbake's name)."""
    try:
        os.kill(pid, 0)
    except OSError as err:
        if err.errno == errno.ESRCH:
            return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            # state is the field after the parenthesised command name
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def write_pidfile(pidfile: str) -> None:
    """Create ``pidfile`` with our pid; fails if it exists (another daemon won the race)."""
    fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("%d\n" % os.getpid())


def remove_pidfile(pidfile: str, pid: Optional[int] = None) -> None:
    """Remove ``pidfile`` if it names ``pid`` (default: this process)."""
    if read_pid(pidfile) == (os.getpid() if pid is None else pid):
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass


def clear_stale_pidfile(pidfile: str) -> Tuple[Optional[int], Optional[int]]:
    """``(running, stale)``: the pid of a running daemon named by ``pidfile``, or the
    pid of a stale one whose pidfile was just removed (``(None, None)``: no pidfile)."""
    pid = read_pid(pidfile)
    if pid is not None and is_running(pid):
        return pid, None
    if os.path.exists(pidfile):
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
        return None, pid if pid is not None else 0
    return None, None


def other_ports(host: str) -> List[str]:
    """Ports of other pidfiles on ``host`` (helps after ``--port 0``)."""
    ports = []
    for path in sorted(glob.glob(PIDPREFIX % (resolve_host(host), "*"))):
        ports.append(os.path.splitext(os.path.basename(path))[0].rsplit("_", 1)[-1])
    return ports


# --------------------------------------------------------------------------- serving

def build_server(config: Config) -> PRServer:
    """A ``PRServer`` for the configuration, listening on every ``bind`` address."""
    server = PRServer(config.database, read_only=config.read_only, upstream=config.upstream,
                      upstream_timeout=config.upstream_timeout, sync_mode=config.sync_mode,
                      cache_size=config.cache_size, limits=limits_of(config), mirror=config.mirror,
                      mirror_timeout=config.mirror_timeout,
                      mirror_audit_interval=config.mirror_audit_interval,
                      postgresql={"pool_size": config.db_pool_size, "connect_timeout": config.db_connect_timeout,
                                  "lock_timeout": config.db_lock_timeout,
                                  "outage_wait": config.db_outage_wait},
                      access=access_rules(config), require_token=config.require_token,
                      upstream_credentials=credentials_for(config.upstream, config.upstream_token,
                                                           config.source("upstream_token"))
                      if config.upstream else None,
                      mirror_credentials=credentials_for(config.mirror, config.mirror_token,
                                                         config.source("mirror_token"))
                      if config.mirror else None,
                      tls_certificate=config.tls_certificate, tls_key=config.tls_key, tls_ca=config.tls_ca,
                      metrics=config.metrics, event_loop=config.event_loop,
                      http=None if webprocess.wanted(config) else config.http,
                      record_clients=config.record_clients, shown_as=webprocess.shown_as())
    reload_on_sighup(server, lambda: access_rules(config.reloaded()))
    for address in config.bind:
        server.start_server(address)
    return server


def access_rules(config: Config) -> AccessRules:
    return AccessRules(config.allow, config.allow_write, config.allow_write_unix, config.trusted_proxies)


def describe(config: Config, addresses: List[str]) -> str:
    return "prserv %s serving %s on %s%s%s" % (
        __version__, masked(config.database) if is_url(config.database) else config.database,
        ", ".join(addresses),
        " (read-only)" if config.read_only or config.mirror else "",
        ", upstream %s" % config.upstream if config.upstream else
        ", mirror of %s" % config.mirror if config.mirror else "")


def run_foreground(config: Config, ready: Callable[[List[str]], None]) -> None:
    """Serve in this process until SIGTERM/SIGINT (systemd, containers).

    Logs go to standard error unless a log file was configured explicitly.
    ``ready(addresses)`` is called once listening.  ``DaemonError`` if the server
    cannot start (the pidfile names a running server, the port is taken...).
    """
    log_file = STDERR_LOG if config.is_default("log_file") else config.log_file
    configure_logging(log_file, config.log_level)
    server = build_server(config)
    pidfile = config.pidfile
    listening = False
    if pidfile and clear_stale_pidfile(pidfile)[0] is not None:
        raise DaemonError("pidfile %s names a running server" % pidfile)
    http_process = _http_process(server, config, log_file)

    def started() -> None:
        nonlocal listening
        if http_process is not None:
            http_process.start()
        if pidfile:
            write_pidfile(pidfile)
        listening = True
        ready(server.addresses)
        webprocess.report_listening(server.http_addresses)

    try:
        server.serve_forever(ready=started)
    except Exception as exc:
        if listening:
            raise
        webprocess.report_failure(str(exc))
        raise DaemonError("cannot start the server: %s" % exc) from exc
    finally:
        if http_process is not None:
            http_process.stop()
        if pidfile and listening:
            remove_pidfile(pidfile)


def _http_process(server: PRServer, config: Config, log_file: str) -> Optional[webprocess.HTTPProcess]:
    """The child that will serve ``config.http``, its private listener added to
    ``server`` (None: this process serves it, if anyone)."""
    if not webprocess.wanted(config):
        return None
    child = webprocess.HTTPProcess(config, log_file)
    server.start_private_server(child.parent_socket)
    server.on_reload.append(lambda: _renew(server, child, config))
    return child


def _renew(server: PRServer, child: webprocess.HTTPProcess, config: Config) -> None:
    """SIGHUP: the HTTP child started again with the settings as they are now."""
    try:
        child.renew(config.reloaded())
    except ConfigError as exc:
        server.logger.error("SIGHUP: the HTTP process keeps its settings: %s", exc)


def start_daemon(config: Config, pidfile: str) -> List[str]:
    """Start a detached daemon; return its addresses once it accepts connections.

    ``DaemonError`` with the daemon's reason if it could not start.  The caller has
    made sure ``pidfile`` names no running daemon (``clear_stale_pidfile``).
    """
    return _spawn_daemon(lambda ready: _daemon_main(config, pidfile, ready))


def _daemon_main(config: Config, pidfile: str, ready: Callable[[List[str]], None]) -> None:
    configure_logging(config.log_file, config.log_level)
    server = build_server(config)
    http_process = _http_process(server, config, config.log_file)

    def listening() -> None:
        if http_process is not None:
            http_process.start()
        write_pidfile(pidfile)
        logger.info("%s (daemon pid %d, pidfile %s)", describe(config, server.addresses),
                    os.getpid(), pidfile)
        ready(server.addresses)

    try:
        server.serve_forever(ready=listening)
    finally:
        if http_process is not None:
            http_process.stop()
        remove_pidfile(pidfile)


def _spawn_daemon(main: Callable[[Callable[[List[str]], None]], None]) -> List[str]:
    """Run ``main(ready)`` in a detached daemon; return the addresses it passes to ``ready``.

    ``DaemonError`` carries the daemon's reason when it fails before ``ready``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # pragma: no cover - runs in the daemon
        os.close(read_fd)
        _daemon_child(main, write_fd)
    os.close(write_fd)
    try:
        report = _read_report(read_fd, READY_TIMEOUT)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)                          # the first fork exits at once
    if report.get("error"):
        raise DaemonError(report["error"])
    return report["addresses"]


def _daemon_child(main: Callable[[Callable[[List[str]], None]], None], write_fd: int) -> None:
    import daemon  # python-daemon; imported here so ``import prserv`` needs only the stdlib

    reported = False

    def report(message: dict) -> None:
        nonlocal reported
        if not reported:
            reported = True
            os.write(write_fd, (json.dumps(message) + "\n").encode())
            os.close(write_fd)

    code = 1
    try:
        _standard_streams_on_devnull()
        context = daemon.DaemonContext(working_directory="/", umask=0o022, detach_process=True,
                                       files_preserve=[write_fd])
        context.open()
        # python-daemon leaves fds 0-2 close-on-exec (it closes them, os.open()s /dev/null,
        # which takes the same fd, and dup2()s it onto itself): a child the daemon starts
        # (the HTTP process) would have none, its log file would become its stdout and
        # uvloop abort on closing fd 2.
        for fd in (0, 1, 2):
            os.set_inheritable(fd, True)
        main(lambda addresses: report({"addresses": addresses}))
        code = 0
    except BaseException as exc:   # the daemon's last words go to the starter, then the log
        if isinstance(exc, SystemExit) and not exc.code:
            code = 0
        else:
            logger.error("PR server daemon failed: %s: %s", type(exc).__name__, exc)
        report({"error": "%s" % (exc,) if isinstance(exc, OSError) else "%s: %s" % (
            type(exc).__name__, exc)})
    finally:
        logging.shutdown()
        os._exit(code)


def _standard_streams_on_devnull() -> None:
    """Point fds 0-2 and ``sys.std*`` at /dev/null before ``DaemonContext`` redirects them:
    the caller may have replaced ``sys.stdin`` with an object without a file descriptor
    (a test runner, an embedding application), which python-daemon cannot redirect."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)


def _read_report(fd: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise DaemonError("no report from the daemon within %.0f s (see its log)" % timeout)
        chunk = os.read(fd, 4096)
        if not chunk:
            raise DaemonError("the daemon exited during start-up (see its log)")
        data += chunk
    return json.loads(data)


# --------------------------------------------------------------------------- stopping

def terminate(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM ``pid`` and wait up to ``timeout`` seconds; True once it has exited."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
