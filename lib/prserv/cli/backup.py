"""``prserv backup`` / ``restore`` / ``dump``: copies of a live database, and back.

The copies themselves are ``prserv.storage.sqlite.backup``; here they get their
CPU priority (``prserv.runtime.priority``), their report and their exit code.
Every command ends by printing the result of ``PRAGMA integrity_check`` and the row
count of each table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict

from ..errors import BackupError, DatabaseBusy, VerificationFailed
from ..runtime.priority import BACKUP_PRIORITIES, IDLE_THROTTLE, lower_priority
from ..storage.sqlite import backup, files
from ..storage.postgresql.url import is_url, masked
from .output import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_VERIFY, Failure, Output, exit_statuses
from .requests import connect_client


def _describe(summary: Dict[str, Any], verb: str) -> str:
    text = "%s %s to %s (%s, %.1f MiB) in %.2f s" % (
        verb, summary["source"], summary["output"], summary["format"], summary["bytes"] / 2**20,
        summary["seconds"])
    if "priority" in summary:
        text += " at %s priority" % summary["priority"]
    if summary.get("cpu_share"):
        text += ", at most %d%% of one core" % round(100 * summary["cpu_share"])
    return text


def _report_text(report: Dict[str, Any]) -> str:
    lines = ["integrity_check: %s" % "; ".join(report["integrity"][:20])]
    lines.extend("%s: %d rows" % (name, count) for name, count in report["tables"].items())
    if not report["tables"]:
        lines.append("(no tables)")
    return "\n".join(lines)


def _finish(out: Output, summary: Dict[str, Any], report: Dict[str, Any], verb: str) -> int:
    """Print the summary and the verification; the exit code says whether it passed."""
    summary["verification"] = report
    out.result(summary, "%s\n%s" % (_describe(summary, verb), _report_text(report)))
    if not report["ok"]:
        print("prserv: %s fails its integrity check" % report["path"], file=sys.stderr)
        return EXIT_VERIFY
    return EXIT_OK


def _failure(exc: Exception) -> Exception:
    """The ``Failure`` (exit code and message) for what stopped a backup or restore."""
    if isinstance(exc, OSError):            # else tool.main would call it a network problem
        return Failure(EXIT_USAGE, "%s: %s" % (exc.filename or "file", exc.strerror or exc))
    if isinstance(exc, VerificationFailed):
        return Failure(EXIT_VERIFY, str(exc))
    return Failure(EXIT_REFUSED if isinstance(exc, DatabaseBusy) else EXIT_USAGE, str(exc))


@exit_statuses({EXIT_REFUSED: "the file is held by a buffered-mode server (use dump)",
                EXIT_VERIFY: "the copy fails its integrity check"})
def cmd_backup(args: argparse.Namespace, out: Output) -> int:
    """``prserv backup DB OUT [--sql] [--priority idle|low|normal]``."""
    if is_url(args.db):
        raise Failure(EXIT_USAGE, "%s is a PostgreSQL database: back it up with pg_dump (pg_dump -Fc -f "
                      "prserv.dump 'URL'; restore with pg_restore -d 'URL' prserv.dump), or copy it into a "
                      "SQLite file with 'prserv copy URL FILE'" % masked(args.db))
    try:
        blocks_writers = backup.journal_mode(args.db) != "wal"
        applied = lower_priority(args.priority, blocks_writers)
        throttle = IDLE_THROTTLE if args.priority == "idle" and not blocks_writers else None
        summary = backup.backup_file(args.db, args.out, sql=args.sql, throttle=throttle)
        report = backup.verify_sql(args.out, throttle) if args.sql else backup.verify(args.out, throttle)
    except (BackupError, OSError) as exc:
        raise _failure(exc) from None
    summary["priority"] = applied
    summary["cpu_share"] = throttle.cpu_share if throttle else None
    return _finish(out, summary, report, "backed up")


@exit_statuses({EXIT_REFUSED: "a server has DEST open (--force)",
                EXIT_VERIFY: "the copy fails its integrity check"})
def cmd_restore(args: argparse.Namespace, out: Output) -> int:
    """``prserv restore SRC DEST [--force]``."""
    try:
        summary = backup.restore(args.src, args.dest, force=args.force)
    except (BackupError, OSError) as exc:
        raise _failure(exc) from None
    return _finish(out, summary, summary.pop("verification"), "restored")


@exit_statuses({EXIT_VERIFY: "the copy fails its integrity check"}, server=True)
def cmd_dump(args: argparse.Namespace, out: Output) -> int:
    """``prserv dump --server ADDR OUT``: the server's own dump (``dump-db``)."""
    started = time.monotonic()
    with connect_client(args) as client:
        if args.out == "-":
            chars = client.dump_db(sys.stdout)
            sys.stdout.flush()
        else:
            with files.replacing(args.out) as temporary:
                try:
                    fd = open(temporary, "w", encoding="utf-8")
                except OSError as exc:
                    raise _failure(exc) from None
                with fd:
                    chars = client.dump_db(fd)
    summary = {"source": args.server, "output": args.out, "format": "sql",
               "bytes": chars if args.out == "-" else os.path.getsize(args.out),
               "seconds": round(time.monotonic() - started, 3)}
    if args.out == "-":                      # stdout carries the dump: report on stderr
        Output(out.as_json, sys.stderr).result(
            summary, "dumped %s to stdout (%d bytes) in %.2f s (not verified)" % (
                args.server, chars, summary["seconds"]))
        return EXIT_OK
    try:
        report = backup.verify_sql(args.out)
    except (BackupError, OSError) as exc:
        raise _failure(exc) from None
    return _finish(out, summary, report, "dumped")


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("backup", cmd_backup,
                  "copy a database file consistently, also while a server writes to it "
                  "(not one held by a buffered-mode server: use 'dump')")
    sub.add_argument("db", metavar="DB", help="the database file")
    sub.add_argument("out", metavar="OUT", help="the copy (replaced atomically)")
    sub.add_argument("--sql", action="store_true", help="write the SQL text dump, not a binary copy")
    sub.add_argument("--priority", choices=BACKUP_PRIORITIES, default="idle",
                     help="CPU priority of the copy: idle (default: only CPU time nothing else "
                          "wants, Linux SCHED_IDLE, and at most 25%% of one core), low (niceness "
                          "10) or normal; a database not in WAL mode is always copied at normal "
                          "priority")
    sub = command("restore", cmd_restore,
                  "make a database from a backup (binary copy or SQL dump); stop its servers first")
    sub.add_argument("src", metavar="SRC", help="the backup")
    sub.add_argument("dest", metavar="DEST", help="the database file to create")
    sub.add_argument("--force", action="store_true", help="replace DEST if it exists")
    sub = command("dump", cmd_dump, "write a running server's SQL dump to OUT ('-': stdout)")
    sub.add_argument("out", metavar="OUT")
