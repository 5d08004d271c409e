#!/usr/bin/env python3
"""floor: server CPU per request against a server that answers a constant.

    floor.py [--modes conn,hit] [--rounds 5] [--requests 300] [--clients 8]
             [--loops asyncio,uvloop] [--baseline CHECKOUT] [--loadgen PRLOAD.py [--loadgen-args ...]]

Configurations, each in turn once per round (interleaved: the machine's noise falls
on all of them alike; the order rotates from round to round, so that no configuration
always runs first), each run on a fresh server process and a fresh SQLite file:

* ``noop-<loop>``: ``noop_server.py`` (beside this script): setup lines, then a
  constant answer per request line; the floor of a Python server on that loop;
* ``prserv-<loop>``: this tree's ``bin/bitbake-prserv -F`` at the default log level
  (INFO: one line per connection), ``--event-loop <loop>``;
* ``baseline``: ``CHECKOUT/bin/bitbake-prserv -F`` (a tree to compare with), if given.

Every run is one load generator process (``prbench.py`` by default) with ``--mode``
as listed; ``conn`` is one connection per request (OpenEmbedded's packaging tasks),
``hit`` one connection per client.  With ``taskset`` on PATH the server runs on CPU
0 and the load on CPU 1.  The server's CPU time comes from
``/proc/<pid>/task/*/schedstat`` read just before and after the load.  Prints each
run, then per mode the medians and each configuration's ratio to the no-op server on
the same loop (the targets: conn and hit within 1.2x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import _load
from _measure import cpu_seconds, cpu_used, us_per_request
from _servers import ROOT, ServerProcess, pinned, server_command

HERE = Path(__file__).resolve().parent


def command_of(config: str, args: argparse.Namespace, db: str) -> List[str]:
    kind, _, loop = config.partition("-")
    if kind == "noop":
        return [sys.executable, str(HERE / "noop_server.py")] + (["--uvloop"] if loop == "uvloop" else [])
    tree = args.baseline if kind == "baseline" else ROOT
    return server_command(tree, db, *(["--event-loop", loop] if loop else []), loglevel=None)


def rotated(configs: List[str], n: int) -> List[str]:
    """Round ``n``'s order: each configuration takes each place in turn (a run right
    after another server's measured ~10% cheaper here, whichever server it was)."""
    shift = n % len(configs)
    return configs[shift:] + configs[:shift]


def one_run(config: str, mode: str, args: argparse.Namespace, work: str, n: int) -> Dict[str, object]:
    db = os.path.join(work, "%s-%s-%d.sqlite3" % (config, mode, n))
    server = ServerProcess(pinned(0, command_of(config, args, db)), config)
    try:
        address = server.wait_serving()
        before = cpu_seconds(server.pid)
        load = _load.command(address, mode, "--clients", str(args.clients), "--requests", str(args.requests),
                             "--prefix", "floor", *args.loadgen_args.split(), loadgen=args.loadgen)
        done = _load.run_generator(pinned(1, load), 600)
        cpu = cpu_used(before, cpu_seconds(server.pid))
    finally:
        server.stop()
    return {"config": config, "mode": mode, "round": n, "rps": float(done.result["rps"]),
            "p99_ms": done.result["p99_ms"], "errors": done.result["errors"],
            "server_us_per_req": us_per_request(cpu, done.result)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="conn,hit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="per client")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--no-noop", action="store_true", help="leave the no-op server out")
    parser.add_argument("--loadgen", type=Path, default=_load.PRBENCH)
    parser.add_argument("--loadgen-args", default="")
    args = parser.parse_args()
    loops = [loop for loop in args.loops.split(",") if loop]
    configs = ([] if args.no_noop else ["noop-%s" % loop for loop in loops]) + \
        ["prserv-%s" % loop for loop in loops] + (["baseline"] if args.baseline else [])
    modes = args.modes.split(",")
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="prserv-floor-") as work:
        for n in range(args.rounds):
            for mode in modes:
                for config in rotated(configs, n):
                    row = one_run(config, mode, args, work, n)
                    rows.append(row)
                    print("%-14s %-5s round %d %8.0f rps  p99 %6.2f ms  server %6.1f us/req  errors %s" % (
                        config, mode, n, row["rps"], row["p99_ms"], row["server_us_per_req"], row["errors"]),
                        flush=True)
    print()
    medians: Dict[Tuple[str, str], float] = {}
    for mode in modes:
        for config in configs:
            values = [float(r["server_us_per_req"]) for r in rows if r["config"] == config and r["mode"] == mode]
            medians[(config, mode)] = statistics.median(values)
        for config in configs:
            _, _, loop = config.partition("-")
            floor = medians.get(("noop-%s" % loop, mode)) if loop else None
            print("%-5s %-14s median %6.1f us/request%s" % (
                mode, config, medians[(config, mode)],
                "  (%.2fx the no-op server on %s)" % (medians[(config, mode)] / floor, loop) if floor else ""))
    print(json.dumps({"medians_us_per_request": {"%s %s" % key: value for key, value in medians.items()},
                      "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
