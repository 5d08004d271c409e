"""``prserv mirror``, ``mirror-status`` and ``mirror-reset``: publishing mirrors.

``mirror SOURCE DB`` copies once and exits; ``mirror-status`` asks a running mirror
where it stands; ``mirror-reset DB`` (the mirror stopped) makes it copy afresh.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, Optional

from ..errors import DatabaseError, DivergedError, MirrorError
from ..runtime import mirroring
from .output import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Failure, Output, exit_statuses
from .requests import connect_client

EXIT_DIVERGED = EXIT_REFUSED
"""mirror / mirror-status: the mirror does not follow its source any more."""


@exit_statuses({EXIT_DIVERGED: "the file follows another history, or the source refused"}, server=True)
def cmd_mirror(args: argparse.Namespace, out: Output) -> int:
    bar = _ProgressBar() if sys.stderr.isatty() and not out.as_json else None
    try:
        summary = mirroring.copy_once(args.source, args.database, timeout=args.timeout,
                                      progress=bar.update if bar else None)
    except DivergedError as exc:
        raise Failure(EXIT_DIVERGED, "%s does not follow %s any more: %s (prserv mirror-reset %s "
                      "copies afresh)" % (args.database, args.source, exc, args.database)) from None
    except MirrorError as exc:
        raise Failure(EXIT_REFUSED, str(exc)) from None
    except DatabaseError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    finally:
        if bar:
            bar.finish()
    out.result(summary, "copied %d rows from %s to %s in %.1f s; position %s%s" % (
        summary["rows_copied"], args.source, summary["database"], summary["seconds"],
        summary["position"], "" if summary["complete"] else " (the source's own copy is incomplete)"))
    return EXIT_OK


@exit_statuses({EXIT_NOT_FOUND: "not a mirror", EXIT_DIVERGED: "diverged, or refused by the server"},
                server=True)
def cmd_mirror_status(args: argparse.Namespace, out: Output) -> int:
    with connect_client(args) as client:
        status = client.mirror_status()
    if status is None:
        out.result({"mirror": None}, None)
        print("prserv: %s is not a mirror" % args.server, file=sys.stderr)
        return EXIT_NOT_FOUND
    out.result({"mirror": status}, _status_text(status))
    return EXIT_DIVERGED if status["state"] == "diverged" else EXIT_OK


def _status_text(status: Dict[str, Any]) -> str:
    """``mirror-status`` for people; a null in the answer is said in words: no position
    is "none yet", rows behind the server does not know (not said yet, or meaningless
    once diverged) are "unknown"."""
    contact = status["seconds_since_contact"]
    behind = status["rows_behind"]
    lines = ["source:     %s" % status["source"],
             "state:      %s%s" % (status["state"], "" if status["complete"] else " (first copy incomplete)"),
             "position:   %s" % ("none yet" if status["position"] is None else status["position"]),
             "behind:     %s" % ("unknown" if behind is None else "%d rows%s" % (
                 behind, " (the source is a mirror not this far yet)" if status.get("source_behind") else "")),
             "contact:    %s" % ("never" if contact is None else "%.1f s ago" % contact),
             "audit:      %s" % _audit_text(status["audit"])]
    if status["reason"]:
        lines.append("reason:     %s" % status["reason"])
    lines.extend("warning:    %s" % warning for warning in status["warnings"])
    return "\n".join(lines)


def _audit_text(audit: Dict[str, Any]) -> str:
    if "rows_checked" not in audit:
        return str(audit.get("result"))
    return "%s (%d rows checked, %d no longer at the source)" % (
        audit["result"], audit["rows_checked"], audit["missing_at_source"])


@exit_statuses()
def cmd_mirror_reset(args: argparse.Namespace, out: Output) -> int:
    try:
        removed = mirroring.reset(args.database)
    except (DatabaseError, DivergedError) as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    out.result({"database": args.database, "rows_removed": removed},
               "%s: removed the mirror's %d rows; the next --mirror copies afresh" % (args.database, removed))
    return EXIT_OK


class _ProgressBar:
    """Rows copied on one line of a terminal."""

    def __init__(self) -> None:
        self.shown = False

    def update(self, copied: int, behind: Optional[int]) -> None:
        if behind:
            total = copied + behind
            width = 30
            done = width * copied // total
            text = "[%s%s] %d / %d rows" % ("#" * done, "." * (width - done), copied, total)
        else:
            text = "%d rows" % copied
        sys.stderr.write("\r" + text)
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("mirror", cmd_mirror, "copy a server's rows into a mirror file until caught up, then exit "
                  "(the file can later be served with --mirror)")
    sub.add_argument("source", metavar="SOURCE", help="the server to copy (any client address)")
    sub.add_argument("database", metavar="DB", help="the mirror's SQLite file")
    command("mirror-status", cmd_mirror_status, "where a mirror (--server) stands: source, state, "
            "position, rows behind, last contact, audit")
    sub = command("mirror-reset", cmd_mirror_reset, "forget a mirror file's copy so that it copies afresh "
                  "(the mirror stopped)")
    sub.add_argument("database", metavar="DB", help="the mirror's SQLite file")
