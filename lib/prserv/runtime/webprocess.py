"""The HTTP listener in a child process (``http_process``), supervised by the server.

The pages read the database, and on the event loop answering get-pr every page
delays the answers queued behind it (contrib/bench/web.py: 50 pages/s raise the
get-pr p99 several times).  With ``http_process`` the server does not listen for
HTTP itself: once it serves, ``HTTPProcess`` starts the same program in the
foreground, read-only on the same database, with the HTTP listener and only a
private unix socket for PR requests (in a temporary directory), the server's
access, TLS, limit and log settings, and puts it at the idle CPU priority
(``priority.idle_process``).  The server says it is ready only once the child
listens, and does not start if the child cannot (a port taken: the same error as
without a child).  Later the child is restarted, after a back-off, if it exits; at
shutdown it gets SIGTERM, then SIGKILL.

The child's status describes the server it serves the pages of: its role, upstream
and mirror source come in ``PRSERV_WEB_*`` variables (``shown_as``); what changes
while it runs (a mirror's state, an upstream's) it asks the server over a private
unix socket in the same temporary directory (``server.parentstate``).
The child reports its HTTP addresses, or why it could not start, through a pipe
(``report_listening``, ``report_failure``).  When the server that started it is gone
(killed without stopping it), the child removes the temporary directory and ends
itself (``watch_parent``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import DaemonError
from ..log import logger
from ..server.web import role
from .priority import idle_process
from .settings import CONFIG_ENV, REPEATED, SETTINGS, SETTINGS_BY_NAME, SWITCH, Config

ROLE_ENV = "PRSERV_WEB_ROLE"
UPSTREAM_ENV = "PRSERV_WEB_UPSTREAM"
MIRROR_OF_ENV = "PRSERV_WEB_MIRROR_OF"
REPORT_FD_ENV = "PRSERV_WEB_REPORT_FD"
PARENT_ENV = "PRSERV_WEB_PARENT"
PARENT_ADDRESS_ENV = "PRSERV_WEB_PARENT_ADDRESS"
DIRECTORY_ENV = "PRSERV_WEB_DIRECTORY"
CHILD_SETTINGS = ("allow", "allow_write", "allow_write_unix", "trusted_proxies", "tls_certificate", "tls_key",
                  "cache_size", "event_loop", "db_pool_size", "db_connect_timeout", "db_lock_timeout",
                  "db_outage_wait", "log_level", "max_connections", "max_connections_per_address",
                  "idle_timeout", "handshake_timeout", "max_message_size", "max_handshake_line",
                  "shutdown_timeout", "record_clients")
"""The server's settings the child gets as they are."""
READY_TIMEOUT = 60.0
"""Seconds a child has to report that it listens."""
STOP_TIMEOUT = 5.0
"""Seconds a child has after SIGTERM before SIGKILL."""
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 30.0
STEADY_SECONDS = 60.0
"""A child that ran this long before exiting is restarted after the first back-off."""
_OWN_PROCESS_GROUP: Dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else \
    {"preexec_fn": os.setpgrp}
"""The child in a process group of its own (a terminal's Ctrl-C reaches the server
only, which stops it) but in the server's session: Linux's autogroup schedules each
session as one entity, so a child in a session of its own would compete with the
server as an equal whatever its own policy, and ``SCHED_IDLE`` would not keep it out
of the get-pr latency."""
LIB = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT = "import sys; sys.path.insert(0, %r); from prserv.cli.bitbake_prserv import main; sys.exit(main())"
"""The program: this copy of ``bitbake-prserv`` (``lib/prserv`` wherever it is)."""


# --------------------------------------------------------------------------- in the child

def shown_as(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """What the status shows of the server whose pages this process serves (None:
    this process serves its own)."""
    environ = os.environ if environ is None else environ
    if ROLE_ENV not in environ:
        return None
    return {"role": environ[ROLE_ENV], "upstream": environ.get(UPSTREAM_ENV) or None,
            "mirror_of": environ.get(MIRROR_OF_ENV) or None, "parent": environ.get(PARENT_ADDRESS_ENV) or None}


def report_listening(http_addresses: List[str], environ: Optional[Mapping[str, str]] = None) -> None:
    """Tell the server that started this process where it listens (nothing if none did)."""
    environ = os.environ if environ is None else environ
    if _report({"http": http_addresses}, environ):
        watch_parent(int(environ.get(PARENT_ENV, "0")), environ.get(DIRECTORY_ENV) or None)


def report_failure(reason: str, environ: Optional[Mapping[str, str]] = None) -> None:
    """Tell the server that started this process why it could not start."""
    _report({"error": reason}, os.environ if environ is None else environ)


def _report(message: Dict[str, Any], environ: Mapping[str, str]) -> bool:
    """Write ``message`` on the report pipe, once; False if there is none."""
    if REPORT_FD_ENV not in environ:
        return False
    fd = int(environ[REPORT_FD_ENV])
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except OSError:
        pass                            # the server is gone: watch_parent ends this process
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return True


def watch_parent(parent: int, directory: Optional[str] = None, interval: float = 1.0) -> None:
    """Once ``parent`` is no longer this process's parent (the server was killed
    without stopping it): remove ``directory`` (the server's, which it cannot remove
    any more) and SIGTERM this process."""
    if parent <= 0:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="prserv-parent-watch", daemon=True).start()


# --------------------------------------------------------------------------- in the server

def child_argv(config: Config, log_file: str, socket_path: str) -> List[str]:
    """The child's command line.  The database is not on it (``child_environ``): a
    PostgreSQL URL may hold a password, and any local user can read a command line."""
    argv = [sys.executable, "-c", BOOT % LIB, "-F", "-r",
            "--bind", "unix://" + socket_path, "--http", config.http, "--http-process", "false",
            "--log", log_file]
    for name in CHILD_SETTINGS:
        setting, value = SETTINGS_BY_NAME[name], getattr(config, name)
        option = setting.options[-1]
        if setting.kind == REPEATED:
            for item in value:
                argv += [option, str(item)]
        elif setting.kind == SWITCH:
            argv += [option] if value else []
        elif value is not None:
            argv += [option, ("true" if value else "false") if isinstance(value, bool) else str(value)]
    return argv


def child_environ(config: Config, report_fd: int, parent_address: Optional[str] = None,
                  directory: Optional[str] = None) -> Dict[str, str]:
    """The child's environment: this one without the settings (its flags say them
    all) but the database (only its owner can read a process's environment), and with
    what its status shows."""
    names = {setting.env for setting in SETTINGS} | {CONFIG_ENV}
    environ = {key: value for key, value in os.environ.items() if key not in names}
    environ.update({SETTINGS_BY_NAME["database"].env: config.database,
                    ROLE_ENV: role(config.read_only, config.mirror), UPSTREAM_ENV: config.upstream or "",
                    MIRROR_OF_ENV: config.mirror or "", REPORT_FD_ENV: str(report_fd),
                    PARENT_ENV: str(os.getpid()), PARENT_ADDRESS_ENV: parent_address or "",
                    DIRECTORY_ENV: directory or ""})
    return environ


def wanted(config: Config) -> bool:
    return bool(config.http and config.http_process)


RELOADED_SETTINGS = ("allow", "allow_write", "allow_write_unix", "trusted_proxies")
"""What SIGHUP changes in the child: what it changes in the server (``runtime.reload``)."""


def with_reloaded_access(started: Config, reloaded: Config) -> Config:
    """``started`` with ``reloaded``'s access rules: the child keeps serving the
    database, address and limits the server started with, as the server does until
    it is restarted."""
    values = dict(started.values)
    values.update({name: reloaded.values[name] for name in RELOADED_SETTINGS})
    return Config(values, started.config_file)


class HTTPProcess:
    """The child serving ``config.http``: started by ``start``, kept running by a
    thread, ended by ``stop``."""

    def __init__(self, config: Config, log_file: str) -> None:
        self.config = config
        self.log_file = log_file
        self.process: Optional[subprocess.Popen] = None
        self.addresses: List[str] = []
        self.starts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._renewing = False
        self._directory = tempfile.mkdtemp(prefix="prserv-http-")
        self.parent_socket = os.path.join(self._directory, "server.sock")
        """Where the server answers the child's questions (``server.parentstate``): a
        private listener the caller adds to the server before it serves."""
        self.parent_address = "unix://" + self.parent_socket
        self._thread: Optional[threading.Thread] = None

    @property
    def pid(self) -> Optional[int]:
        process = self.process
        return None if process is None else process.pid

    def start(self) -> None:
        """Start the child, wait until it listens, then keep it running.  ``DaemonError``
        saying why if it cannot start (then nothing is left running)."""
        process, failure = self._spawn()
        if failure is not None:
            self._stopping.set()
            shutil.rmtree(self._directory, ignore_errors=True)
            raise DaemonError("HTTP listener %s: %s" % (self.config.http, failure))
        self._thread = threading.Thread(target=self._supervise, args=(process,), name="prserv-http-process",
                                        daemon=True)
        self._thread.start()

    def renew(self, reloaded: Config) -> None:
        """SIGHUP: replace the child, at once and without a back-off, by one with
        ``reloaded``'s access rules (``with_reloaded_access``); the new child opens
        its log file again."""
        with self._lock:
            self.config = with_reloaded_access(self.config, reloaded)
            process = self.process
            self._renewing = process is not None and process.poll() is None
        if self._renewing:
            process.terminate()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the child, SIGKILL it after ``timeout``, and wait for it."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            _wait_or_kill(process, timeout)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _supervise(self, process: Optional[subprocess.Popen]) -> None:
        """Wait for the child; start another when it exits (replaced at once on
        SIGHUP, else after a back-off that doubles while it keeps failing)."""
        delay = 0.0
        started = time.monotonic()
        while True:
            code = None if process is None else process.wait()
            if self._stopping.is_set():
                return
            with self._lock:
                renewing, self._renewing = self._renewing, False
            if renewing:
                logger.info("HTTP process (pid %d) replaced to reload its settings", process.pid)
                delay = 0.0
            else:
                delay = FIRST_BACKOFF if time.monotonic() - started >= STEADY_SECONDS else \
                    min(MAX_BACKOFF, max(FIRST_BACKOFF, delay * 2))
                logger.warning("HTTP process%s exited (status %s); restarting it in %g s",
                               "" if process is None else " (pid %d)" % process.pid, code, delay)
                if self._stopping.wait(delay):
                    return
            started = time.monotonic()
            process, failure = self._spawn()
            if failure is not None and not self._stopping.is_set():
                logger.error("HTTP process did not start: %s", failure)

    def _spawn(self) -> Tuple[Optional[subprocess.Popen], Optional[str]]:
        """Start a child and wait for its report: (the child, None) once it listens,
        else (the child that ended or None, why)."""
        read_fd, write_fd = os.pipe()
        try:
            with self._lock:
                if self._stopping.is_set():
                    return None, "the server is stopping"
                self.starts += 1
                socket_path = os.path.join(self._directory, "pr-%d.sock" % self.starts)
                try:
                    self.process = subprocess.Popen(
                        child_argv(self.config, self.log_file, socket_path),
                        env=child_environ(self.config, write_fd, self.parent_address, self._directory),
                        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, **_OWN_PROCESS_GROUP)
                except OSError as exc:
                    return None, "cannot run %s: %s" % (sys.executable, exc)
            process = self.process
            priority = idle_process(process.pid)
            os.close(write_fd)
            write_fd = -1
            report = _read_report(read_fd, READY_TIMEOUT)
            if report is None or "http" not in report:
                return process, _failure(process, report)
            self.addresses = report["http"]
            for address in self.addresses:
                logger.info("HTTP listener on %s (process %d, %s priority)", address, process.pid, priority)
            return process, None
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)


def _failure(process: subprocess.Popen, report: Optional[Dict[str, Any]]) -> str:
    """Why a child that did not report listening failed; it is ended and waited for."""
    if report is not None:
        _wait_or_kill(process, STOP_TIMEOUT)
        return str(report.get("error") or "it reported nothing it listens on")
    if process.poll() is None:
        process.kill()
        process.wait()
        return "the HTTP process (pid %d) did not report within %g s: killed" % (process.pid, READY_TIMEOUT)
    return "the HTTP process (pid %d) exited with status %s while starting (its log says why)" % (
        process.pid, process.returncode)


def _wait_or_kill(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("HTTP process (pid %d) did not stop within %g s: killed", process.pid, timeout)
        process.kill()
        process.wait()


def _read_report(fd: int, timeout: float) -> Optional[Dict[str, Any]]:
    """The child's report line; None if it exited or said nothing in time."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        data += chunk
    try:
        return json.loads(data)
    except ValueError:
        return None
