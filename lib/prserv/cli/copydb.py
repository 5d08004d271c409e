"""``prserv copy SRC DEST``: move a database between SQLite files and PostgreSQL."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..errors import DatabaseError
from ..runtime.copying import copy_database
from .output import EXIT_OK, EXIT_USAGE, EXIT_VERIFY, Failure, Output, exit_statuses


@exit_statuses({EXIT_VERIFY: "DEST lacks rows of the source, or holds them otherwise"})
def cmd_copy(args: argparse.Namespace, out: Output) -> int:
    shown = sys.stderr.isatty() and not out.as_json
    try:
        summary = copy_database(args.src, args.dest, progress=_progress if shown else None)
    except DatabaseError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    finally:
        if shown:
            sys.stderr.write("\n")
    out.result(summary, _text(summary))
    if not summary["verified"]:
        print("prserv: %s lacks %d of the source's rows, or holds them otherwise" % (
            summary["destination"], summary["missing"]), file=sys.stderr)
        return EXIT_VERIFY
    return EXIT_OK


def _progress(rows: int) -> None:
    sys.stderr.write("\r%d rows" % rows)
    sys.stderr.flush()


def _text(summary: Any) -> str:
    lines = ["copied %s to %s in %.1f s: %d rows read, %d added, %d there already" % (
        summary["source"], summary["destination"], summary["seconds"], summary["rows_read"],
        summary["rows_added"], summary["rows_present"])]
    if summary["rows_skipped"]:
        lines.append("skipped %d rows whose value is not a revision" % summary["rows_skipped"])
    lines.append("verified: %s (source %d rows, digest %s; found in the destination %d, digest %s)" % (
        "ok" if summary["verified"] else "FAILED", summary["source_count"], summary["source_digest"],
        summary["destination_count"], summary["destination_digest"]))
    return "\n".join(lines)


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("copy", cmd_copy, "copy every row of a database into another (SQLite file or "
                  "postgresql:// URL, either way), adding what DEST lacks; verified at the end")
    sub.add_argument("src", metavar="SRC", help="a SQLite file (also one of bitbake <= 2.8) or a PostgreSQL URL")
    sub.add_argument("dest", metavar="DEST", help="a SQLite file (created) or a PostgreSQL URL")


