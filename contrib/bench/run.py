#!/usr/bin/env python3
"""Benchmark this project's PR server with prbench.py, one mode after another.

    run.py [--modes new,hit,mixed,conn] [--clients 32] [--duration 3 | --requests N]
           [--packages N] [--unix | --address ADDR [--server-pid PID]]

Without ``--address`` it starts this checkout's server (``bin/bitbake-prserv -F``) as
a child process on 127.0.0.1:0 with a fresh SQLite file in a temporary directory, and with
``--unix`` a second one on ``unix://<tmpdir>/prserv.sock``; each transport's modes
run in turn against that one server.  ``--address`` benchmarks an already running
server (ours, bitbake's, any PRSERVICE 1.0 server) instead.

prbench.py runs as a separate process, so the load generator and the server never
share an interpreter (or its GIL).  Prints a table, then prbench's JSON lines.
Exit status 1 if any run failed, had errors or handed out duplicate values.

When the server's pid is known (we started it, or ``--server-pid``), each row also
has the server's peak RSS during that run (VmHWM, reset before the run through
``/proc/<pid>/clear_refs``; where that is refused, the peak since the server
started) and its CPU time per request (``/proc/<pid>/task/*/schedstat``).
sweep.py reuses these pieces for the revisions-per-package sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import _load
import _servers
from _measure import cpu_seconds, cpu_used, reset_peak_rss, status_kib, status_mib, us_per_request

DEFAULT_MODES = ("new", "hit", "mixed", "conn")
DEFAULT_DURATION_S = 3.0
SUBPROCESS_GRACE_S = 120       # priming, connection set-up and a silent server's 60 s
TABLE_COLUMNS = (("transport", "%-9s"), ("mode", "%-6s"), ("clients", "%7s"),
                 ("requests", "%9s"), ("seconds", "%8s"), ("rps", "%9s"),
                 ("p50_ms", "%8s"), ("p99_ms", "%8s"), ("peak_rss_mib", "%12s"),
                 ("cpu_us_per_req", "%14s"), ("errors", "%6s"), ("duplicate_values", "%16s"))
Columns = Sequence[Tuple[str, str]]


@dataclass(frozen=True)
class Subject:
    """The server a run measures: where it listens, and its pid if we may read its
    /proc entries (else None)."""

    address: str
    pid: Optional[int] = None


@contextlib.contextmanager
def spawned_server(transport: str) -> Iterator[Subject]:
    """This checkout's server (``bitbake-prserv -F``) in a child process with a fresh
    database, on 127.0.0.1:0 or a unix socket; yields its address and pid."""
    with tempfile.TemporaryDirectory(prefix="prbench-") as tmp:
        bind = "127.0.0.1:0" if transport == "tcp" else "unix://%s/prserv.sock" % tmp
        server = _servers.Server(_servers.ROOT, os.path.join(tmp, "prserv.sqlite3"),
                                 "server (%s)" % transport, bind=bind)
        try:
            yield Subject(server.wait_serving(), server.pid)
        finally:
            server.stop()


def prbench_command(address: str, mode: str, options: argparse.Namespace,
                    extra: Sequence[str] = ()) -> List[str]:
    """The prbench.py command line for one mode; ``extra``: more prbench options."""
    command = _load.command(address, mode, "--clients", str(options.clients), *extra)
    if options.requests is not None:
        command += ["--requests", str(options.requests)]
    else:
        command += ["--duration", str(options.duration)]
    if options.packages is not None:
        command += ["--packages", str(options.packages)]
    return command


def run_prbench(address: str, mode: str, options: argparse.Namespace,
                extra: Sequence[str] = ()) -> Dict[str, Any]:
    """Run one mode; the result dict gets ``ok`` and, on failure, ``failure``."""
    limit = (options.duration or 60) + SUBPROCESS_GRACE_S
    try:
        done = _load.run_generator(prbench_command(address, mode, options, extra), limit)
    except _load.LoadFailed as exc:
        return {"mode": mode, "ok": False, "failure": str(exc)}
    sys.stderr.write(done.stderr)
    done.result["ok"] = done.status == 0
    return done.result


def run_measured(server: Subject, mode: str, options: argparse.Namespace,
                 extra: Sequence[str] = ()) -> Dict[str, Any]:
    """run_prbench, plus the server's peak RSS and CPU per request during the run.

    Both are None without a pid.  CPU is divided by every answered request,
    priming included (it is spent inside the measured interval too), as
    targets.sh does.  ``peak_rss_scope`` says whether the peak is this run's
    ("run") or the server's lifetime peak ("process", clear_refs refused).
    """
    if server.pid is None:
        result = run_prbench(server.address, mode, options, extra)
        result.update(peak_rss_mib=None, cpu_us_per_req=None)
        return result
    reset = reset_peak_rss(server.pid)
    cpu_before = cpu_seconds(server.pid)
    result = run_prbench(server.address, mode, options, extra)
    cpu = cpu_used(cpu_before, cpu_seconds(server.pid))
    result["peak_rss_mib"] = status_mib(server.pid, "VmHWM")
    result["peak_rss_scope"] = "run" if reset else "process"
    result["cpu_us_per_req"] = us_per_request(cpu, result)
    return result


def transport_of(address: str) -> str:
    """Table label: unix sockets skip the TCP stack, so they are reported apart."""
    return "unix" if address.startswith("unix://") else "tcp"


def run_modes(server: Subject, options: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every requested mode in turn against one server, progress on stderr."""
    results = []
    for mode in options.modes:
        print("prbench %s %s ..." % (mode, server.address), file=sys.stderr, flush=True)
        result = run_measured(server, mode, options)
        result["transport"] = transport_of(server.address)
        results.append(result)
    return results


def cell(fmt: str, value: Any) -> str:
    """One table cell; "-" for a value nobody measured (e.g. RSS of a foreign server)."""
    return fmt % ("-" if value is None else value)


def format_table(results: Sequence[Dict[str, Any]], columns: Columns = TABLE_COLUMNS) -> str:
    """A fixed-width table: one row per run, failures spelled out after the first two cells."""
    header = "  ".join(fmt % name.replace("duplicate_values", "duplicates")
                       for name, fmt in columns)
    rows = [header, "-" * len(header)]
    for result in results:
        if "failure" in result:
            label = "  ".join(cell(fmt, result.get(name, "?")) for name, fmt in columns[:2])
            rows.append("%s  FAILED: %s" % (label, result["failure"]))
        else:
            rows.append("  ".join(cell(fmt, result.get(name)) for name, fmt in columns))
    if any(r.get("peak_rss_scope") == "process" for r in results):
        rows.append("(peak_rss_mib: clear_refs was refused, so it is the peak since the "
                    "server started, not per run)")
    return "\n".join(rows)


def print_results(table: str, results: Sequence[Dict[str, Any]]) -> None:
    """The table, a blank line, then one JSON line per result (without run.py's ``ok``)."""
    print(table)
    print()
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "ok"}), flush=True)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--address and --server-pid, shared with sweep.py."""
    parser.add_argument("--address", default=None,
                        help="benchmark this running server instead of starting ours")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="with --address: the server's pid on this machine, to report "
                             "its peak RSS and CPU per request")


def check_server_arguments(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    """--server-pid only makes sense with --address, and must name a readable process."""
    if options.server_pid is None:
        return
    if not options.address:
        parser.error("--server-pid needs --address (a server we start is measured anyway)")
    if status_kib(options.server_pid, "VmHWM") is None:
        parser.error("--server-pid %d: no readable /proc/%d/status"
                     % (options.server_pid, options.server_pid))


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line; ``--modes`` is split and checked here."""
    parser = argparse.ArgumentParser(description="run prbench.py against the PR server")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help="comma-separated prbench modes (default %(default)s)")
    parser.add_argument("--clients", type=int, default=32)
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                        help="seconds per mode (default %(default)s)")
    amount.add_argument("--requests", type=int, default=None,
                        help="requests per client instead of --duration")
    parser.add_argument("--packages", type=int, default=None,
                        help="override prbench's per-mode default")
    parser.add_argument("--unix", action="store_true",
                        help="also benchmark a server on a unix:// socket")
    add_server_arguments(parser)
    options = parser.parse_args(argv)
    if options.unix and options.address:
        parser.error("--unix starts our own servers; it does not go with --address")
    check_server_arguments(parser, options)
    options.modes = [m.strip() for m in options.modes.split(",") if m.strip()]
    unknown = sorted(set(options.modes) - set(DEFAULT_MODES))
    if unknown or not options.modes:
        parser.error("unknown or no modes: %s (choose from %s)"
                     % (", ".join(unknown), ", ".join(DEFAULT_MODES)))
    if options.requests is not None:
        options.duration = None
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Benchmark a given server or our own (TCP, then optionally unix); 1 on any failure."""
    options = parse_arguments(argv)
    results: List[Dict[str, Any]] = []
    if options.address:
        results += run_modes(Subject(options.address, options.server_pid), options)
    else:
        for transport in ("tcp", "unix") if options.unix else ("tcp",):
            with spawned_server(transport) as server:
                results += run_modes(server, options)
    print_results(format_table(results), results)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
