#!/usr/bin/env python3
"""mirror: what a mirror costs and how far behind it is.

    mirror.py [--phases copy,fresh] [--tree CHECKOUT]
              [--rows 1000000] [--packages 1000] [--db PATH] [--copy-timeout 600]
              [--mirrors 4] [--rounds 2] [--rate 5000] [--duration 10] [--clients 16]

Every server is ``CHECKOUT/bin/bitbake-prserv -F`` (this checkout by default) on
``127.0.0.1:0``; a mirror is one started with ``--mirror SOURCE_ADDRESS``.

1. copy: a source database of ``--rows`` rows (``--packages`` packages with
   values "0", "1", ... each), written directly with sqlite3 in bitbake's schema
   once at ``--db`` and reused while it holds that many rows.  A source server
   serves it; a mirror starts on a fresh file.  Measured: the seconds from starting
   the mirror's process until its ``mirror-status`` (asked every 20 ms) says
   state "following", complete true and rows_behind 0, and the rows per second
   that makes; when the mirror first held the last row (its position stopped
   changing); the mirror's peak RSS, sampled (VmRSS every 50 ms) and as the
   kernel counts it (VmHWM at the end); the CPU seconds of both processes; the
   rows in the mirror's file afterwards.  Targets: under 30 s, under 200 MB.
2. fresh: a source on a fresh empty file with 0 or ``--mirrors`` mirrors
   (interleaved 0, N, 0, N, ... ``--rounds`` times each), each mirror waited for
   until it follows.  Then for ``--duration`` seconds a paced load: ``--clients``
   connections share ``--rate`` get-prs of new checksums per second (on 64
   packages, so values stay small).  Each client has one request in flight and
   sends request k at its slot t0 + offset + k / (rate / clients), sleeping until
   then; a client more than 5 ms behind its schedule drops the slots it missed
   rather than bursting, so a server that cannot keep up shows as a lower achieved
   rate.  Latency is from sending a request to reading its answer.
   With mirrors, a probe on its own connection every 100 ms stores a fresh
   checksum on the source with get-pr (answered once committed), then asks every
   mirror test-pr of it every 5 ms until each answers the value: freshness is the
   time from the source's answer to a mirror's first answer with the value (all
   probes and mirrors together: p50, p99, max; target p99 <= 1 s).
   CPU: a server's CPU time (/proc/PID/task/*/schedstat), read just before the load
   starts and, for the source, just after it ends; for a mirror, once it holds a
   marker value stored after the load (so it has applied everything).  Divided by the values
   the source acknowledged (load and probes): microseconds per new value.  The
   ratio median(N mirrors) / median(no mirror) of the source's figure is what
   the mirrors cost the source (target <= 1.30).

Standard library only; one raw PRSERVICE client per connection (no prserv
import).  Prints a table, then one JSON line.  Exit status 0, or 2 if a request
failed, a probe timed out or a mirror answered a wrong value, or 1 if the run
could not be carried out (a server did not start, the mirror never followed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from _client import Client
from _data import get_pr, make_database, package, test_pr
from _measure import cpu_seconds, cpu_used, mib, percentile_ms, rounded, status_kib, us_per
from _servers import ROOT, Server, stop_all

LOAD_PACKAGES = 64
PROBE_PACKAGE = "probe-1.0-r0"
MARKER_PACKAGE = "marker-1.0-r0"
CATCH_UP_SLACK = 0.005          # a client this far behind its schedule drops slots
PROBE_INTERVAL = 0.1
PROBE_POLL = 0.005
PROBE_TIMEOUT = 10.0
STATUS_POLL = 0.02
RSS_POLL = 0.05
COPY_TARGET_S = 30.0
RSS_TARGET_MB = 200.0           # 10**6 bytes
FRESHNESS_TARGET_S = 1.0
COST_RATIO_TARGET = 1.30


# --------------------------------------------------------------------------- database

def count_rows(path: str) -> Optional[int]:
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return conn.execute("SELECT count(*) FROM PRMAIN").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def remove_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


# --------------------------------------------------------------------------- client

def value_of(answer: object) -> Optional[str]:
    return answer.get("value") if isinstance(answer, dict) else None


def median(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# --------------------------------------------------------------------------- processes

def mirror_server(tree: Path, db: str, source: Tuple[str, int], name: str) -> Server:
    """A mirror of ``source`` on the file ``db``."""
    return Server(tree, db, name, "--mirror", "%s:%d" % source)


def mirror_status(client: Client) -> dict:
    answer, _ = client.ask({"mirror-status": {}})
    status = answer.get("mirror") if isinstance(answer, dict) else None
    if not isinstance(status, dict):
        raise RuntimeError("not a mirror-status answer: %.200r" % (answer,))
    return status


def is_caught_up(status: dict) -> bool:
    return status.get("state") == "following" and status.get("complete") is True and status.get("rows_behind") == 0


def wait_following(mirror: Server, timeout: float, on_poll=None) -> Tuple[dict, int]:
    """Ask mirror-status every 20 ms until it follows with nothing behind; returns the
    last status and the polls made.  RuntimeError (with what was seen) on timeout."""
    client = Client(mirror.wait_ready())
    deadline = time.monotonic() + timeout
    polls = 0
    status: dict = {}
    try:
        while True:
            status = mirror_status(client)
            polls += 1
            if on_poll is not None:
                on_poll(status)
            if is_caught_up(status):
                return status, polls
            if time.monotonic() > deadline or not mirror.alive():
                raise RuntimeError("%s did not reach following with nothing behind in %.0f s "
                                   "(alive: %s); last mirror-status: %s; its last lines:\n  %s"
                                   % (mirror.name, timeout, mirror.alive(), json.dumps(status),
                                      "\n  ".join(mirror.tail) or "(none)"))
            time.sleep(STATUS_POLL)
    finally:
        client.close()


class RssSampler(threading.Thread):
    """VmRSS of one process every 50 ms; the peak seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss = status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
                self.samples += 1
            self.done.wait(RSS_POLL)

    def stop(self) -> None:
        self.done.set()
        self.join()


# --------------------------------------------------------------------------- phase 1: copy

def copy_phase(args: argparse.Namespace, work: str) -> Dict[str, object]:
    per_package = max(1, args.rows // args.packages)
    rows = per_package * args.packages
    db = args.db or os.path.join(tempfile.gettempdir(), "prserv-mirror-%d.sqlite3" % rows)
    result: Dict[str, object] = {"rows": rows, "packages": args.packages, "per_package": per_package,
                                 "db": db}
    held = count_rows(db) if os.path.exists(db) else None
    if held != rows:
        if held is not None and args.db:
            raise RuntimeError("%s holds %s rows, not %d: give another --db" % (db, held, rows))
        remove_database(db)
        result["generate_s"] = round(make_database(db, args.packages, per_package), 1)
    source = Server(args.tree, db, "source")
    source.wait_ready()
    result["source_start_s"] = round(source.ready_s, 2)
    target = os.path.join(work, "copy-mirror.sqlite3")
    source_cpu_before = cpu_seconds(source.pid)
    mirror = mirror_server(args.tree, target, source.address, "mirror")
    sampler = RssSampler(mirror.pid)
    sampler.start()
    seen_states: List[str] = []
    positions: List[Tuple[float, object]] = []          # (seconds since start, position) at each change

    def note(status: dict) -> None:
        if not seen_states or seen_states[-1] != status.get("state"):
            seen_states.append(str(status.get("state")))
        if not positions or positions[-1][1] != status.get("position"):
            positions.append((time.monotonic() - mirror.started_at, status.get("position")))

    try:
        mirror.wait_ready()
        result["mirror_start_s"] = round(mirror.ready_s, 2)
        status, polls = wait_following(mirror, args.copy_timeout, note)
        seconds = time.monotonic() - mirror.started_at
    finally:
        sampler.stop()
    hwm = status_kib(mirror.pid, "VmHWM")
    mirror_cpu = cpu_seconds(mirror.pid)
    source_cpu = cpu_used(source_cpu_before, cpu_seconds(source.pid))
    mirror.stop()
    source.stop()
    result.update({
        "copy_s": round(seconds, 2), "copy_rows_per_s": round(rows / seconds),
        "last_row_s": round(positions[-1][0], 2),
        "status_polls": polls, "states_seen": seen_states, "final_position": status.get("position"),
        "mirror_peak_rss_sampled_mib": mib(sampler.peak_kib), "rss_samples": sampler.samples,
        "mirror_vmhwm_mib": mib(hwm),
        "mirror_cpu_s": rounded(mirror_cpu, 2), "source_cpu_s": rounded(source_cpu, 2),
        "mirror_rows": count_rows(target),
    })
    peak_kib = max(sampler.peak_kib, hwm or 0)
    result["copy_target_met"] = seconds < COPY_TARGET_S
    result["rss_target_met"] = peak_kib * 1024 < RSS_TARGET_MB * 1e6
    return result


# --------------------------------------------------------------------------- phase 2: freshness

class PacedClient(threading.Thread):
    """get-pr of new checksums on a fixed schedule, one request in flight."""

    def __init__(self, address: Tuple[str, int], index: int, clients: int, rate: float,
                 t0: float, duration: float, tag: str) -> None:
        super().__init__(daemon=True)
        self.address, self.index, self.clients, self.tag = address, index, clients, tag
        self.period = clients / rate
        self.offset = self.period * index / clients          # clients spread over one period
        self.t0, self.end = t0, t0 + duration
        self.latencies: List[float] = []
        self.errors = 0
        self.dropped = 0
        self.failure: Optional[str] = None

    def run(self) -> None:
        try:
            client = Client(self.address)
        except OSError as exc:
            self.failure = str(exc)
            return
        k = 0
        try:
            while True:
                slot = self.t0 + self.offset + k * self.period
                if slot >= self.end:
                    break
                now = time.perf_counter()
                if slot > now:
                    time.sleep(slot - now)
                name = package((self.index + k * self.clients) % LOAD_PACKAGES)
                digest = "%s%08x%040x" % (self.tag, self.index, k)
                answer, latency = client.ask(get_pr(name, digest))
                if value_of(answer) is None:
                    self.errors += 1
                else:
                    self.latencies.append(latency)
                k += 1
                late = time.perf_counter() - CATCH_UP_SLACK
                if self.t0 + self.offset + k * self.period < late:     # behind: drop missed slots
                    skip = math.ceil((late - self.t0 - self.offset) / self.period)
                    self.dropped += skip - k
                    k = skip
        except (OSError, ValueError) as exc:
            self.failure = str(exc)
        finally:
            client.close()


class Probe(threading.Thread):
    """Every 100 ms: get-pr of a fresh checksum on the source, then test-pr of it on
    every mirror every 5 ms until each answers the value."""

    def __init__(self, source: Tuple[str, int], mirrors: List[Tuple[str, int]], t0: float,
                 duration: float, tag: str) -> None:
        super().__init__(daemon=True)
        self.source, self.mirrors, self.t0, self.end, self.tag = source, mirrors, t0, t0 + duration, tag
        self.freshness: List[List[float]] = [[] for _ in mirrors]    # per mirror, seconds
        self.probes = 0
        self.values = 0
        self.timeouts = 0
        self.mismatches = 0
        self.errors = 0
        self.failure: Optional[str] = None

    def run(self) -> None:
        clients: List[Client] = []
        try:
            source = Client(self.source)
            clients.append(source)
            mirrors = [Client(address) for address in self.mirrors]
            clients.extend(mirrors)
            n = 0
            while True:
                slot = self.t0 + n * PROBE_INTERVAL
                now = time.perf_counter()
                if slot >= self.end:
                    break
                if slot > now:
                    time.sleep(slot - now)
                elif now - slot > PROBE_INTERVAL:                       # a slow probe: no burst
                    n = math.ceil((now - self.t0) / PROBE_INTERVAL)
                    continue
                n += 1
                self.one(source, mirrors, "%s%08x%040x" % (self.tag, 0xFFFFFFFF, n))
        except (OSError, ValueError) as exc:
            self.failure = str(exc)
        finally:
            for client in clients:
                client.close()

    def one(self, source: Client, mirrors: List[Client], digest: str) -> None:
        answer, _ = source.ask(get_pr(PROBE_PACKAGE, digest))
        committed = time.perf_counter()
        value = value_of(answer)
        self.probes += 1
        if value is None:
            self.errors += 1
            return
        self.values += 1
        waiting = set(range(len(mirrors)))
        while waiting:
            for m in sorted(waiting):
                seen, _ = mirrors[m].ask(test_pr(PROBE_PACKAGE, digest))
                got = value_of(seen)
                if got is not None:
                    if got != value:
                        self.mismatches += 1
                    self.freshness[m].append(time.perf_counter() - committed)
                    waiting.discard(m)
            if waiting and time.perf_counter() - committed > PROBE_TIMEOUT:
                self.timeouts += len(waiting)
                return
            if waiting:
                time.sleep(PROBE_POLL)


def wait_for_value(address: Tuple[str, int], digest: str, value: str, timeout: float) -> bool:
    client = Client(address)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if value_of(client.ask(test_pr(MARKER_PACKAGE, digest))[0]) == value:
                return True
            time.sleep(PROBE_POLL)
        return False
    finally:
        client.close()


def fresh_run(args: argparse.Namespace, work: str, run: int, mirrors: int) -> Dict[str, object]:
    folder = os.path.join(work, "fresh-%d" % run)
    os.mkdir(folder)
    source = Server(args.tree, os.path.join(folder, "source.sqlite3"), "source %d" % run)
    started: List[Server] = [source]
    try:
        source_address = source.wait_ready()
        followers = [mirror_server(args.tree, os.path.join(folder, "mirror%d.sqlite3" % m), source_address,
                                   "mirror %d.%d" % (run, m)) for m in range(mirrors)]
        started.extend(followers)
        for follower in followers:
            wait_following(follower, 60)
        tag = "%016x" % random.getrandbits(64)
        t0 = time.perf_counter() + 0.2                       # connections are made before t0
        loaders = [PacedClient(source_address, c, args.clients, args.rate, t0, args.duration, tag)
                   for c in range(args.clients)]
        probe = Probe(source_address, [f.address for f in followers], t0, args.duration, tag) if followers else None
        source_before = cpu_seconds(source.pid)
        mirrors_before = [cpu_seconds(f.pid) for f in followers]
        for thread in loaders + ([probe] if probe else []):
            thread.start()
        for thread in loaders:
            thread.join()
        if probe:
            probe.join()
        elapsed = time.perf_counter() - t0
        source_cpu = cpu_used(source_before, cpu_seconds(source.pid))
        latencies = [lat for loader in loaders for lat in loader.latencies]
        acknowledged = len(latencies) + (probe.values if probe else 0)
        failures = [c.failure for c in loaders if c.failure] + ([probe.failure] if probe and probe.failure else [])
        mirror_cpu: List[Optional[float]] = []
        drained: List[Optional[float]] = []
        if followers:                                        # a marker after the load: all applied
            marker = "%s%08x%040x" % (tag, 0xFFFFFFFE, 0)
            client = Client(source_address)
            marked_value = value_of(client.ask(get_pr(MARKER_PACKAGE, marker))[0])
            marked_at = time.perf_counter()
            client.close()
            for follower, before in zip(followers, mirrors_before):
                if marked_value is not None and wait_for_value(follower.address, marker, marked_value, 60):
                    drained.append(round(time.perf_counter() - marked_at, 3))
                    mirror_cpu.append(us_per(cpu_used(before, cpu_seconds(follower.pid)), acknowledged))
                else:
                    failures.append("%s never held the marker value" % follower.name)
                    drained.append(None)
                    mirror_cpu.append(None)
        freshness = [s for series in (probe.freshness if probe else []) for s in series]
        result: Dict[str, object] = {
            "run": run, "mirrors": mirrors, "seconds": round(elapsed, 3),
            "requests": len(latencies), "rate": round(len(latencies) / args.duration, 1),
            "dropped_slots": sum(c.dropped for c in loaders), "errors": sum(c.errors for c in loaders),
            "p50_ms": percentile_ms(latencies, 0.5), "p99_ms": percentile_ms(latencies, 0.99),
            "values": acknowledged, "source_cpu_s": rounded(source_cpu, 3),
            "source_us_per_value": us_per(source_cpu, acknowledged),
            "mirror_us_per_value": mirror_cpu, "mirror_drain_s": drained,
            "failures": failures,
        }
        if probe:
            result.update({
                "probes": probe.probes, "probe_errors": probe.errors, "probe_timeouts": probe.timeouts,
                "probe_mismatches": probe.mismatches, "freshness_samples": len(freshness),
                "freshness_p50_ms": percentile_ms(freshness, 0.5), "freshness_p99_ms": percentile_ms(freshness, 0.99),
                "freshness_max_ms": percentile_ms(freshness, 1.0),
                "freshness_per_mirror_p99_ms": [percentile_ms(series, 0.99) for series in probe.freshness],
                "_freshness": freshness,
            })
        return result
    finally:
        for server in reversed(started):
            server.stop()


def fresh_phase(args: argparse.Namespace, work: str) -> Tuple[List[Dict[str, object]], Dict[str, object]]:
    counts = [0, args.mirrors] if args.mirrors else [0]
    runs = []
    for _ in range(args.rounds):
        for mirrors in counts:
            runs.append(fresh_run(args, work, len(runs), mirrors))
    summary: Dict[str, object] = {"rate_asked": args.rate, "clients": args.clients, "duration": args.duration}
    for mirrors in counts:
        mine = [r for r in runs if r["mirrors"] == mirrors]
        summary["source_us_per_value_median_%d" % mirrors] = median([r["source_us_per_value"] for r in mine])
        summary["rate_median_%d" % mirrors] = median([r["rate"] for r in mine])
        if mirrors:
            every = [s for r in mine for s in r["_freshness"]]
            summary["freshness_p50_ms"] = percentile_ms(every, 0.5)
            summary["freshness_p99_ms"] = percentile_ms(every, 0.99)
            summary["freshness_max_ms"] = percentile_ms(every, 1.0)
            summary["freshness_samples"] = len(every)
            summary["freshness_target_met"] = bool(every) and percentile_ms(every, 0.99) <= FRESHNESS_TARGET_S * 1000
            summary["mirror_us_per_value_median"] = median([v for r in mine for v in r["mirror_us_per_value"]])
    if args.mirrors:
        base = summary["source_us_per_value_median_0"]
        loaded = summary["source_us_per_value_median_%d" % args.mirrors]
        ratio = round(loaded / base, 3) if base and loaded is not None else None
        summary["source_cost_ratio"] = ratio
        summary["source_cost_target_met"] = ratio is not None and ratio <= COST_RATIO_TARGET
    for r in runs:
        r.pop("_freshness", None)
    return runs, summary


# --------------------------------------------------------------------------- output

def verdict(met: object) -> str:
    return "ok" if met else "MISSED"


def show(value: object) -> str:
    return "-" if value is None else str(value)


def print_copy(c: Dict[str, object]) -> None:
    print("copy: %d rows (%d packages x %d), %s" % (c["rows"], c["packages"], c["per_package"], c["db"]))
    lines = [
        ("source start", "%s s" % c["source_start_s"], ""),
        ("mirror start (serving)", "%s s" % c["mirror_start_s"], ""),
        ("copy to following", "%s s" % c["copy_s"], "< %g s: %s" % (COPY_TARGET_S, verdict(c["copy_target_met"]))),
        ("rows per second", "%s" % c["copy_rows_per_s"], ""),
        ("last row held", "%s s" % c["last_row_s"], "(position %s)" % c["final_position"]),
        ("mirror peak RSS, sampled", "%s MiB" % show(c["mirror_peak_rss_sampled_mib"]),
         "< %g MB (%.1f MiB): %s" % (RSS_TARGET_MB, RSS_TARGET_MB * 1e6 / 2**20, verdict(c["rss_target_met"]))),
        ("mirror VmHWM", "%s MiB" % show(c["mirror_vmhwm_mib"]), ""),
        ("mirror / source CPU", "%s s / %s s" % (c["mirror_cpu_s"], c["source_cpu_s"]), ""),
        ("rows in the mirror's file", show(c["mirror_rows"]), "" if c["mirror_rows"] == c["rows"] else "!= rows"),
        ("states seen", " -> ".join(c["states_seen"]), ""),
    ]
    for name, value, target in lines:
        print("  %-27s %-22s %s" % (name, value, target))
    print()


def print_fresh(runs: List[Dict[str, object]], s: Dict[str, object], mirrors: int) -> None:
    print("fresh: get-pr of new checksums at %s/s for %s s over %d clients"
          % (s["rate_asked"], s["duration"], s["clients"]))
    header = ("%3s %7s %8s %7s %8s %8s %10s %10s %10s %10s %11s %s"
              % ("run", "mirrors", "rate", "dropped", "p50_ms", "p99_ms", "fresh_p50", "fresh_p99",
                 "fresh_max", "src_us/val", "mirr_us/val", "errors"))
    print(header)
    print("-" * len(header))
    for r in runs:
        per_mirror = [v for v in r["mirror_us_per_value"] if v is not None]
        errors = r["errors"] + r.get("probe_errors", 0) + r.get("probe_timeouts", 0) + r.get("probe_mismatches", 0)
        print("%3d %7d %8s %7d %8s %8s %10s %10s %10s %10s %11s %d%s"
              % (r["run"], r["mirrors"], r["rate"], r["dropped_slots"], show(r["p50_ms"]), show(r["p99_ms"]),
                 show(r.get("freshness_p50_ms")), show(r.get("freshness_p99_ms")), show(r.get("freshness_max_ms")),
                 show(r["source_us_per_value"]), show(median(per_mirror)), errors,
                 "  " + "; ".join(r["failures"]) if r["failures"] else ""))
    print()
    print("  source us/value, median   no mirror %s" % show(s.get("source_us_per_value_median_0"))
          + (", %d mirrors %s" % (mirrors, show(s.get("source_us_per_value_median_%d" % mirrors)))
             if mirrors else ""))
    if mirrors:
        print("  source cost ratio         %-10s <= %.2f: %s" % (show(s["source_cost_ratio"]), COST_RATIO_TARGET,
                                                                 verdict(s["source_cost_target_met"])))
        print("  freshness p50/p99/max ms  %s / %s / %s (%d samples)   p99 <= %d ms: %s"
              % (show(s["freshness_p50_ms"]), show(s["freshness_p99_ms"]), show(s["freshness_max_ms"]),
                 s["freshness_samples"], FRESHNESS_TARGET_S * 1000, verdict(s["freshness_target_met"])))
        print("  mirror us/value, median   %s" % show(s["mirror_us_per_value_median"]))
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="copy,fresh", help="copy, fresh or both (default: %(default)s)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose server runs")
    parser.add_argument("--rows", type=int, default=1000000, help="rows of the copy's source (default: %(default)s)")
    parser.add_argument("--packages", type=int, default=1000, help="packages they are spread over")
    parser.add_argument("--db", default=None, help="the copy's source database, generated if missing "
                        "(default: prserv-mirror-ROWS.sqlite3 in the temporary directory)")
    parser.add_argument("--copy-timeout", type=float, default=600.0, help="seconds the copy may take")
    parser.add_argument("--mirrors", type=int, default=4, help="mirrors in the fresh phase (default: 4)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mirror count (default: 2)")
    parser.add_argument("--rate", type=float, default=5000.0, help="get-prs per second (default: 5000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (default: 10)")
    parser.add_argument("--clients", type=int, default=16, help="load connections (default: 16)")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or set(phases) - {"copy", "fresh"}:
        parser.error("--phases: copy, fresh or copy,fresh")
    if args.rows < 1 or args.packages < 1 or args.rate <= 0 or args.clients < 1 or args.rounds < 1 \
            or args.mirrors < 0 or args.duration <= 0:
        parser.error("counts, rate and duration must be positive")

    result: Dict[str, object] = {"tree": str(args.tree)}
    work = tempfile.mkdtemp(prefix="prserv-mirror-bench-")
    status = 0
    try:
        if "copy" in phases:
            result["copy"] = copy_phase(args, work)
            print_copy(result["copy"])
        if "fresh" in phases:
            runs, summary = fresh_phase(args, work)
            result["fresh_runs"] = runs
            result["fresh"] = summary
            print_fresh(runs, summary, args.mirrors)
            if any(r["errors"] or r["failures"] or r.get("probe_errors") or r.get("probe_timeouts")
                   or r.get("probe_mismatches") for r in runs):
                status = 2
    except (RuntimeError, OSError, ValueError) as exc:
        print("mirror.py: %s" % exc, file=sys.stderr)
        result["failure"] = str(exc)
        status = 1
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
