"""Command line of ``bitbake-prserv``: bitbake's flags, plus foreground mode and settings.

bitbake's flags keep their meaning and defaults (``-f prserv.sqlite3``, ``-l
prserv.log``, ``--host 0.0.0.0``, ``--port 8585``, ``--start``/``--stop``).  Added:
``-F/--foreground``, ``--bind`` (unix and websocket addresses, several listeners),
``--config FILE``, ``--pidfile``, ``--upstream-timeout`` and ``--version``.  Every
setting can also come from a ``PRSERV_*`` variable or the config file
(``prserv.config``); flags win.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import __version__
from .config import DEFAULT_HOST, DEFAULT_PORT, Config, load_config
from .errors import ConfigError

PRHOST_DEFAULT = DEFAULT_HOST
PRPORT_DEFAULT = DEFAULT_PORT


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The server settings' flags (no defaults here: unset flags fall through to the
    environment, the config file, then the defaults shown)."""
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file with server settings (default: $PRSERV_CONFIG)")
    parser.add_argument("-f", "--file", help="database filename (default: prserv.sqlite3)")
    parser.add_argument("-l", "--log", help="log filename, '-' for stderr (default: prserv.log;\n"
                                            "stderr with --foreground)")
    parser.add_argument("--loglevel",
                        help="logging level, i.e. CRITICAL, ERROR, WARNING, INFO, DEBUG")
    parser.add_argument("--host", help="ip address to bind (default: %s)" % PRHOST_DEFAULT)
    parser.add_argument("--port", type=int, help="port number (default: %d)" % PRPORT_DEFAULT)
    parser.add_argument("--bind", "--address", action="append", metavar="ADDR",
                        help="listen address, repeatable: HOST:PORT, [V6]:PORT, unix:///PATH,\n"
                             "ws://HOST:PORT (in addition to --host/--port when given)")
    parser.add_argument("-r", "--read-only", action="store_const", const=True,
                        help="open database in read-only mode")
    parser.add_argument("-u", "--upstream", help="Upstream PR service (host:port)")
    parser.add_argument("--upstream-timeout", metavar="SECONDS",
                        help="seconds to wait for the upstream before answering with an error\n"
                             "(default: 10)")
    parser.add_argument("--sync-mode", metavar="MODE",
                        help="immediate (default: each value fsync'd before it is answered),\n"
                             "periodic:SECONDS, or on-shutdown (throwaway builds)")
    parser.add_argument("--pidfile", help="daemon pidfile (default: /tmp/PRServer_<ip>_<port>.pid)")
    limits = parser.add_argument_group("limits (per connection; see README)")
    limits.add_argument("--max-connections", metavar="N",
                        help="open client connections at most (default: 10000; 0: no limit)")
    limits.add_argument("--idle-timeout", metavar="SECONDS",
                        help="close a client connection silent this long (default: 3600; 0: never)")
    limits.add_argument("--handshake-timeout", metavar="SECONDS",
                        help="time a new connection has for its setup (default: 30; 0: no limit)")
    limits.add_argument("--max-message-size", metavar="BYTES",
                        help="largest request, chunk streams included (default: 16M)")
    limits.add_argument("--max-handshake-line", metavar="BYTES",
                        help="longest connection-setup line (default: 4K)")
    limits.add_argument("--shutdown-timeout", metavar="SECONDS",
                        help="time requests in flight get on SIGTERM/SIGINT (default: 10)")


def config_from_args(args: argparse.Namespace) -> Config:
    """Settings from parsed flags layered over environment, file and defaults."""
    bind: Optional[List[str]] = None
    if args.host is not None or args.port is not None:
        host = args.host if args.host is not None else PRHOST_DEFAULT
        port = args.port if args.port is not None else PRPORT_DEFAULT
        bind = ["[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)]
    if args.bind:
        bind = (bind or []) + args.bind
    flags = {"database": args.file, "log_file": args.log, "log_level": args.loglevel,
             "bind": bind, "read_only": args.read_only, "upstream": args.upstream,
             "upstream_timeout": args.upstream_timeout, "sync_mode": args.sync_mode,
             "pidfile": args.pidfile, "max_connections": args.max_connections,
             "idle_timeout": args.idle_timeout, "handshake_timeout": args.handshake_timeout,
             "max_message_size": args.max_message_size, "max_handshake_line": args.max_handshake_line,
             "shutdown_timeout": args.shutdown_timeout}
    return load_config(flags, config_file=args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitbake-prserv",
        description="BitBake PR Server. Version=%s" % __version__,
        formatter_class=argparse.RawTextHelpFormatter)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--start", action="store_true", help="start daemon")
    modes.add_argument("--stop", action="store_true", help="stop daemon")
    modes.add_argument("-F", "--foreground", action="store_true",
                       help="serve in this process until SIGTERM/SIGINT (systemd, containers)")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    add_server_options(parser)
    return parser


def stop(config: Config) -> int:
    """``--stop``: the daemon named by the pidfile of the first listen address."""
    from .asyncrpc.address import ADDR_TYPE_TCP, parse_address
    from .daemon import default_pidfile, stop_daemon_pidfile

    kind, args = parse_address(config.bind[0])
    host = str(args[0]) if kind == ADDR_TYPE_TCP else None
    return stop_daemon_pidfile(config.pidfile or default_pidfile(config.bind), host)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.start or args.stop or args.foreground):
        parser.print_help()
        return 0
    try:
        config = config_from_args(args)
        if args.stop:
            return stop(config)
        from . import daemon

        if args.start:
            return daemon.start_daemon_config(config)
        return daemon.run_foreground(config)
    except ConfigError as exc:
        print("bitbake-prserv: %s" % exc, file=sys.stderr)
        return 2
