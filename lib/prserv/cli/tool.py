"""``prserv``: a command-line client for any PR server (ours or bitbake's).

The subcommands come from the modules beside this one: ``requests`` (one request
each), ``oefiles`` (OpenEmbedded's export files), ``config`` (server settings),
``migrate``, ``backup``, ``copydb``, ``forget``, ``mirror``, ``users``.  This module
builds the parser and maps what went wrong to an exit code (``output``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any, Callable, List, Optional

from ..asyncrpc.address import AddressError
from ..asyncrpc.exceptions import InvokeError
from ..errors import AuthenticationError, ConfigError, DatabaseError
from ..log import logger
from ..runtime.settings import environment_host
from ..version import __version__
from . import backup, config, copydb, forget, migrate, mirror, oefiles, requests, users
from .output import (EXIT_CODES_HELP, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, Failure, Output,
                     ending_quietly_on_closed_stdout)

DESCRIPTION = """\
One subcommand per request (get-pr, test-pr, test-package, max-package-pr,
import-one, export, ping, is-readonly, stats), plus export-file / import-file in
OpenEmbedded's bitbake-prserv-tool text format, config --show for the server
settings, migrate for databases of bitbake <= 2.8, backup, restore, dump and copy
for copies of a database, forget-clients for the addresses and users recorded with
old values, mirror, mirror-status and mirror-reset for publishing mirrors, and user add, user list, user remove, user new-token for users and their
tokens.  A client proves a user when PRSERV_TOKEN (USER:TOKEN) or a ~/.netrc entry
for the server's host holds one.  --json prints one JSON document for scripts.
Exit codes tell apart what a script needs to know (each command's --help lists its
own):
""" + EXIT_CODES_HELP
"""The text of ``prserv --help``: plain text, as a terminal shows it (a constant:
``python -OO`` drops docstrings)."""

DEFAULT_TIMEOUT = 30.0


def build_parser() -> argparse.ArgumentParser:
    # Common options are accepted before or after the subcommand; SUPPRESS keeps a
    # subcommand's unset copy from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=argparse.SUPPRESS, metavar="ADDR",
                        help="server address (default: $PRSERV_HOST, else localhost:8585)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for each answer (default: %g)" % DEFAULT_TIMEOUT)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log connection problems and retries")

    parser = argparse.ArgumentParser(prog="prserv", parents=[common],
                                     description="Talk to a PR server. " + DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Optional[Callable[..., int]], help: str,
                under: Any = None) -> argparse.ArgumentParser:
        """A subcommand (``under``: a group's ``add_subparsers()``, for ``user add``); its
        help ends with the exit statuses its handler declares (``output.exit_statuses``)."""
        epilog = handler.exit_statuses.epilog() if handler is not None else None  # type: ignore[attr-defined]
        sub = (under or commands).add_parser(name, parents=[common], help=help, description=help,
                                             epilog=epilog)
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub

    for module in (requests, oefiles, config, migrate, backup, copydb, forget, mirror, users):
        module.add_commands(command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``prserv``'s exit status (also when stdout's reader went away: see
    ``output.ending_quietly_on_closed_stdout``)."""
    return ending_quietly_on_closed_stdout(lambda: _run(argv))


def _run(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    args.server = getattr(args, "server", None) or environment_host()
    args.timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)
    out = Output(getattr(args, "json", False))
    logging.basicConfig(format="prserv: %(message)s")
    level = logger.level                      # restored: main() may run inside another program
    logger.setLevel(logging.DEBUG if getattr(args, "verbose", False) else logging.CRITICAL)
    try:
        return args.handler(args, out)
    except Failure as exc:
        print("prserv: %s" % exc, file=sys.stderr)
        return exc.code
    except (AddressError, ConfigError) as exc:
        print("prserv: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except InvokeError as exc:
        print("prserv: the server refused the request: %s" % exc, file=sys.stderr)
        return EXIT_REFUSED
    except AuthenticationError as exc:
        print("prserv: %s" % exc, file=sys.stderr)
        return EXIT_REFUSED
    except DatabaseError as exc:
        print("prserv: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
        if not args.handler.exit_statuses.server:        # a local file's, not the network's
            print("prserv: %s" % exc, file=sys.stderr)
            return EXIT_USAGE
        print("prserv: cannot reach the PR server at %s: %s" % (args.server, exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        logger.setLevel(level)
