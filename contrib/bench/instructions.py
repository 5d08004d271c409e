#!/usr/bin/env python3
"""instructions: what one request costs the server in instructions (callgrind), per checkout.

    instructions.py [--modes new,hit] [--requests 800] [--clients 8] [--loop asyncio] TREE [TREE ...]

CPU time swings between sittings on a shared machine (one tree's ``new`` measured
from 45 to 55 µs of server CPU per request on different runs of ``floor.py``);
instructions counted by ``valgrind --tool=callgrind`` do not depend on what else
the machine does, so trees compare across sittings.  Each TREE's ``bin/bitbake-prserv
-F`` runs under callgrind twice per mode, on a fresh SQLite file each time, with
``prbench.py`` sending N and then 2N requests (``--requests`` per client); the
difference of the two totals divided by N is the count per request (start-up and
shutdown cancel out).  ``--loop`` is set through ``PRSERV_EVENT_LOOP`` (a tree older
than that setting runs asyncio anyway).  Counts still move by a few percent between
runs: how many answers share a commit depends on timing; compare differences larger
than that, or repeat.  Prints one line per tree and mode, and a
JSON line.  Needs valgrind on PATH; slow (a run takes tens of seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import _load
from _servers import ServerProcess, server_command

_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def instructions(tree: Path, mode: str, requests: int, clients: int, work: str, name: str) -> int:
    """Instructions of one whole server process that answered ``clients`` x
    ``requests`` get-pr of ``mode``."""
    out = os.path.join(work, name + ".callgrind")
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + server_command(
        tree, os.path.join(work, name + ".sqlite3"))
    server = ServerProcess(command, name)
    try:
        address = server.wait_serving()
        if requests:
            _load.run_generator(_load.command(address, mode, "--clients", str(clients), "--requests",
                                              str(requests), "--prefix", name), 1800)
    finally:
        server.stop()
    with open(out, encoding="utf-8") as data:
        match = _TOTALS.search(data.read())
    if match is None:
        raise RuntimeError("no instruction total in %s" % out)
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts to measure")
    parser.add_argument("--modes", default="new,hit")
    parser.add_argument("--requests", type=int, default=800, help="per client, for N")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--loop", default="asyncio", help="PRSERV_EVENT_LOOP for the servers")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not on PATH", file=sys.stderr)
        return 1
    os.environ["PRSERV_EVENT_LOOP"] = args.loop
    os.environ["PYTHONHASHSEED"] = "0"          # the same dict layouts in every run
    found: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="prserv-instructions-") as work:
        for n, tree in enumerate(args.trees):
            for mode in args.modes.split(","):
                names: List[str] = ["t%d-%s-%d" % (n, mode, k) for k in (1, 2)]
                once = instructions(tree, mode, args.requests, args.clients, work, names[0])
                twice = instructions(tree, mode, 2 * args.requests, args.clients, work, names[1])
                per_request = (twice - once) / float(args.requests * args.clients)
                found["%s %s" % (tree, mode)] = per_request
                print("%-40s %-5s %10.0f instructions per request" % (tree, mode, per_request), flush=True)
    print(json.dumps({"instructions_per_request": found}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
