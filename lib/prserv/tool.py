"""``prserv``: a command-line client for any PR server (ours or bitbake's)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, TextIO

from . import __version__, logger
from .asyncrpc.address import AddressError
from .asyncrpc.exceptions import InvokeError
from .config import environment_host
from .errors import ConfigError
from .oefile import Problem, Row, export_lines, last_assignments, read_rows
from .revision import is_revision

EXIT_OK = 0
EXIT_NOT_FOUND = 1          # test-pr / max-package-pr: no value; test-package: unknown package
EXIT_USAGE = 2              # bad arguments or settings (argparse's own code)
EXIT_UNREACHABLE = 3        # no connection to the server
EXIT_REFUSED = 4            # the server answered with an error, or is read-only for a write
EXIT_INCOMPLETE = 5         # import-file: some lines were skipped; migrate: some rows
EXIT_VERIFY = 6             # backup / restore / dump: the copy fails its integrity check

EXIT_CODES_HELP = """
  0 success, 1 not found, 2 bad arguments, 3 server unreachable,
  4 refused by the server (backup: the file is held by a buffered-mode server),
  5 import-file skipped some lines, 6 a backup fails its integrity check.
"""

DESCRIPTION = """\
One subcommand per request (``get-pr``, ``test-pr``, ``test-package``,
``max-package-pr``, ``import-one``, ``export``, ``ping``, ``is-readonly``), plus
``export-file`` / ``import-file`` in OpenEmbedded's ``bitbake-prserv-tool`` text
format and ``config --show`` for the server settings.  ``--json`` prints one JSON
document for scripts.  Exit codes tell apart what a script needs to know:
""" + EXIT_CODES_HELP
"""The text of ``prserv --help``, also under ``python -OO``, which drops docstrings."""

if __doc__ is not None:                 # None under python -OO
    __doc__ += "\n\n" + DESCRIPTION

PROGRESS_INTERVAL = 0.2     # seconds between progress bar updates
MAX_LISTED_PROBLEMS = 20


class Failure(Exception):
    """Ends the command with ``code`` after printing ``message`` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- output

class Output:
    """Text for people, or one JSON document (``--json``) for scripts."""

    def __init__(self, as_json: bool, stream: Optional[TextIO] = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def result(self, document: Dict[str, Any], text: Optional[str]) -> None:
        if self.as_json:
            print(json.dumps(document), file=self.stream)
        elif text is not None:
            print(text, file=self.stream)


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- one request each

def _connect(args: argparse.Namespace):
    from .client import PRClient

    client = PRClient(timeout=args.timeout)
    try:
        client.connect_address(args.server)
    except BaseException:
        client.close()
        raise
    return client


def _request(args: argparse.Namespace, call: Callable[[Any], Any]) -> Any:
    with _connect(args) as client:
        return call(client)


def cmd_get_pr(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.getPR(args.version, args.pkgarch, args.checksum, args.history))
    out.result({"value": value}, value)
    return EXIT_OK


def _maybe_value(value: Any, out: Output, what: str) -> int:
    out.result({"value": value}, None if value is None else _text_value(value))
    if value is None:
        if not out.as_json:
            print("prserv: %s" % what, file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_test_pr(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.test_pr(args.version, args.pkgarch, args.checksum, args.history))
    return _maybe_value(value, out, "no value for %s %s %s" % (args.version, args.pkgarch, args.checksum))


def cmd_test_package(args: argparse.Namespace, out: Output) -> int:
    known = bool(_request(args, lambda c: c.test_package(args.version, args.pkgarch)))
    out.result({"value": known}, _text_value(known))
    return EXIT_OK if known else EXIT_NOT_FOUND


def cmd_max_package_pr(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.max_package_pr(args.version, args.pkgarch))
    return _maybe_value(value, out, "no values for %s %s" % (args.version, args.pkgarch))


def _revision_argument(text: str) -> str:
    if not is_revision(text):
        raise argparse.ArgumentTypeError("%r is not a revision (dotted non-negative integers)" % text)
    return text


def cmd_import_one(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.importone(args.version, args.pkgarch, args.checksum, args.value))
    if value is None:
        raise Failure(EXIT_REFUSED, "the server is read-only: nothing imported")
    out.result({"value": value}, _text_value(value))
    return EXIT_OK


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    metainfo, datainfo = _export(args)
    if out.as_json:
        out.result({"metainfo": metainfo, "datainfo": datainfo}, None)
        return EXIT_OK
    if metainfo:
        print("# table %s, core_ver %s, columns: %s" % (
            metainfo["tbl_name"], metainfo["core_ver"],
            ", ".join(column["name"] for column in metainfo["col_info"])), file=out.stream)
    for row in datainfo:
        print("%s\t%s\t%s\t%s" % (row["version"], row["pkgarch"], row["checksum"], row["value"]),
              file=out.stream)
    return EXIT_OK


def _export(args: argparse.Namespace):
    answer = _request(args, lambda c: c.export(args.version, args.pkgarch, args.checksum,
                                               args.colinfo, args.history))
    if answer is None:
        raise Failure(EXIT_REFUSED, "the server answered the export with nothing")
    return answer


def cmd_ping(args: argparse.Namespace, out: Output) -> int:
    answer = _request(args, lambda c: c.ping())
    alive = bool(answer and answer.get("alive"))
    out.result({"alive": alive}, "alive" if alive else "not alive")
    return EXIT_OK if alive else EXIT_REFUSED


def cmd_is_readonly(args: argparse.Namespace, out: Output) -> int:
    readonly = bool(_request(args, lambda c: c.is_readonly()))
    out.result({"readonly": readonly}, _text_value(readonly))
    return EXIT_OK


# --------------------------------------------------------------------------- OE files

def cmd_export_file(args: argparse.Namespace, out: Output) -> int:
    metainfo, datainfo = _export(args)
    lines, unwritable = export_lines(datainfo, metainfo if args.colinfo else None,
                                     nomax=args.nomax, lockdown=args.lockdown)
    if args.file == "-":
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        _write_atomically(args.file, lines)
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
    from .client import PRAsyncClient

    client = PRAsyncClient(timeout=args.timeout)
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


# --------------------------------------------------------------------------- server settings

def cmd_config(args: argparse.Namespace, out: Output) -> int:
    from .cli import config_from_args

    config = config_from_args(args)
    print(config.as_json() if out.as_json else config.show(), end="\n" if out.as_json else "",
          file=out.stream)
    return EXIT_OK


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    # Common options are accepted before or after the subcommand; SUPPRESS keeps a
    # subcommand's unset copy from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=argparse.SUPPRESS, metavar="ADDR",
                        help="server address (default: $PRSERV_HOST, else localhost:8585)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for each answer (default: 30)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log connection problems and retries")

    parser = argparse.ArgumentParser(prog="prserv", parents=[common],
                                     description="Talk to a PR server. " + DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def package(sub: argparse.ArgumentParser, checksum: bool = True) -> None:
        sub.add_argument("version")
        sub.add_argument("pkgarch")
        if checksum:
            sub.add_argument("checksum")

    def filters(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--version", dest="version", help="only this version")
        sub.add_argument("--pkgarch", help="only this package architecture")
        sub.add_argument("--checksum", help="only this checksum")
        sub.add_argument("--history", action="store_true",
                         help="every row (default: each package's maximum rows)")
        sub.add_argument("--colinfo", action="store_true", help="include the table's column info")

    sub = command("get-pr", cmd_get_pr, "the PR value for a checksum (allocated if new)")
    package(sub)
    sub.add_argument("--history", action="store_true", help="history mode (first value, not last)")
    sub = command("test-pr", cmd_test_pr, "the stored value for a checksum, if any (exit 1 if none)")
    package(sub)
    sub.add_argument("--history", action="store_true", help="history mode (first value, not last)")
    package(command("test-package", cmd_test_package,
                    "whether the server knows a package (exit 1 if not)"), checksum=False)
    package(command("max-package-pr", cmd_max_package_pr,
                    "a package's highest value (exit 1 if none)"), checksum=False)
    sub = command("import-one", cmd_import_one, "store one value as given")
    package(sub)
    sub.add_argument("value", type=_revision_argument)
    filters(command("export", cmd_export, "print the server's rows (tab-separated, or --json)"))
    sub = command("export-file", cmd_export_file,
                  "write rows in bitbake-prserv-tool's export format ('-': stdout)")
    sub.add_argument("file", metavar="OUT")
    filters(sub)
    sub.add_argument("--nomax", action="store_true", help="omit the PRAUTO_<version>_<pkgarch> lines")
    sub.add_argument("--lockdown", action="store_true", help='append PRSERV_LOCKDOWN = "1"')
    sub = command("import-file", cmd_import_file,
                  "import a bitbake-prserv-tool export file ('-': stdin), pipelined")
    sub.add_argument("file", metavar="IN")
    sub.add_argument("--window", type=int, default=128, help="requests in flight (default: 128)")
    command("ping", cmd_ping, "check that the server answers")
    command("is-readonly", cmd_is_readonly, "whether the server is read-only")

    from .cli import add_server_options

    sub = command("config", cmd_config, "print the effective server configuration and its sources")
    sub.add_argument("--show", action="store_true", help="print it (the default action)")
    add_server_options(sub)

    from . import backup, migrate

    migrate.add_commands(command)       # prserv migrate
    backup.add_commands(command)        # prserv backup / restore / dump
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.server = getattr(args, "server", None) or environment_host()
    args.timeout = getattr(args, "timeout", 30.0)
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
    except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
        print("prserv: cannot reach the PR server at %s: %s" % (args.server, exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
