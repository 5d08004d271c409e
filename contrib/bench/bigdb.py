#!/usr/bin/env python3
"""bigdb: this project's server on a database of a million rows.

    bigdb.py [--rows 1000000] [--per-package 100] [--import-rows 100000]

Measures, in this order, against one server process (``bin/bitbake-prserv -F``):

1. ready: from starting the process to its "serving" log line; then the time of
   a first get-pr (connect included; it loads one package of ``--per-package`` rows);
2. export: every row (``history: true``) and the per-package maxima (no history),
   read over the wire by a client that only counts; the server's peak RSS (VmHWM);
3. import: ``--import-rows`` new rows through the client CLI
   (``python3 -m prserv import-file``, pipelined import-one).

The database is written directly with sqlite3 in bitbake's schema (faster than a
million import-one).  Standard library only; the server and the CLI run from this
checkout's ``lib/``.  Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict

from _client import Client
from _data import ARCH, checksum, get_pr, import_file, make_database, package
from _measure import status_mib
from _servers import ROOT, Server


def packages_of(rows: int, per_package: int) -> int:
    """The packages of ``per_package`` rows that make about ``rows`` rows (at least one)."""
    return max(1, rows // per_package)


def start_server(db: str) -> Server:
    """This checkout's server on ``db`` at its default log level, once it serves."""
    server = Server(ROOT, db, "server", loglevel=None)
    server.wait_ready()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--import-rows", type=int, default=100_000)
    options = parser.parse_args()
    packages = packages_of(options.rows, options.per_package)
    results: Dict[str, object] = {"rows": packages * options.per_package, "per_package": options.per_package}
    with tempfile.TemporaryDirectory(prefix="prbench-big-") as workdir:
        db = os.path.join(workdir, "prserv.sqlite3")
        results["create_s"] = round(make_database(db, packages, options.per_package), 2)
        results["db_mib"] = round(os.path.getsize(db) / 2**20, 1)
        server = start_server(db)
        try:
            results["ready_s"] = round(server.ready_s, 3)
            asked = time.monotonic()
            client = Client(server.address)
            answer, _ = client.ask(get_pr(package(123 % packages), checksum(123 % packages, 7), history=True))
            results["first_get_pr_ms"] = round((time.monotonic() - asked) * 1000, 1)
            if answer != {"value": "7"}:
                raise RuntimeError("unexpected first answer %r" % answer)
            results["rss_idle_mib"] = status_mib(server.pid, "VmHWM")
            for history in (True, False):
                rows, size, seconds = client.count_export(history)
                name = "export_history" if history else "export_max"
                results[name + "_rows"] = rows
                results[name + "_mib"] = round(size / 2**20, 1)
                results[name + "_s"] = round(seconds, 2)
            client.close()
            results["rss_peak_after_exports_mib"] = status_mib(server.pid, "VmHWM")
            results["import_rows"] = options.import_rows
            imports = (("imp%05d-1.0-r0" % (i // 100), ARCH, "%064x" % i, str(i % 100))
                       for i in range(options.import_rows))
            results["import_s"] = round(import_file(server.wait_serving(), imports,
                                                    os.path.join(workdir, "import.conf")), 2)
            results["rss_peak_mib"] = status_mib(server.pid, "VmHWM")
        finally:
            server.stop()
    for key, value in results.items():
        print("%-28s %s" % (key, value))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
