#!/usr/bin/env python3
"""observe: what counting requests (get-stats) and exporting metrics cost per request.

    observe.py [--baseline CHECKOUT] [--rounds 5] [--mode hit] [--clients 32] [--requests 150]
               [--scrape-interval 1] [--loadgen PRLOAD.py [--loadgen-args '--tag T --prime']]

Configurations, run in interleaved rounds (each round runs every configuration once,
in turn, so that the machine's noise falls on all of them alike):

* ``baseline``: ``CHECKOUT/bin/bitbake-prserv`` (a tree from before the request
  figures existed; ``git worktree add /tmp/base <commit>``), if ``--baseline``;
* ``stats``: this tree's server (it always counts requests for ``get-stats``);
* ``metrics``: this tree's server with ``--metrics 127.0.0.1:0``, scraped over HTTP
  every ``--scrape-interval`` seconds during the run (Prometheus scrapes every 15 s
  by default: this is harsher).

Each run is one ``prbench.py`` (the wire-protocol load generator beside this script)
against a fresh server on a fresh SQLite file; the server's CPU time is read from
``/proc/<pid>/task/*/schedstat`` just before and after the load (priming included
in the request count).  Prints each run, then the medians per configuration and the
differences in µs of server CPU per request.  Standard library only; ``--metrics``
needs ``prometheus_client`` in the interpreter running the servers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import _load
from _measure import cpu_seconds, cpu_used, us_per_request
from _servers import ROOT, Server, stop_all


class Scraper(threading.Thread):
    """GETs ``url`` every ``interval`` seconds until stopped; counts the scrapes."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stopped = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with urllib.request.urlopen(self.url, timeout=10) as answer:
                answer.read()
            self.scrapes += 1


def one_run(config: str, tree: Path, args: argparse.Namespace, work: str, n: int) -> Dict[str, object]:
    flags = ["--loglevel", "INFO"] + (["--metrics", "127.0.0.1:0"] if config == "metrics" else [])
    server = Server(tree, os.path.join(work, "%s-%d.sqlite3" % (config, n)), config, *flags)
    try:
        address = server.wait_serving()
        scraper = None
        if config == "metrics":
            url = _metrics_url(server)
            scraper = Scraper(url, args.scrape_interval)
            scraper.start()
        before = cpu_seconds(server.pid)
        load = _load.command(address, args.mode, "--clients", str(args.clients), "--requests", str(args.requests),
                             "--prefix", "obs", *args.loadgen_args.split(), loadgen=args.loadgen)
        done = _load.run_generator(load, 600)
        cpu = cpu_used(before, cpu_seconds(server.pid))
        if scraper is not None:
            scraper.stopped.set()
            scraper.join()
        return {"config": config, "round": n, "rps": float(done.result["rps"]), "p99_ms": done.result["p99_ms"],
                "errors": done.result["errors"], "server_us_per_req": us_per_request(cpu, done.result),
                "scrapes": scraper.scrapes if scraper is not None else 0}
    finally:
        server.stop()


def _metrics_url(server: Server, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.tail):
            match = re.search(r"Prometheus metrics on (http://\S+)", line)
            if match:
                return match.group(1)
        time.sleep(0.05)
    raise RuntimeError("the server did not log its metrics address: %s" % list(server.tail))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout from before the request figures")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", default="hit")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=150, help="per client")
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--loadgen", type=Path, default=_load.PRBENCH,
                        help="a load generator with prbench.py's command line (default: prbench.py)")
    parser.add_argument("--loadgen-args", default="",
                        help="more arguments for it, e.g. '--tag T --prime' for one that primes")
    args = parser.parse_args()
    configs = (["baseline"] if args.baseline else []) + ["stats", "metrics"]
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="prserv-observe-") as work:
        try:
            for n in range(args.rounds):
                for config in configs:
                    tree = args.baseline if config == "baseline" else ROOT
                    row = one_run(config, tree, args, work, n)
                    rows.append(row)
                    print("%-8s round %d  %8.0f rps  p99 %6.2f ms  server %6.1f us/req  scrapes %d  errors %s" % (
                        config, n, row["rps"], row["p99_ms"], row["server_us_per_req"], row["scrapes"],
                        row["errors"]), flush=True)
        finally:
            stop_all()
    medians = {config: statistics.median(float(r["server_us_per_req"]) for r in rows if r["config"] == config)
               for config in configs}
    print()
    for config in configs:
        print("%-8s median server CPU %6.1f us/request" % (config, medians[config]))
    reference: Optional[str] = "baseline" if args.baseline else None
    if reference:
        print("stats - baseline:   %+.1f us/request" % (medians["stats"] - medians["baseline"]))
        print("metrics - baseline: %+.1f us/request" % (medians["metrics"] - medians["baseline"]))
    print("metrics - stats:    %+.1f us/request" % (medians["metrics"] - medians["stats"]))
    print(json.dumps({"medians_us_per_request": medians, "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
