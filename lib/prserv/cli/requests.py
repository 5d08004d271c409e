"""The ``prserv`` subcommands that each send one request (``get-pr``, ``export``...)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Tuple

from .. import messages
from ..asyncrpc import tls
from ..client import PRClient
from ..revision import is_revision
from ..runtime.credentials import credentials_for
from .output import (EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Failure, Output, exit_statuses,
                     text_value)


def connect_client(args: argparse.Namespace) -> PRClient:
    """A client of ``--server`` proving the user of ``PRSERV_TOKEN`` or ``~/.netrc``, if
    any, and checking a ``wss://`` server against ``PRSERV_TLS_CA`` if set."""
    client = PRClient(timeout=args.timeout, credentials=credentials_for(args.server),
                      tls_context=client_tls_context())
    try:
        client.connect_address(args.server)
    except BaseException:
        client.close()
        raise
    return client


def client_tls_context() -> Any:
    """``PRSERV_TLS_CA``'s bundle for ``wss://`` servers (None: the system's CAs)."""
    ca_file = os.environ.get("PRSERV_TLS_CA")
    if not ca_file:
        return None
    try:
        return tls.client_context(ca_file)
    except tls.TLSConfigError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None


def _request(args: argparse.Namespace, call: Callable[[Any], Any]) -> Any:
    with connect_client(args) as client:
        return call(client)


@exit_statuses(server=True)
def cmd_get_pr(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.getPR(args.version, args.pkgarch, args.checksum, args.history))
    out.result({"value": value}, value)
    return EXIT_OK


def _maybe_value(value: Any, out: Output, what: str) -> int:
    out.result({"value": value}, None if value is None else text_value(value))
    if value is None:
        if not out.as_json:
            print("prserv: %s" % what, file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


@exit_statuses({EXIT_NOT_FOUND: "no value for the checksum"}, server=True)
def cmd_test_pr(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.test_pr(args.version, args.pkgarch, args.checksum, args.history))
    return _maybe_value(value, out, "no value for %s %s %s" % (args.version, args.pkgarch, args.checksum))


@exit_statuses({EXIT_NOT_FOUND: "unknown package"}, server=True)
def cmd_test_package(args: argparse.Namespace, out: Output) -> int:
    known = bool(_request(args, lambda c: c.test_package(args.version, args.pkgarch)))
    out.result({"value": known}, text_value(known))
    return EXIT_OK if known else EXIT_NOT_FOUND


@exit_statuses({EXIT_NOT_FOUND: "no value for the package"}, server=True)
def cmd_max_package_pr(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.max_package_pr(args.version, args.pkgarch))
    return _maybe_value(value, out, "no values for %s %s" % (args.version, args.pkgarch))


def revision_argument(text: str) -> str:
    if not is_revision(text):
        raise argparse.ArgumentTypeError("%r is not a revision (dotted non-negative integers)" % text)
    return text


@exit_statuses({EXIT_REFUSED: "refused by the server, or read-only"}, server=True)
def cmd_import_one(args: argparse.Namespace, out: Output) -> int:
    value = _request(args, lambda c: c.importone(args.version, args.pkgarch, args.checksum, args.value))
    if value is None:
        raise Failure(EXIT_REFUSED, "the server is read-only: nothing imported")
    out.result({"value": value}, text_value(value))
    return EXIT_OK


@exit_statuses({EXIT_REFUSED: "refused by the server, or answered nothing"}, server=True)
def cmd_export(args: argparse.Namespace, out: Output) -> int:
    metainfo, datainfo = export(args)
    if out.as_json:
        out.result(messages.export_answer(metainfo, datainfo), None)
        return EXIT_OK
    if metainfo:
        print("# table %s, core_ver %s, columns: %s" % (
            metainfo["tbl_name"], metainfo["core_ver"],
            ", ".join(column["name"] for column in metainfo["col_info"])), file=out.stream)
    for row in datainfo:
        print("%s\t%s\t%s\t%s" % (row["version"], row["pkgarch"], row["checksum"], row["value"]),
              file=out.stream)
    return EXIT_OK


def export(args: argparse.Namespace) -> Tuple[dict, List[dict]]:
    """The export answer of the server named by ``args`` (``--version`` etc. filters)."""
    answer = _request(args, lambda c: c.export(args.version, args.pkgarch, args.checksum,
                                               args.colinfo, args.history))
    if answer is None:
        raise Failure(EXIT_REFUSED, "the server answered the export with nothing")
    return answer


@exit_statuses({EXIT_REFUSED: "refused by the server, or not alive"}, server=True)
def cmd_ping(args: argparse.Namespace, out: Output) -> int:
    answer = _request(args, lambda c: c.ping())
    alive = bool(answer and answer.get("alive"))
    out.result({"alive": alive}, "alive" if alive else "not alive")
    return EXIT_OK if alive else EXIT_REFUSED


@exit_statuses(server=True)
def cmd_is_readonly(args: argparse.Namespace, out: Output) -> int:
    readonly = bool(_request(args, lambda c: c.is_readonly()))
    out.result({"readonly": readonly}, text_value(readonly))
    return EXIT_OK


@exit_statuses(server=True)
def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    stats = _request(args, lambda c: c.get_stats())
    out.result(stats, stats_text(stats))
    return EXIT_OK


def stats_text(stats: Dict[str, Any]) -> str:
    """The figures of ``get-stats`` for people: one line each."""
    req = stats["requests"]
    lines = ["requests: %d, %.3f s in all, average %.3f ms, stdev %.3f ms, max %.3f ms" % (
        req["num"], req["total_time"], req["average"] * 1e3, req["stdev"] * 1e3, req["max_time"] * 1e3)]
    for name, counts in (stats.get("commands") or {}).items():
        lines.append("  %-16s %d ok, %d error" % (name, counts.get("ok", 0), counts.get("error", 0)))
    lines.append("connections open: %s" % stats.get("connections"))
    lines.append("values allocated: %s" % stats.get("allocations"))
    upstream = stats.get("upstream")
    if upstream:
        lines.append("upstream %s: %d ok, %d error%s" % (upstream["address"], upstream["ok"], upstream["error"],
                                                        ", marked down" if upstream.get("down") else ""))
    mirror = stats.get("mirror")
    if mirror:
        behind, contact = mirror["rows_behind"], mirror["seconds_since_contact"]
        lines.append("mirror: %s, %s, last contact %s" % (
            mirror["state"], "rows behind unknown" if behind is None else "%d rows behind" % behind,
            "never" if contact is None else "%s s ago" % contact))
    return "\n".join(lines)


def package_arguments(sub: argparse.ArgumentParser, checksum: bool = True) -> None:
    sub.add_argument("version")
    sub.add_argument("pkgarch")
    if checksum:
        sub.add_argument("checksum")


def export_filters(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--version", dest="version", help="only this version")
    sub.add_argument("--pkgarch", help="only this package architecture")
    sub.add_argument("--checksum", help="only this checksum")
    sub.add_argument("--history", action="store_true",
                     help="every row (default: each package's maximum rows)")
    sub.add_argument("--colinfo", action="store_true", help="include the table's column info")


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("get-pr", cmd_get_pr, "the PR value for a checksum (allocated if new)")
    package_arguments(sub)
    sub.add_argument("--history", action="store_true", help="history mode (first value, not last)")
    sub = command("test-pr", cmd_test_pr, "the stored value for a checksum, if any")
    package_arguments(sub)
    sub.add_argument("--history", action="store_true", help="history mode (first value, not last)")
    package_arguments(command("test-package", cmd_test_package,
                              "whether the server knows a package"), checksum=False)
    package_arguments(command("max-package-pr", cmd_max_package_pr,
                              "a package's highest value"), checksum=False)
    sub = command("import-one", cmd_import_one, "store one value as given")
    package_arguments(sub)
    sub.add_argument("value", type=revision_argument)
    export_filters(command("export", cmd_export, "print the server's rows (tab-separated, or --json)"))
    command("ping", cmd_ping, "check that the server answers")
    command("is-readonly", cmd_is_readonly, "whether the server is read-only")
    command("stats", cmd_stats, "what the server has answered: requests, times, connections, allocations")
