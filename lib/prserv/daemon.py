"""Running a PR server as a process: in the foreground, or as a detached daemon.

The daemon is made with ``python-daemon`` (double fork, new session, working
directory ``/``, standard streams on ``/dev/null``).  Unlike bitbake's, ``--start``
only reports success once the daemon is accepting connections: the daemon binds
and opens its database after detaching, then reports "ready" (or the reason it
could not start) through a pipe the starting process waits on.

Pidfiles are bitbake's (``/tmp/PRServer_<ip>_<port>.pid``, named by the port asked
for), written by the daemon once it listens and removed when it exits.  A pidfile
whose process is gone is stale: it is removed instead of blocking the next start.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import logging.handlers
import os
import re
import select
import signal
import socket
import sys
import time
from typing import Callable, List, Optional

from . import __version__, logger
from .asyncrpc.address import ADDR_TYPE_TCP, ADDR_TYPE_UNIX, parse_address, split_ws_uri
from .asyncrpc.limits import Limits
from .config import STDERR_LOG, Config
from .errors import ConfigError

PIDPREFIX = "/tmp/PRServer_%s_%s.pid"
LOG_FORMAT = "%(asctime)-15s %(levelname)s %(message)s"
READY_TIMEOUT = 60.0
"""Seconds ``--start`` waits for the daemon to report that it listens."""
STOP_TIMEOUT = 30.0
"""Seconds ``--stop`` waits for the daemon to exit after SIGTERM."""


class DaemonError(ConfigError):
    """The daemon could not be started or stopped; the message says why."""


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


def clear_stale_pidfile(pidfile: str) -> Optional[int]:
    """The pid of a running daemon named by ``pidfile``; removes the file if stale
    (and says so on stderr: whoever starts a server should know)."""
    pid = read_pid(pidfile)
    if pid is not None and is_running(pid):
        return pid
    if os.path.exists(pidfile):
        sys.stderr.write("removing stale pidfile %s (pid %s is not running)\n" % (pidfile, pid))
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
    return None


# --------------------------------------------------------------------------- logging

def configure_logging(log_file: str, log_level: str) -> None:
    """Send the root logger to ``log_file`` (``-``: standard error) at ``log_level``.

    A ``WatchedFileHandler`` reopens the file when logrotate moves it away.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):   # its file may be closed already
            handler.close()                              # (handlers inherited by a daemon)
    if log_file == STDERR_LOG:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, log_level))
    # This process only serves, and LOG_FORMAT shows neither source lines nor thread
    # or process names: skip collecting them for each record (the logging module's
    # documented switches; a quarter of the cost of a connection's INFO line).
    logging._srcfile = None                 # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


# --------------------------------------------------------------------------- serving

def build_server(config: Config):
    """A ``PRServer`` for the configuration, listening on every ``bind`` address."""
    from . import create_server

    return create_server(config.bind, config.database, upstream=config.upstream,
                         read_only=config.read_only, upstream_timeout=config.upstream_timeout,
                         sync_mode=config.sync_mode, limits=limits_of(config))


def limits_of(config: Config) -> Limits:
    """The connection limits the settings ask for."""
    return Limits(max_message=config.max_message_size, max_handshake_line=config.max_handshake_line,
                  max_connections=config.max_connections, idle_timeout=config.idle_timeout,
                  handshake_timeout=config.handshake_timeout,
                  shutdown_timeout=config.shutdown_timeout)


def describe(config: Config, addresses: List[str]) -> str:
    return "prserv %s serving %s on %s%s%s" % (
        __version__, config.database, ", ".join(addresses),
        " (read-only)" if config.read_only else "",
        ", upstream %s" % config.upstream if config.upstream else "")


def run_foreground(config: Config) -> int:
    """Serve in this process until SIGTERM/SIGINT (systemd, containers); 0 on a clean stop.

    Logs go to standard error unless a log file was configured explicitly.
    """
    log_file = STDERR_LOG if config.is_default("log_file") else config.log_file
    configure_logging(log_file, config.log_level)
    server = build_server(config)
    pidfile = config.pidfile
    listening = False

    def ready() -> None:
        nonlocal listening
        if pidfile:
            write_pidfile(pidfile)
        listening = True
        print(describe(config, server.addresses), file=sys.stderr, flush=True)

    if pidfile and clear_stale_pidfile(pidfile) is not None:
        print("bitbake-prserv: pidfile %s names a running server" % pidfile, file=sys.stderr)
        return 1
    try:
        server.serve_forever(ready=ready)
    except Exception as exc:
        if listening:
            raise
        print("bitbake-prserv: cannot start the server: %s" % exc, file=sys.stderr)
        return 1
    finally:
        if pidfile and listening:
            remove_pidfile(pidfile)
    return 0


def start_daemon_config(config: Config, pidfile: Optional[str] = None) -> int:
    """Start a detached daemon; 0 once it accepts connections, 1 with a message if not."""
    pidfile = pidfile or config.pidfile or default_pidfile(config.bind)
    pid = clear_stale_pidfile(pidfile)
    if pid is not None:
        sys.stderr.write("pidfile %s already exist. Daemon already running? (pid %d)\n" % (pidfile, pid))
        return 1
    try:
        addresses = _spawn_daemon(lambda ready: _daemon_main(config, pidfile, ready))
    except DaemonError as exc:
        sys.stderr.write("bitbake-prserv: the PR server did not start: %s\n" % exc)
        return 1
    print("PR server started: %s (pid %s, pidfile %s)" % (", ".join(addresses), read_pid(pidfile),
                                                           pidfile), flush=True)
    return 0


def _daemon_main(config: Config, pidfile: str, ready: Callable[[List[str]], None]) -> None:
    configure_logging(config.log_file, config.log_level)
    server = build_server(config)

    def listening() -> None:
        write_pidfile(pidfile)
        logger.info("%s (daemon pid %d, pidfile %s)", describe(config, server.addresses),
                    os.getpid(), pidfile)
        ready(server.addresses)

    try:
        server.serve_forever(ready=listening)
    finally:
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

def stop_daemon_pidfile(pidfile: str, host: Optional[str] = None,
                        timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the daemon named by ``pidfile`` and wait for it to exit; 0 when stopped.

    Without a pidfile: 1, listing other pidfiles of ``host`` (helps after ``--port 0``).
    """
    pid = read_pid(pidfile)
    if pid is None:
        ports = other_ports(host) if host else []
        hint = " Wrong port? Other ports listening at %s: %s" % (host, " ".join(ports)) if ports else ""
        sys.stderr.write("pidfile %s does not exist. Daemon not running?%s\n" % (pidfile, hint))
        return 1
    if not is_running(pid):
        os.unlink(pidfile)
        print("PR server (pid %d) was not running; removed stale pidfile %s" % (pid, pidfile))
        return 0
    print("Sending SIGTERM to pr-server (pid %d)." % pid, flush=True)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            sys.stderr.write("PR server (pid %d) did not exit within %.0f s\n" % (pid, timeout))
            return 1
        time.sleep(0.02)
    remove_pidfile(pidfile, pid)
    print("PR server (pid %d) stopped." % pid)
    return 0


def other_ports(host: str) -> List[str]:
    """Ports of other pidfiles on ``host`` (helps after ``--port 0``)."""
    ports = []
    for path in sorted(glob.glob(PIDPREFIX % (resolve_host(host), "*"))):
        ports.append(os.path.splitext(os.path.basename(path))[0].rsplit("_", 1)[-1])
    return ports
