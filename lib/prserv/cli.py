"""Command line of ``bitbake-prserv`` (bitbake's flags, plus ``--foreground``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from . import __version__

PRHOST_DEFAULT = "0.0.0.0"
PRPORT_DEFAULT = 8585


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitbake-prserv",
        description="BitBake PR Server. Version=%s" % __version__,
        formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-f", "--file", default="prserv.sqlite3",
                        help="database filename (default: prserv.sqlite3)")
    parser.add_argument("-l", "--log", default="prserv.log",
                        help="log filename (default: prserv.log)")
    parser.add_argument("--loglevel", default="INFO",
                        help="logging level, i.e. CRITICAL, ERROR, WARNING, INFO, DEBUG")
    parser.add_argument("--start", action="store_true", help="start daemon")
    parser.add_argument("--stop", action="store_true", help="stop daemon")
    parser.add_argument("--foreground", action="store_true",
                        help="serve in this process until SIGTERM/SIGINT (for systemd, containers)")
    parser.add_argument("--host", default=PRHOST_DEFAULT,
                        help="ip address to bind (default: %s)" % PRHOST_DEFAULT)
    parser.add_argument("--port", type=int, default=PRPORT_DEFAULT,
                        help="port number (default: %d)" % PRPORT_DEFAULT)
    parser.add_argument("--address", default=None,
                        help="listen address instead of --host/--port: HOST:PORT, [V6]:PORT,\n"
                             "unix:///path or ws://HOST:PORT (with --foreground)")
    parser.add_argument("-r", "--read-only", action="store_true",
                        help="open database in read-only mode")
    parser.add_argument("-u", "--upstream", default=os.environ.get("PRSERV_UPSTREAM", None),
                        help="Upstream PR service (host:port)")
    parser.add_argument("--upstream-timeout", type=float, default=10.0,
                        help="seconds to wait for the upstream before answering with an error\n"
                             "(default: 10)")
    return parser


def init_logger(logfile: str, loglevel: str) -> None:
    numeric_level = getattr(logging, loglevel.upper(), None)
    if not isinstance(numeric_level, int):
        raise ValueError("Invalid log level: %s" % loglevel)
    logging.basicConfig(level=numeric_level, filename=logfile,
                        format="%(asctime)-15s %(levelname)s %(message)s")


def listen_address(args: argparse.Namespace) -> str:
    if args.address:
        return args.address
    host = args.host
    return "[%s]:%d" % (host, args.port) if ":" in host else "%s:%d" % (host, args.port)


def serve_foreground(args: argparse.Namespace) -> int:
    from . import create_server

    server = create_server(listen_address(args), os.path.abspath(args.file),
                           upstream=args.upstream or None, read_only=args.read_only,
                           upstream_timeout=args.upstream_timeout)

    def announce() -> None:
        print("prserv %s: serving %s on %s%s%s" % (
            __version__, os.path.abspath(args.file), server.address,
            " (read-only)" if args.read_only else "",
            ", upstream %s" % args.upstream if args.upstream else ""), file=sys.stderr, flush=True)

    server.serve_forever(ready=announce)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    init_logger(os.path.abspath(args.log), args.loglevel)
    if args.foreground:
        return serve_foreground(args)
    if args.start or args.stop:
        print("bitbake-prserv: --start/--stop (daemon mode) are not available in this version yet; "
              "run the server with --foreground", file=sys.stderr)
        return 2
    parser.print_help()
    return 0
