#!/usr/bin/env python3
"""backupbench: ``prserv backup`` of a million-row database under a get-pr load.

    backupbench.py [--rows 1000000] [--clients 32] [--mode hit|mixed|new] [--rate RPS]
                   [--baseline 5] [--priority idle|low|normal] [--runs 1] [--method backup|dump|spin]

1. writes a database of ``--rows`` rows (``_data.make_database``) and starts
   ``bin/bitbake-prserv -F`` on it as ``bigdb.py`` does (immediate sync mode, the default);
2. runs ``--clients`` persistent get-pr clients (``prbench.py``'s workload and
   connection code, in this process) for the whole measurement, timing every
   request: back to back (as prbench.py does: the most the server can do), or
   with ``--rate`` at that many requests per second in all, each client on a
   fixed schedule (a request late for its slot is timed from the slot, so queueing
   behind a stall counts);
3. after a warm-up second and ``--baseline`` seconds, runs
   ``python -m prserv backup DB OUT --json`` (this checkout's ``lib/``) as a
   separate process while the load goes on, and keeps the load running until
   that process has exited.  A small launcher process, started before the load,
   starts it: a fork of this process would stall the load's event loop for
   milliseconds (its page tables hold every sample) and be timed as latency.

Reported per run: the backup's own time (``VACUUM INTO``), the wall time of the
whole command (which also runs ``PRAGMA integrity_check`` and counts rows on the
copy), the get-pr p99 of the requests sent in the baseline window and of those
sent while the backup process ran, their ratio, and the size of the server's
``-wal`` file afterwards (it keeps the largest size it reached since the log last
started over; the copy's read transaction holds checkpoints back while the load
writes).  ``--priority`` is passed
to ``prserv backup`` (default ``idle``, the command's own default) and applied
to the ``spin`` control the same way.  Standard library only.  Prints a table and
one JSON line per run.

``--method`` replaces the backup by something else in the same place:
``dump`` runs ``prserv dump --server ADDR -`` (the server's own dump, read and
discarded; not checked), ``spin`` a process that only keeps one core busy for
1.5 s (a control: what any CPU-bound neighbour costs the load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import bigdb
import prbench
from _data import ARCH, make_database
from _measure import percentile_ms
from _servers import ROOT

WARM_UP_S = 1.0
Sample = Tuple[float, float]
"""(send time, latency) of one get-pr, in ``time.perf_counter`` seconds."""


class Load:
    """``clients`` persistent connections asking get-pr back to back until stopped."""

    def __init__(self, address: str, mode: str, clients: int, rate: float = 0.0) -> None:
        self.target = prbench.parse_address(address)
        packages = prbench.DEFAULT_PACKAGES[mode]
        self.workload = prbench.Workload(mode, packages, "bb", ARCH, False, os.urandom(6).hex())
        self.clients = clients
        self.interval = clients / rate if rate else 0.0
        """Seconds between the request slots of one client (0: back to back)."""
        self.samples: List[Sample] = []
        self.errors = 0
        self._stop = False
        self._task: Optional[asyncio.Future] = None

    async def start(self) -> None:
        if self.workload.mode in prbench.PRIMED_MODES:
            await asyncio.to_thread(prbench.prime, self.target, self.workload, self.clients)
        connections = await asyncio.gather(*(prbench.open_persistent(self.target) for _ in range(self.clients)))
        self._task = asyncio.gather(*(self._client(c, conn) for c, conn in enumerate(connections)))

    async def _client(self, client: int, connection: prbench.ReplyProtocol) -> None:
        i = 0
        slot = time.perf_counter() + self.interval * client / self.clients
        try:
            while not self._stop:
                _, _, request = self.workload.next_request(client, i)
                sent = time.perf_counter()
                if self.interval:
                    if slot > sent:
                        await asyncio.sleep(slot - sent)
                    sent = slot
                    slot += self.interval
                line = await connection.ask(request)
                self.samples.append((sent, time.perf_counter() - sent))
                if prbench.reply_value(line) is None:
                    self.errors += 1
                i += 1
        finally:
            connection.close()

    async def stop(self) -> None:
        self._stop = True
        await self._task

    def p99_ms(self, start: float, end: float) -> Tuple[Optional[float], int]:
        """p99 of the requests sent in [start, end), and their number."""
        window = [latency for sent, latency in self.samples if start <= sent < end]
        return percentile_ms(window, 0.99), len(window)


SPIN = """import sys, time
from prserv.runtime.priority import lower_priority
lower_priority(sys.argv[1], blocks_writers=False)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    pass
"""

LAUNCHER = """import json, subprocess, sys, time
for line in sys.stdin:
    argv, env, discard_stdout = json.loads(line)
    started = time.time()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL if discard_stdout else subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    print(json.dumps([done.returncode, done.stdout or "", done.stderr, started, time.time()]), flush=True)
"""


class Launcher:
    """A small process that starts the backups, so that the load generator (this
    process, with hundreds of thousands of samples in memory) never forks: a fork
    stalls its event loop and would be timed as get-pr latency."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    async def run(self, argv: List[str], env: Dict[str, str], discard_stdout: bool
                  ) -> Tuple[int, str, str, float, float]:
        """Run ``argv``; (exit code, stdout, stderr, start and end in ``perf_counter`` time)."""
        self.process.stdin.write(json.dumps([argv, env, discard_stdout]) + "\n")
        self.process.stdin.flush()
        line = await asyncio.to_thread(self.process.stdout.readline)
        code, stdout, stderr, started, ended = json.loads(line)
        wall_minus_perf = time.time() - time.perf_counter()
        return code, stdout, stderr, started - wall_minus_perf, ended - wall_minus_perf

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


async def run_backup(launcher: Launcher, method: str, db: str, address: str, out: str,
                     priority: str) -> Tuple[Dict[str, Any], float, float]:
    """Run the backup command; (its JSON report, start and end ``perf_counter``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    env = {k: v for k, v in env.items() if not k.startswith("PRSERV_")}
    argv = {"backup": ["-m", "prserv", "--json", "backup", db, out, "--priority", priority],
            "dump": ["-m", "prserv", "--json", "dump", "--server", address, "-"],
            "spin": ["-c", SPIN, priority]}[method]
    code, stdout, stderr, started, ended = await launcher.run([sys.executable] + argv, env, method == "dump")
    if code != 0:
        raise RuntimeError("%s failed (%d): %s" % (method, code, stderr))
    if method == "backup":
        return json.loads(stdout), started, ended
    if method == "dump":                     # the summary goes to stderr with '-'
        return dict(json.loads(stderr), verification=None), started, ended
    return {"seconds": round(ended - started, 3), "bytes": 0, "verification": None}, started, ended


async def measure(launcher: Launcher, address: str, db: str, workdir: str, options: argparse.Namespace,
                  run: int) -> Dict[str, Any]:
    load = Load(address, options.mode, options.clients, options.rate)
    await load.start()
    await asyncio.sleep(WARM_UP_S)
    baseline_start = time.perf_counter()
    await asyncio.sleep(options.baseline)
    out = os.path.join(workdir, "backup-%d.sqlite3" % run)
    report, started, ended = await run_backup(launcher, options.method, db, address, out, options.priority)
    await load.stop()
    if os.path.exists(out):
        os.unlink(out)
    p99_before, n_before = load.p99_ms(baseline_start, started)
    p99_during, n_during = load.p99_ms(started, ended)
    checked = report["verification"] or {"tables": {}, "integrity": ["not checked"]}
    return {
        "run": run, "method": options.method, "mode": options.mode, "clients": options.clients, "rate": options.rate or None,
        "priority": report.get("priority", options.priority),
        "backup_s": report["seconds"], "command_s": round(ended - started, 3),
        "copy_mib": round(report["bytes"] / 2**20, 1),
        "copy_rows": checked["tables"].get("PRMAIN"),
        "integrity": "; ".join(checked["integrity"]),
        "requests_before": n_before, "p99_before_ms": p99_before,
        "requests_during": n_during, "p99_during_ms": p99_during,
        "ratio": round(p99_during / p99_before, 2) if p99_before and p99_during else None,
        "errors": load.errors,
        "wal_mib": round(_size(db + "-wal") / 2**20, 1),
    }


def _size(path: str) -> int:
    """The size of ``path``, 0 if it does not exist.  The ``-wal`` file keeps the
    largest size it reached: a backup's read transaction holds checkpoints back."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


COLUMNS = ("run", "backup_s", "command_s", "copy_rows", "integrity", "requests_before", "p99_before_ms",
           "requests_during", "p99_during_ms", "ratio", "errors", "wal_mib")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--mode", default="hit", choices=("hit", "mixed", "new"))
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second in all (default: back to back, as fast as answered)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of load before the backup")
    parser.add_argument("--priority", choices=("idle", "low", "normal"), default="idle",
                        help="prserv backup --priority, also applied to --method spin (default: idle)")
    parser.add_argument("--runs", type=int, default=1, help="backups in turn, each with its own baseline")
    parser.add_argument("--method", default="backup", choices=("backup", "dump", "spin"),
                        help="what runs during the load (default: prserv backup)")
    options = parser.parse_args()
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="prbench-backup-") as workdir:
        db = os.path.join(workdir, "prserv.sqlite3")
        packages = bigdb.packages_of(options.rows, options.per_package)
        seconds = make_database(db, packages, options.per_package)
        print("database: %d rows, %.0f MiB, written in %.1f s" % (
            packages * options.per_package, os.path.getsize(db) / 2**20, seconds))
        server = bigdb.start_server(db)
        launcher = Launcher()
        try:
            for run in range(1, options.runs + 1):
                results.append(asyncio.run(measure(launcher, server.wait_serving(), db, workdir, options, run)))
        finally:
            launcher.close()
            server.stop()
    print("  ".join("%15s" % column for column in COLUMNS))
    for result in results:
        print("  ".join("%15s" % (result[column],) for column in COLUMNS))
    for result in results:
        print(json.dumps(result))
    return 0 if all(r["errors"] == 0 and r["integrity"] in ("ok", "not checked") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
