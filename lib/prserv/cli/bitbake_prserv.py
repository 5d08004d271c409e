"""``bitbake-prserv``: bitbake's flags, plus foreground mode and settings.

bitbake's flags keep their meaning and defaults (``-f prserv.sqlite3``, ``-l
prserv.log``, ``--host 0.0.0.0``, ``--port 8585``, ``--start``/``--stop``).  Added:
``-F/--foreground``, ``--bind`` (unix and websocket addresses, several listeners),
``--config FILE``, ``--pidfile``, every other setting, and ``--version``.  Every
setting can also come from a ``PRSERV_*`` variable or the config file; flags win.

``start_daemon``/``stop_daemon`` are also bitbake's ``prserv.serv`` functions, with
its messages and return codes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import List, Optional

from ..asyncrpc.address import ADDR_TYPE_TCP, parse_address
from ..errors import ConfigError, DaemonError
from ..runtime import daemon, webprocess
from ..runtime.settings import Config, load_config
from ..version import __version__
from .options import add_server_options, config_from_args
from .output import EXIT_MEANINGS, EXIT_USAGE, ExitStatuses, ending_quietly_on_closed_stdout

EXIT_STATUSES = ExitStatuses({
    0: "success (started, stopped, or served until SIGTERM/SIGINT)",
    1: "the server did not start, is not running, or did not stop",
    EXIT_USAGE: EXIT_MEANINGS[EXIT_USAGE],
}, server=False)
"""Every status ``bitbake-prserv`` returns (bitbake's 0 and 1; 2 as argparse), as its
help lists them; tests/test_tool.py holds them to the module's returns."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitbake-prserv",
        description="BitBake PR Server. Version=%s" % __version__,
        epilog="\n".join(textwrap.wrap(EXIT_STATUSES.epilog(), 80)),
        formatter_class=argparse.RawTextHelpFormatter)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--start", action="store_true", help="start daemon")
    modes.add_argument("--stop", action="store_true", help="stop daemon")
    modes.add_argument("-F", "--foreground", action="store_true",
                       help="serve in this process until SIGTERM/SIGINT (systemd, containers)")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    add_server_options(parser)
    return parser


# --------------------------------------------------------------------------- the three modes

def start(config: Config, pidfile: Optional[str] = None) -> int:
    """Start a detached daemon; 0 once it accepts connections, 1 with a message if not."""
    pidfile = pidfile or config.pidfile or daemon.default_pidfile(config.bind)
    running, stale = daemon.clear_stale_pidfile(pidfile)
    if running is not None:
        sys.stderr.write("pidfile %s already exist. Daemon already running? (pid %d)\n" % (pidfile, running))
        return 1
    if stale is not None:
        sys.stderr.write("removing stale pidfile %s (pid %s is not running)\n" % (pidfile, stale or None))
    try:
        addresses = daemon.start_daemon(config, pidfile)
    except DaemonError as exc:
        sys.stderr.write("bitbake-prserv: the PR server did not start: %s\n" % exc)
        return 1
    print("PR server started: %s (pid %s, pidfile %s)" % (", ".join(addresses), daemon.read_pid(pidfile),
                                                           pidfile), flush=True)
    return 0


def stop(pidfile: str, host: Optional[str] = None, timeout: float = daemon.STOP_TIMEOUT) -> int:
    """SIGTERM the daemon named by ``pidfile`` and wait for it to exit; 0 when stopped.

    Without a pidfile: 1, listing other pidfiles of ``host`` (helps after ``--port 0``).
    """
    pid = daemon.read_pid(pidfile)
    if pid is None:
        ports = daemon.other_ports(host) if host else []
        hint = " Wrong port? Other ports listening at %s: %s" % (host, " ".join(ports)) if ports else ""
        sys.stderr.write("pidfile %s does not exist. Daemon not running?%s\n" % (pidfile, hint))
        return 1
    if not daemon.is_running(pid):
        daemon.remove_pidfile(pidfile, pid)
        print("PR server (pid %d) was not running; removed stale pidfile %s" % (pid, pidfile))
        return 0
    print("Sending SIGTERM to pr-server (pid %d)." % pid, flush=True)
    if not daemon.terminate(pid, timeout):
        sys.stderr.write("PR server (pid %d) did not exit within %.0f s\n" % (pid, timeout))
        return 1
    daemon.remove_pidfile(pidfile, pid)
    print("PR server (pid %d) stopped." % pid)
    return 0


def foreground(config: Config) -> int:
    """Serve in this process until SIGTERM/SIGINT; 0 on a clean stop, 1 if it cannot start."""
    def ready(addresses: List[str]) -> None:
        if webprocess.shown_as() is None:          # an HTTP child's server prints the line
            print(daemon.describe(config, addresses), file=sys.stderr, flush=True)

    try:
        daemon.run_foreground(config, ready)
    except DaemonError as exc:
        if webprocess.shown_as() is None:          # an HTTP child reported it to its server
            print("bitbake-prserv: %s" % exc, file=sys.stderr)
        return 1
    return 0


def stop_configured(config: Config) -> int:
    """``--stop``: the daemon named by the pidfile of the first listen address."""
    kind, args = parse_address(config.bind[0])
    host = str(args[0]) if kind == ADDR_TYPE_TCP else None
    return stop(config.pidfile or daemon.default_pidfile(config.bind), host)


# --------------------------------------------------------------------------- bitbake's functions

def start_daemon(dbfile: str, host: str, port: int, logfile: str, read_only: bool = False,
                 upstream: Optional[str] = None) -> int:
    """bitbake's ``prserv.serv.start_daemon``: a daemon on ``gethostbyname(host):port``;
    0 once it accepts connections, 1 with a message on stderr otherwise."""
    ip = daemon.resolve_host(host)
    address = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
    config = load_config({"database": dbfile, "bind": [address], "log_file": logfile,
                          "read_only": read_only, "upstream": upstream or None}, environ={})
    return start(config, pidfile=daemon.pidfile_for(host, port))


def stop_daemon(host: str, port: int) -> int:
    """bitbake's ``prserv.serv.stop_daemon``: SIGTERM the daemon of ``host:port``."""
    return stop(daemon.pidfile_for(host, port), host)


def main(argv: Optional[List[str]] = None) -> int:
    """``bitbake-prserv``'s exit status (also when stdout's reader went away: see
    ``output.ending_quietly_on_closed_stdout``)."""
    return ending_quietly_on_closed_stdout(lambda: _run(argv))


def _run(argv: Optional[List[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.start or args.stop or args.foreground):
        parser.print_help()
        return 0
    try:
        config = config_from_args(args)
        if args.stop:
            return stop_configured(config)
        if args.start:
            return start(config)
        return foreground(config)
    except ConfigError as exc:
        print("bitbake-prserv: %s" % exc, file=sys.stderr)
        return 2
