"""``prserv export-file`` / ``import-file``: OpenEmbedded's ``bitbake-prserv-tool`` files.

The format itself is ``prserv.oefile`` (text in, text out); here it meets a server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Callable, List, Optional

from ..client import PRAsyncClient
from ..oefile import Problem, Row, export_lines, last_assignments, read_rows
from ..runtime.credentials import credentials_for
from .output import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Failure, Output, exit_statuses
from .requests import client_tls_context, export, export_filters

PROGRESS_INTERVAL = 0.2     # seconds between progress bar updates
MAX_LISTED_PROBLEMS = 20


@exit_statuses({EXIT_REFUSED: "refused by the server, or answered nothing"}, server=True)
def cmd_export_file(args: argparse.Namespace, out: Output) -> int:
    metainfo, datainfo = export(args)
    lines, unwritable = export_lines(datainfo, metainfo if args.colinfo else None,
                                     nomax=args.nomax, lockdown=args.lockdown)
    if args.file == "-":
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        try:
            _write_atomically(args.file, lines)
        except OSError as exc:          # else tool.main would take it for the network's
            raise Failure(EXIT_USAGE, "cannot write %s: %s" % (args.file, exc.strerror or exc)) from None
    for row in unwritable:
        print("prserv: not exported (field unusable in a variable name): %r" % (row,), file=sys.stderr)
    written = len(datainfo) - len(unwritable)
    if args.file == "-":                       # stdout carries the file: report on stderr
        out = Output(out.as_json, sys.stderr)
    out.result({"rows": written, "unwritable": len(unwritable), "file": args.file},
               "exported %d rows to %s" % (written, args.file))
    return EXIT_OK


def _write_atomically(path: str, lines: List[str]) -> None:
    temporary = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(temporary, "w") as f:
            f.writelines(lines)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


@exit_statuses({EXIT_REFUSED: "refused by the server, or read-only",
                EXIT_INCOMPLETE: "some lines skipped"}, server=True)
def cmd_import_file(args: argparse.Namespace, out: Output) -> int:
    try:
        stream = sys.stdin if args.file == "-" else open(args.file)
    except OSError as exc:
        raise Failure(EXIT_USAGE, "cannot read %s: %s" % (args.file, exc.strerror)) from None
    with stream:        # a variable assigned twice: the last assignment counts, as in bitbake
        rows, problems, duplicates = last_assignments(read_rows(stream))
    started = time.monotonic()
    progress = Progress(len(rows)) if sys.stderr.isatty() and not out.as_json else None
    imported, refused = asyncio.run(_import_rows(args, rows, progress))
    elapsed = time.monotonic() - started
    problems.extend(refused)
    problems.sort(key=lambda problem: problem.line)
    report = "imported %d of %d rows from %s in %.1f s (%.0f rows/s)" % (
        imported, len(rows), args.file, elapsed, imported / elapsed if elapsed > 0 else 0)
    if duplicates:
        report += "\ncollapsed %d duplicate assignment(s) (the last one of each counts, as in bitbake)" % (
            duplicates)
    if problems:
        report += "\nskipped %d line%s:" % (len(problems), "" if len(problems) == 1 else "s")
        for problem in problems[:MAX_LISTED_PROBLEMS]:
            report += "\n  line %d: %s" % (problem.line, problem.reason)
        if len(problems) > MAX_LISTED_PROBLEMS:
            report += "\n  ... and %d more" % (len(problems) - MAX_LISTED_PROBLEMS)
    out.result({"imported": imported, "rows": len(rows), "duplicates": duplicates,
                "skipped": [{"line": p.line, "reason": p.reason} for p in problems]}, report)
    return EXIT_INCOMPLETE if problems else EXIT_OK


async def _import_rows(args: argparse.Namespace, rows: List[Row],
                       progress: Optional["Progress"]) -> tuple:
    """``(imported, refused)``: import-one for every row, ``args.window`` in flight."""
    client = PRAsyncClient(timeout=args.timeout, credentials=credentials_for(args.server),
                           tls_context=client_tls_context())
    imported, refused = 0, []
    try:
        await client.connect_address(args.server)
        if await client.is_readonly():
            raise Failure(EXIT_REFUSED, "the server at %s is read-only: nothing imported" % args.server)
        answers = client.importmany(((row.version, row.pkgarch, row.checksum, row.value) for row in rows),
                                    window=args.window)
        index = 0
        async for answer in answers:
            row = rows[index]
            index += 1
            if answer == row.value:
                imported += 1
            else:
                refused.append(Problem(row.line, "server answered %r for value %r" % (answer, row.value)))
            if progress is not None:
                progress.update(index)
    finally:
        await client.close()
        if progress is not None:
            progress.finish()
    return imported, refused


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.shown < PROGRESS_INTERVAL and done != self.total:
            return
        self.shown = now
        fraction = done / self.total if self.total else 1.0
        bar = "#" * int(fraction * 30)
        rate = done / (now - self.started) if now > self.started else 0
        sys.stderr.write("\r[%-30s] %3d%% %d/%d rows, %.0f rows/s" % (
            bar, fraction * 100, done, self.total, rate))
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("export-file", cmd_export_file,
                  "write rows in bitbake-prserv-tool's export format ('-': stdout)")
    sub.add_argument("file", metavar="OUT")
    export_filters(sub)
    sub.add_argument("--nomax", action="store_true", help="omit the PRAUTO_<version>_<pkgarch> lines")
    sub.add_argument("--lockdown", action="store_true", help='append PRSERV_LOCKDOWN = "1"')
    sub = command("import-file", cmd_import_file,
                  "import a bitbake-prserv-tool export file ('-': stdin), pipelined")
    sub.add_argument("file", metavar="IN")
    sub.add_argument("--window", type=int, default=128, help="requests in flight (default: 128)")
