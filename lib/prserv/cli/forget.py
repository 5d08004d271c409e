"""``prserv forget-clients --before DATE DB``: old addresses and users erased from the
record of when each value was given (times stay)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..errors import DatabaseError
from ..runtime.forgetting import forget_clients, parse_before
from .output import EXIT_OK, EXIT_USAGE, Failure, Output, exit_statuses


@exit_statuses()
def cmd_forget_clients(args: argparse.Namespace, out: Output) -> int:
    try:
        before = parse_before(args.before)
    except ValueError as exc:
        raise Failure(EXIT_USAGE, "--before: %s" % exc) from None
    try:
        summary = forget_clients(args.db, before)
    except DatabaseError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    out.result(summary, "%s: erased the address and user of %d record%s of values given before %s" % (
        summary["database"], summary["changed"], "" if summary["changed"] == 1 else "s", summary["before"]))
    return EXIT_OK


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("forget-clients", cmd_forget_clients,
                  "erase the address and user recorded with every value given before DATE (the times "
                  "stay); also while a server uses the database")
    sub.add_argument("--before", required=True, metavar="DATE",
                     help="a date (2026-12-06: midnight UTC) or an RFC 3339 time (2026-12-06T08:00:00Z)")
    sub.add_argument("db", metavar="DB", help="a SQLite file or a postgresql:// URL")
