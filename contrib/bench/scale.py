#!/usr/bin/env python3
"""scale: the server on a generated database of ten million rows.

    scale.py [--packages 10000] [--per-package 1000] [--huge 500000]
             [--db PATH] [--cache-size 64M] [--tree CHECKOUT] [--sample 2000]

The database (generated once at ``--db``, then reused) holds ``--packages``
packages of ``--per-package`` checksums each, plus one package of ``--huge``
checksums, written directly with sqlite3 in bitbake's schema.  Against one server
process (``CHECKOUT/bin/bitbake-prserv -F``, this checkout by default, so that an
older checkout can be measured on the same file), in this order:

1. start: seconds from starting the process to its "serving" line, the first time
   (an index this project adds is created then, once per file) and again;
2. cold: test-pr of one stored checksum in each of half of ``--sample`` packages
   never asked before, and get-pr of the checksum holding the maximum in the other
   half (answered without a write): p50/p99 of each;
3. huge: the first get-pr in the huge package (of the checksum holding its maximum:
   no write), while 8 other clients ask warm test-prs without pause: its latency,
   and the others' p99 and maximum from 0.2 s before it was sent to 0.5 s after
   its answer; then a get-pr of a new checksum there (a write, fsync'd);
4. new and warm: get-pr of a new checksum in the second half (a write each,
   fsync'd before the answer), then the first half's test-prs again: p50/p99;
5. memory: test-pr in every package (all ``--packages``), then the server's RSS
   and peak RSS (VmRSS, VmHWM);
6. export (with ``--export``): every row over the wire, read and counted, its
   seconds and the server's peak RSS after it.

Standard library only; one raw PRSERVICE client per connection (no prserv import).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from _client import Client
from _data import ARCH, checksum, get_pr, make_database, package, test_pr
from _measure import percentile_ms, status_mib
from _servers import ROOT, Server

HUGE = "huge-1.0-r0"


def start_server(tree: Path, db: str, cache_size: Optional[str]) -> Server:
    """The server of the checkout ``tree`` on ``db``, once it serves."""
    server = Server(tree, db, "server", *(["--cache-size", cache_size] if cache_size else []))
    server.wait_ready()
    return server


def cold(address: Tuple[str, int], args: argparse.Namespace, chosen: List[int]) -> Dict[str, float]:
    """test-pr in half the chosen packages, get-pr of each other's maximum holder (no write)."""
    client = Client(address)
    half = len(chosen) // 2
    cold_test = [client.ask(test_pr(package(p), checksum(p, 7)))[1] for p in chosen[:half]]
    last = args.per_package - 1                          # holds its package's maximum: no write
    cold_get = [client.ask(get_pr(package(p), checksum(p, last)))[1] for p in chosen[half:]]
    client.close()
    return {"cold_test_p50_ms": percentile_ms(cold_test, 0.5), "cold_test_p99_ms": percentile_ms(cold_test, 0.99),
            "cold_get_p50_ms": percentile_ms(cold_get, 0.5), "cold_get_p99_ms": percentile_ms(cold_get, 0.99)}


def new_and_warm(address: Tuple[str, int], chosen: List[int]) -> Dict[str, float]:
    """get-pr of a new checksum in half the chosen packages (a write each), then the
    first half's test-prs again (warm)."""
    client = Client(address)
    half = len(chosen) // 2
    tag = "%016x" % random.getrandbits(64)               # new in every run
    new_get = [client.ask(get_pr(package(p), "new-" + tag))[1] for p in chosen[half:]]
    warm_test = [client.ask(test_pr(package(p), checksum(p, 7)))[1] for p in chosen[:half]]
    client.close()
    return {"new_get_p50_ms": percentile_ms(new_get, 0.5), "new_get_p99_ms": percentile_ms(new_get, 0.99),
            "warm_test_p50_ms": percentile_ms(warm_test, 0.5), "warm_test_p99_ms": percentile_ms(warm_test, 0.99)}


def new_maximum_holder(db: str) -> Tuple[str, str]:
    """A new checksum holding the huge package's maximum, written by another connection
    (the server has not read the package yet): its first get-pr is answered without a
    write, whatever earlier runs added."""
    conn = sqlite3.connect(db)
    (top,) = conn.execute("SELECT max(CAST(value AS INTEGER)) FROM PRMAIN WHERE version = ? AND pkgarch = ?",
                          (HUGE, ARCH)).fetchone()
    holder = "top-%016x" % random.getrandbits(64)
    conn.execute("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", (HUGE, ARCH, holder, str(top + 1)))
    conn.commit()
    conn.close()
    return holder, str(top + 1)


def huge_first_touch(address: Tuple[str, int], warm: List[int], db: str) -> Dict[str, float]:
    stop_flag = threading.Event()
    samples: List[Tuple[float, float]] = []          # (sent at, latency)

    def background(seed: int) -> None:
        client = Client(address)
        rng = random.Random(seed)
        while not stop_flag.is_set():
            p = rng.choice(warm)
            sent = time.perf_counter()
            _, latency = client.ask(test_pr(package(p), checksum(p, 7)))
            samples.append((sent, latency))
        client.close()

    threads = [threading.Thread(target=background, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    first = Client(address)
    sent = time.perf_counter()
    holder, top = new_maximum_holder(db)
    sent = time.perf_counter()
    answer, latency = first.ask(get_pr(HUGE, holder))               # its maximum: no write
    time.sleep(0.5)
    written, write_latency = first.ask(get_pr(HUGE, "new-%016x" % random.getrandbits(64)))
    time.sleep(0.5)
    stop_flag.set()
    for thread in threads:
        thread.join()
    first.close()
    window = [lat for at, lat in samples if sent - 0.2 <= at <= sent + latency + 0.5]
    assert answer.get("value") == top, (answer, top)
    return {"huge_first_get_ms": round(latency * 1000, 3), "huge_answer": answer.get("value"),
            "others_p99_ms": percentile_ms(window, 0.99), "others_max_ms": percentile_ms(window, 1.0),
            "others_requests": len(window), "huge_new_get_ms": round(write_latency * 1000, 3),
            "huge_new_answer": written.get("value")}


def touch_everything(address: Tuple[str, int], packages: int, pid: int) -> Dict[str, float]:
    client = Client(address)
    started = time.monotonic()
    for p in range(packages):
        client.ask(test_pr(package(p), checksum(p, 3)))
    client.close()
    return {"touch_all_s": round(time.monotonic() - started, 1),
            "rss_mib": status_mib(pid, "VmRSS"), "peak_rss_mib": status_mib(pid, "VmHWM")}


def export_everything(address: Tuple[str, int], pid: int) -> Dict[str, float]:
    """A history export of the whole table, read and counted."""
    client = Client(address)
    _, size, seconds = client.count_export(True)
    client.close()
    return {"export_s": round(seconds, 1), "export_mib": round(size / 2**20, 1),
            "peak_rss_after_export_mib": status_mib(pid, "VmHWM")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=10000)
    parser.add_argument("--per-package", type=int, default=1000)
    parser.add_argument("--huge", type=int, default=500000)
    parser.add_argument("--db", default="/tmp/prserv-scale.sqlite3",
                        help="database file, generated if missing (default: %(default)s)")
    parser.add_argument("--cache-size", default=None, help="the server's --cache-size (default: its own)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose server runs")
    parser.add_argument("--sample", type=int, default=2000, help="packages asked cold (default: 2000)")
    parser.add_argument("--export", action="store_true", help="also export every row")
    args = parser.parse_args()

    result: Dict[str, object] = {"tree": str(args.tree), "packages": args.packages,
                                 "per_package": args.per_package, "huge": args.huge}
    if not os.path.exists(args.db):
        huge = ((HUGE, ARCH, checksum(999999, n), str(n)) for n in range(args.huge))
        result["generate_s"] = round(make_database(args.db, args.packages, args.per_package, huge), 1)
    rng = random.Random(1)
    chosen = rng.sample(range(args.packages), args.sample)
    server = start_server(args.tree, args.db, args.cache_size)
    result["first_start_s"] = round(server.ready_s, 2)
    server.stop()
    server = start_server(args.tree, args.db, args.cache_size)
    result["start_s"] = round(server.ready_s, 2)
    try:
        result.update(cold(server.address, args, chosen))
        result.update(huge_first_touch(server.address, chosen[:len(chosen) // 2], args.db))
        result.update(new_and_warm(server.address, chosen))
        result.update(touch_everything(server.address, args.packages, server.pid))
        if args.export:
            result.update(export_everything(server.address, server.pid))
    finally:
        server.stop()
    for name, value in result.items():
        print("%-20s %s" % (name, value))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
