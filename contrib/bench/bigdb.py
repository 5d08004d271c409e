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
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

ROOT = Path(__file__).resolve().parents[2]
SETUP = b"PRSERVICE 1.0\nneeds-headers: false\n\n"
REFERENCE_DDL = ("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
                 "checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
READY_TIMEOUT_S = 60.0


def make_database(path: str, rows: int, per_package: int) -> None:
    """``rows`` rows: packages of ``per_package`` checksums with values 0, 1, ..."""
    def generate() -> Iterator[Tuple[str, str, str, str]]:
        for i in range(rows):
            package, n = divmod(i, per_package)
            yield ("big%06d-1.0-r0" % package, "core2-64", "%064x" % i, str(n))

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(REFERENCE_DDL)
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", generate())
    conn.commit()
    conn.close()


def peak_rss_mib(pid: int) -> float:
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM for pid %d" % pid)


def start_server(db: str, log: str) -> Tuple[subprocess.Popen, str, float]:
    """Start the server; return it, its address and the seconds until it served."""
    started = time.monotonic()
    with open(log, "w") as log_file:
        process = subprocess.Popen([sys.executable, str(ROOT / "bin" / "bitbake-prserv"), "-F",
                                    "-f", db, "--bind", "127.0.0.1:0"], stderr=log_file)
    while time.monotonic() - started < READY_TIMEOUT_S:
        with open(log) as log_file:
            for line in log_file:
                if " serving " in line:
                    address = line.rsplit(" on ", 1)[1].split()[0].rstrip(",")
                    return process, address, time.monotonic() - started
        if process.poll() is not None:
            raise RuntimeError("server exited: %s" % Path(log).read_text())
        time.sleep(0.01)
    raise RuntimeError("server not ready after %g s" % READY_TIMEOUT_S)


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(SETUP)
    return sock


def request_line(sock: socket.socket, message: dict) -> dict:
    sock.sendall(json.dumps(message).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(65536)
    return json.loads(data)


def count_export(address: str, history: bool) -> Tuple[int, int, float]:
    """(rows, bytes, seconds) of one export; the answer is counted, never parsed whole."""
    sock = connect(address)
    started = time.monotonic()
    sock.sendall(json.dumps({"export": {"version": None, "pkgarch": None, "checksum": None,
                                        "colinfo": False, "history": history}}).encode() + b"\n")
    total, rows, tail = 0, 0, b""
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise RuntimeError("server closed during the export")
        total += len(data)
        if data.endswith(b"\n\n") or (total < 32767 and data.endswith(b"\n")):
            done = True
        else:
            done = False
        window = tail + data.replace(b"\n", b"")     # chunk lines may cut a row anywhere
        rows += window.count(b'{"version": ') - tail.count(b'{"version": ')
        tail = window[-16:]
        if done:
            break
    seconds = time.monotonic() - started
    sock.close()
    return rows, total, seconds


def cli_import(address: str, rows: int, workdir: str) -> float:
    """Seconds for ``prserv import-file`` of ``rows`` new rows (OE's text format)."""
    path = os.path.join(workdir, "import.conf")
    with open(path, "w") as out:
        for i in range(rows):
            out.write('PRAUTO$imp%05d-1.0-r0$core2-64$%064x = "%d"\n' % (i // 100, i, i % 100))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "prserv", "--server", address, "import-file", path],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--import-rows", type=int, default=100_000)
    options = parser.parse_args()
    results: Dict[str, object] = {"rows": options.rows, "per_package": options.per_package}
    with tempfile.TemporaryDirectory(prefix="prbench-big-") as workdir:
        db = os.path.join(workdir, "prserv.sqlite3")
        started = time.monotonic()
        make_database(db, options.rows, options.per_package)
        results["create_s"] = round(time.monotonic() - started, 2)
        results["db_mib"] = round(os.path.getsize(db) / 2**20, 1)
        process, address, ready = start_server(db, os.path.join(workdir, "server.log"))
        try:
            results["ready_s"] = round(ready, 3)
            asked = time.monotonic()
            sock = connect(address)
            answer = request_line(sock, {"get-pr": {"version": "big000123-1.0-r0", "pkgarch": "core2-64",
                                                    "checksum": "%064x" % (123 * options.per_package + 7),
                                                    "history": True}})
            results["first_get_pr_ms"] = round((time.monotonic() - asked) * 1000, 1)
            if answer != {"value": "7"}:
                raise RuntimeError("unexpected first answer %r" % answer)
            sock.close()
            results["rss_idle_mib"] = round(peak_rss_mib(process.pid), 1)
            for history in (True, False):
                rows, size, seconds = count_export(address, history)
                name = "export_history" if history else "export_max"
                results[name + "_rows"] = rows
                results[name + "_mib"] = round(size / 2**20, 1)
                results[name + "_s"] = round(seconds, 2)
            results["rss_peak_after_exports_mib"] = round(peak_rss_mib(process.pid), 1)
            results["import_rows"] = options.import_rows
            results["import_s"] = round(cli_import(address, options.import_rows, workdir), 2)
            results["rss_peak_mib"] = round(peak_rss_mib(process.pid), 1)
        finally:
            process.terminate()
            process.wait()
    for key, value in results.items():
        print("%-28s %s" % (key, value))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
