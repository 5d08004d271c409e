#!/usr/bin/env python3
"""Benchmark this project's PR server with prbench.py, one mode after another.

    run.py [--modes new,hit,mixed,conn] [--clients 32] [--duration 3 | --requests N]
           [--packages N] [--unix] [--address ADDR]

Without ``--address`` it starts our server (``prserv.create_server``) in a child
process on 127.0.0.1:0 with a fresh SQLite file in a temporary directory, and with
``--unix`` a second one on ``unix://<tmpdir>/prserv.sock``; each transport's modes
run in turn against that one server.  ``--address`` benchmarks an already running
server (ours, bitbake's, any PRSERVICE 1.0 server) instead.

prbench.py runs as a separate process, so the load generator and the server never
share an interpreter (or its GIL).  Prints a table, then prbench's JSON lines.
Exit status 1 if any run failed, had errors or handed out duplicate values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO_LIB = HERE.parent.parent / "lib"
PRBENCH = HERE / "prbench.py"
DEFAULT_MODES = ("new", "hit", "mixed", "conn")
DEFAULT_DURATION_S = 3.0
SUBPROCESS_GRACE_S = 120       # priming, connection set-up and a silent server's 60 s
TABLE_COLUMNS = (("transport", "%-9s"), ("mode", "%-6s"), ("clients", "%7s"),
                 ("requests", "%9s"), ("seconds", "%8s"), ("rps", "%9s"),
                 ("p50_ms", "%8s"), ("p99_ms", "%8s"), ("errors", "%6s"),
                 ("duplicate_values", "%16s"))


@contextlib.contextmanager
def spawned_server(transport: str) -> Iterator[str]:
    """Our server in a child process with a fresh database; yields its address.

    ``prserv`` is imported here, not at the top, so that ``--address`` works from
    a checkout whose ``lib/`` does not import (e.g. to measure another server).
    """
    if str(REPO_LIB) not in sys.path:
        sys.path.insert(0, str(REPO_LIB))
    import prserv

    with tempfile.TemporaryDirectory(prefix="prbench-") as tmp:
        address = "127.0.0.1:0" if transport == "tcp" else "unix://%s/prserv.sock" % tmp
        server = prserv.create_server(address, os.path.join(tmp, "prserv.sqlite3"))
        server.serve_as_process()
        try:
            yield server.address
        finally:
            server.process.terminate()
            server.process.join()


def prbench_command(address: str, mode: str, options: argparse.Namespace) -> List[str]:
    """The prbench.py command line for one mode."""
    command = [sys.executable, str(PRBENCH), address, "--mode", mode,
               "--clients", str(options.clients)]
    if options.requests is not None:
        command += ["--requests", str(options.requests)]
    else:
        command += ["--duration", str(options.duration)]
    if options.packages is not None:
        command += ["--packages", str(options.packages)]
    return command


def run_prbench(address: str, mode: str, options: argparse.Namespace) -> Dict[str, Any]:
    """Run one mode; the result dict gets ``ok`` and, on failure, ``failure``."""
    limit = (options.duration or 60) + SUBPROCESS_GRACE_S
    try:
        done = subprocess.run(prbench_command(address, mode, options), capture_output=True,
                              text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "ok": False, "failure": "timed out after %d s" % limit}
    sys.stderr.write(done.stderr)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 1 or not lines:
        return {"mode": mode, "ok": False,
                "failure": done.stderr.strip() or "exit status %d" % done.returncode}
    result = json.loads(lines[-1])
    result["ok"] = done.returncode == 0
    return result


def transport_of(address: str) -> str:
    """Table label: unix sockets skip the TCP stack, so they are reported apart."""
    return "unix" if address.startswith("unix://") else "tcp"


def run_modes(address: str, options: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every requested mode in turn against one server, progress on stderr."""
    results = []
    for mode in options.modes:
        print("prbench %s %s ..." % (mode, address), file=sys.stderr, flush=True)
        result = run_prbench(address, mode, options)
        result["transport"] = transport_of(address)
        results.append(result)
    return results


def format_table(results: Sequence[Dict[str, Any]]) -> str:
    """A fixed-width table: one row per run, failures spelled out."""
    header = "  ".join(fmt % name.replace("duplicate_values", "duplicates")
                       for name, fmt in TABLE_COLUMNS)
    rows = [header, "-" * len(header)]
    for result in results:
        if "failure" in result:
            rows.append("%-9s  %-6s  FAILED: %s" % (result.get("transport", "?"), result["mode"],
                                                  result["failure"]))
        else:
            rows.append("  ".join(fmt % result.get(name, "") for name, fmt in TABLE_COLUMNS))
    return "\n".join(rows)


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
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--unix", action="store_true",
                       help="also benchmark a server on a unix:// socket")
    where.add_argument("--address", default=None,
                       help="benchmark this running server instead of starting ours")
    options = parser.parse_args(argv)
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
        results += run_modes(options.address, options)
    else:
        for transport in ("tcp", "unix") if options.unix else ("tcp",):
            with spawned_server(transport) as address:
                results += run_modes(address, options)
    print(format_table(results))
    print()
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "ok"}))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
