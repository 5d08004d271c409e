#!/usr/bin/env python3
"""Sweep revisions per package: what an allocation costs on a package with a long history.

    sweep.py [--revisions 1,10,100,1000,10000] [--clients 32] [--requests 100]
             [--address ADDR [--server-pid PID]] [--plot FILE.png]

For every N in ``--revisions``: store N revisions of one package (imported over the
wire with pipelined ``import-one`` requests), then run the "grown" load on it:
prbench.py ``new`` mode with every client on that one package, so every request
allocates the package's next value.  One table row and one JSON line per N.

Without ``--address`` every point gets a fresh server and database of this project
(run.py's ``spawned_server``), package ``big-1.0-r0``, so the points are independent.
With ``--address`` all points go to that server, each on its own package
``big-<run id>-<N>-1.0-r0``.  Server peak RSS and CPU per request are measured as in
run.py: when we started the server, or with ``--server-pid``.

Like prbench.py this speaks the protocol itself and does not import ``prserv``.
``--plot`` needs matplotlib, an optional extra: ``pip install 'prserv[bench]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from _client import SETUP
from prbench import BenchError, open_blocking, parse_address, read_line, reply_value
from run import (Subject, add_server_arguments, check_server_arguments, format_table,
                 print_results, run_measured, spawned_server)

DEFAULT_REVISIONS = (1, 10, 100, 1000, 10000)
DEFAULT_REQUESTS = 100         # per client: 32 x 100 = 3200 allocations on top of N
PKGARCH = "core2-64"
IMPORT_BATCH = 500             # import-one requests in flight on the one connection
SWEEP_COLUMNS = (("revisions", "%9s"), ("requests", "%8s"), ("seconds", "%7s"),
                 ("rps", "%8s"), ("p50_ms", "%8s"), ("p99_ms", "%8s"),
                 ("peak_rss_mib", "%12s"), ("cpu_us_per_req", "%14s"), ("errors", "%6s"),
                 ("duplicate_values", "%10s"))
PLOT_NEEDS = "--plot needs matplotlib: pip install 'prserv[bench]'"


# --------------------------------------------------------------------------- preparation

def import_request(package: str, checksum: str, value: str) -> bytes:
    """One import-one line, formatted as bitbake's client formats it (json.dumps)."""
    message = {"import-one": {"version": package, "pkgarch": PKGARCH, "checksum": checksum,
                              "value": value}}
    return (json.dumps(message) + "\n").encode()


def import_revisions(address: str, package: str, revisions: int, run_id: str) -> float:
    """Store values 0 .. N-1 of ``package``, each under its own checksum; returns seconds.

    The requests are pipelined in batches on one connection: one round trip per
    batch instead of per revision keeps 10,000 imports to about a second.  A batch
    is bounded so that the server's replies never fill the socket buffers while
    we are still writing.  A reply other than the value sent (e.g. ``null`` from
    a read-only server) fails the point.
    """
    started = time.perf_counter()
    with open_blocking(parse_address(address)) as sock:
        sock.sendall(SETUP)
        buffer = bytearray()
        for first in range(0, revisions, IMPORT_BATCH):
            batch = range(first, min(first + IMPORT_BATCH, revisions))
            sock.sendall(b"".join(import_request(package, "%s-old-%d" % (run_id, i), str(i))
                                  for i in batch))
            for i in batch:
                line = read_line(sock, buffer)
                if reply_value(line) != str(i):
                    raise BenchError("import-one of %s value %d answered %r"
                                     % (package, i, line[:200]))
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the sweep

def sweep_point(server: Subject, revisions: int, package: str, run_id: str,
                options: argparse.Namespace) -> Dict[str, Any]:
    """Prepare ``package`` with N revisions, then time prbench ``new`` on it alone.

    Peak RSS is reset after the import (run_measured), so it is the load's peak.
    """
    point: Dict[str, Any] = {"revisions": revisions, "package": package}
    print("sweep: %d revisions of %s on %s ..." % (revisions, package, server.address),
          file=sys.stderr, flush=True)
    try:
        point["import_seconds"] = round(import_revisions(server.address, package, revisions,
                                                         run_id), 3)
    except (BenchError, OSError) as exc:
        point.update(ok=False, failure="import: %s" % exc)
        return point
    point.update(run_measured(server, "new", options,
                              ["--package", package, "--pkgarch", PKGARCH]))
    return point


def run_sweep(options: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every point in turn: each on a fresh server of ours, or its own package on --address."""
    run_id = os.urandom(4).hex()
    results = []
    for revisions in options.revisions:
        if options.address:
            server = Subject(options.address, options.server_pid)
            package = "big-%s-%d-1.0-r0" % (run_id, revisions)
            results.append(sweep_point(server, revisions, package, run_id, options))
        else:
            with spawned_server("tcp") as server:
                results.append(sweep_point(server, revisions, "big-1.0-r0", run_id, options))
    return results


# --------------------------------------------------------------------------- plot

def write_plot(results: Sequence[Dict[str, Any]], path: str) -> None:
    """rps and server CPU per request versus revisions (log x), one panel each.

    The CPU panel is left out when no point has a CPU figure (foreign server
    without --server-pid).  matplotlib is imported here: it is an optional extra.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if "failure" not in r]
    with_cpu = [r for r in done if r.get("cpu_us_per_req") is not None]
    panels = [("requests/s", done, "rps")]
    if with_cpu:
        panels.append(("server CPU µs / request", with_cpu, "cpu_us_per_req"))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (label, points, key) in zip(axes[0], panels):
        values = [p[key] for p in points]
        axis.plot([p["revisions"] for p in points], values, marker="o")
        axis.set_xscale("log")
        axis.set_xlabel("revisions stored in the package before the load")
        axis.set_ylabel(label)
        axis.set_ylim(0, max(values, default=1) * 1.15 or 1)   # from 0: a flat curve looks flat
        axis.grid(True, which="both", alpha=0.3)
    clients = done[0]["clients"] if done else "?"
    figure.suptitle("get-pr allocations on one package (prbench new, %s clients)" % clients)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def matplotlib_missing() -> bool:
    """Checked before the sweep, so a missing extra costs no sweep run (looked up,
    not imported: ``write_plot`` imports it once the sweep is done)."""
    return importlib.util.find_spec("matplotlib") is None


# --------------------------------------------------------------------------- main

def parse_revisions(text: str) -> List[int]:
    """``1,100,10000`` -> [1, 100, 10000].  At least 1 each: the plot's x axis is log."""
    try:
        revisions = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        revisions = []
    if not revisions or min(revisions) < 1:
        raise argparse.ArgumentTypeError("expected integers >= 1 separated by commas, got %r"
                                         % text)
    return revisions


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line; also sets what run.py's prbench_command expects."""
    parser = argparse.ArgumentParser(
        description="sweep revisions per package under prbench's new mode on one package")
    parser.add_argument("--revisions", type=parse_revisions,
                        default=list(DEFAULT_REVISIONS), metavar="N,N,...",
                        help="revisions stored before each point's load (default %s)"
                             % ",".join(map(str, DEFAULT_REVISIONS)))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help="allocations per client per point (default %(default)s)")
    add_server_arguments(parser)
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="also write rps and CPU/request versus revisions (matplotlib)")
    # run.prbench_command / run_prbench read these; a sweep point is a fixed amount of work.
    parser.set_defaults(duration=None, packages=None)
    options = parser.parse_args(argv)
    if options.clients < 1 or options.requests < 1:
        parser.error("--clients and --requests must be >= 1")
    check_server_arguments(parser, options)
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Sweep, print the table and JSON lines, plot if asked; 1 if any point failed."""
    options = parse_arguments(argv)
    if options.plot and matplotlib_missing():
        sys.exit(PLOT_NEEDS)
    results = run_sweep(options)
    print_results(format_table(results, SWEEP_COLUMNS), results)
    if options.plot:
        write_plot(results, options.plot)
        print("plot written to %s" % options.plot, file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
