#!/usr/bin/env python3
"""shareddb: several server processes on one PostgreSQL database, against SQLite.

    shareddb.py [--servers 1,2,4] [--loads new,hit,conn] [--duration 10] [--clients 8]
                [--url URL [--pg-pid PID]] [--tree CHECKOUT] [--no-sqlite] [--shared-prefix]

Every server is ``CHECKOUT/bin/bitbake-prserv -F`` (this checkout by default) on
``127.0.0.1:0``, started with this interpreter.  The configurations, in this order:

* sqlite: one server on a fresh SQLite file in a temporary directory (for
  comparison; ``--no-sqlite`` leaves it out);
* for each count N in ``--servers``: a fresh PostgreSQL database ``bench_N``
  (``CREATE DATABASE``), and N servers on its URL, started together (so they also
  race to create the schema).

In each configuration every load of ``--loads`` runs once, in turn, on the same
database: one ``prbench.py`` per server, all started at the same moment as
separate processes, each on its own server, with the same ``--duration`` and
``--clients`` (per generator).  The generators are closed loops: once the servers are
saturated, a client waits on average (clients in all) / (requests/s), so p99 follows
the client count (8 per generator: 16 in flight with 2 servers).  Package names:

* new: every generator uses the prefix ``new``, so all of them race on the same 8
  packages: each request is an allocation, and two servers must never give one
  value to two checksums;
* hit and conn: prbench's stable checksums carry a random id per process (it has no
  option to fix it), so generators cannot share them.  Generators on the same
  packages would then undo each other's hits: without history a checksum whose
  value is below its package's maximum is given a new value, so each generator's
  request bumps the package past the other's checksum and nearly every "hit"
  becomes a write.  So each generator gets its own prefix (``hit-g0-``,
  ``hit-g1-`` ...: 256 packages each), and its priming makes every timed request
  a lookup.  ``--shared-prefix`` gives them one prefix anyway (to see the effect).

Measured per (configuration, load):

* rps: the generators' requests/s summed; p50/p99: the worst generator's
  (prbench's nearest-rank percentiles); errors: summed, plus generators that
  failed; dup_gen: prbench's own duplicate_values (within one generator), summed;
* dup_db: asked from the database after the run, ``SELECT count(*) FROM (SELECT
  version, pkgarch, value FROM prmain GROUP BY version, pkgarch, value HAVING
  count(*) > 1) AS d``: values held by two checksums of one package, across all
  servers and all loads so far on that database (must be 0); rows: rows the run
  added (about the requests in new; the priming only in hit and conn);
* srv_us/req: the CPU time of all the server processes (/proc/PID/task/*/schedstat),
  read just before the generators start and after they all exit, divided by the
  answered requests, priming included;
* pg_us/req: the same for PostgreSQL, from /proc/PID/stat: the postmaster's utime +
  stime + cutime + cstime (the last two hold backends that exited in between) plus
  utime + stime of every live process whose parent is the postmaster (backends,
  checkpointer, WAL writer ...).  Known when this script started PostgreSQL, or from ``--pg-pid``.

Targets (checked for the 2-server rows): hit >= 4000 requests/s, new >= 1500
values/s, p99 < 20 ms, dup_db 0.

PostgreSQL: with ``--url URL`` (any database of an existing cluster; this script
creates ``bench_N_<random>`` databases next to it and drops them at the end), or
else one started by this script with the ``pgserver`` package (PostgreSQL 16, on a
unix socket in a temporary directory; it runs as root too), which with the asyncpg
the servers need is ``pip install '.[test]'``.  The script itself imports only the
standard library (pgserver lazily).  SQL goes through ``psql``: pgserver's own, or
the one on PATH with ``--url``.

Prints a table, then one JSON line.  Exit status 0; 2 if a run had errors,
duplicates, a failed generator or a server that exited; 1 if the benchmark could
not be carried out (no PostgreSQL, a server did not start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import _load
from _measure import cpu_seconds, rounded, tree_cpu_seconds, us_per
from _servers import ROOT, Server, stop_all

LOADS = ("new", "hit", "conn")
DUPLICATES_SQL = ("SELECT count(*) FROM (SELECT version, pkgarch, value FROM prmain "
                  "GROUP BY version, pkgarch, value HAVING count(*) > 1) AS d")
ROWS_SQL = "SELECT count(*) FROM prmain"
TARGET_SERVERS = 2
TARGET_RPS = {"hit": 4000.0, "new": 1500.0}
TARGET_P99_MS = 20.0
GENERATOR_GRACE_S = 180.0       # beyond --duration: priming, start-up, a slow server


# --------------------------------------------------------------------------- databases

class PostgreSQL:
    """A cluster to make databases in: started here with pgserver, or given by URL."""

    def __init__(self, url: Optional[str], pid: Optional[int], work: str) -> None:
        self.server = None
        self.created: List[str] = []
        self.tag = ""
        if url:
            self.base = url
            self.pid = pid
            self.psql_bin = shutil.which("psql")
            if self.psql_bin is None:
                raise RuntimeError("--url needs psql on PATH (to create databases and count duplicates)")
            self.tag = "_" + os.urandom(3).hex()             # never touch a database we did not make
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")             # platformdirs: XDG_RUNTIME_DIR is not set
                import pgserver  # type: ignore[import-not-found]
                from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RuntimeError("no PostgreSQL: pip install '.[test]' (pgserver) or give --url (%s)" % exc) from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server = pgserver.get_server(os.path.join(work, "pgdata"), cleanup_mode="stop")
        self.base = self.server.get_uri()
        self.pid = self.server.get_pid()
        self.psql_bin = str(Path(POSTGRES_BIN_PATH) / "psql")

    def url(self, database: str) -> str:
        parts = urllib.parse.urlsplit(self.base)
        return urllib.parse.urlunsplit(parts._replace(path="/" + database))

    def psql(self, url: str, sql: str) -> str:
        done = subprocess.run([self.psql_bin, url, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError("psql %r failed: %s" % (sql, done.stderr.strip()))
        return done.stdout.strip()

    def create(self, servers: int) -> Tuple[str, str]:
        name = "bench_%d%s" % (servers, self.tag)
        self.psql(self.base, "CREATE DATABASE %s" % name)
        self.created.append(name)
        return name, self.url(name)

    def close(self) -> None:
        if self.server is None:
            for name in self.created:                       # only with --url: ours is thrown away whole
                try:
                    self.psql(self.base, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    print("shareddb.py: could not drop %s: %s" % (name, exc), file=sys.stderr)
            return
        self.server.cleanup()


class Database:
    """Rows and duplicate values of one configuration's database."""

    def __init__(self, sqlite_path: Optional[str] = None, pg: Optional[PostgreSQL] = None,
                 url: Optional[str] = None) -> None:
        self.sqlite_path = sqlite_path
        self.pg = pg
        self.url = url

    def scalar(self, sql: str) -> int:
        if self.pg is not None:
            return int(self.pg.psql(self.url, sql))
        conn = sqlite3.connect("file:%s?mode=ro" % self.sqlite_path, uri=True, timeout=30)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()

    def rows(self) -> Optional[int]:
        try:
            return self.scalar(ROWS_SQL)
        except (RuntimeError, sqlite3.Error, ValueError):     # no table yet: nothing stored
            return 0 if self.pg is None else None

    def duplicates(self) -> int:
        return self.scalar(DUPLICATES_SQL)


# --------------------------------------------------------------------------- one run

def generator_command(address: str, load: str, index: int, args: argparse.Namespace) -> List[str]:
    prefix = load if load == "new" or args.shared_prefix else "%s-g%d-" % (load, index)
    return _load.command(address, load, "--clients", str(args.clients), "--duration", str(args.duration),
                         "--prefix", prefix)


def run_load(config: str, servers: List[Server], db: Database, pg_pid: Optional[int], load: str,
             args: argparse.Namespace) -> Dict[str, object]:
    rows_before = db.rows()
    lines_before = [s.lines for s in servers]
    server_before = sum(cpu_seconds(s.pid) or 0.0 for s in servers)
    pg_before = tree_cpu_seconds(pg_pid) if pg_pid else None
    started = time.monotonic()
    generators = [_load.start(generator_command(s.wait_serving(), load, g, args)) for g, s in enumerate(servers)]
    results: List[Dict[str, object]] = []
    failures: List[str] = []
    for g, generator in enumerate(generators):
        try:
            done = _load.finish(generator, args.duration + GENERATOR_GRACE_S)
        except _load.LoadFailed as exc:
            failures.append("generator %d: %s" % (g, exc))
            continue
        done.result["exit"] = done.status
        if done.stderr.strip():
            done.result["stderr"] = done.stderr.strip()[-500:]
        results.append(done.result)
    wall = time.monotonic() - started
    server_cpu = sum(cpu_seconds(s.pid) or 0.0 for s in servers if s.alive()) - server_before
    pg_cpu = tree_cpu_seconds(pg_pid) - pg_before if pg_pid else None
    dead = ["%s exited with %s; its last lines: %s" % (s.name, s.process.poll(), " | ".join(s.tail))
            for s in servers if not s.alive()]

    requests = sum(int(r["requests"]) for r in results)
    answered = requests + sum(int(r["primed"]) for r in results)
    rows_after = db.rows()
    dup_db = db.duplicates()
    logged = [s.lines - before for s, before in zip(servers, lines_before)]
    row: Dict[str, object] = {
        "config": config, "servers": len(servers), "load": load, "generators": len(servers),
        "clients_per_generator": args.clients, "wall_s": round(wall, 2),
        "rps": round(sum(float(r["rps"]) for r in results), 1) if results else None,
        "p50_ms": max((float(r["p50_ms"]) for r in results if r.get("p50_ms") is not None), default=None),
        "p99_ms": max((float(r["p99_ms"]) for r in results if r.get("p99_ms") is not None), default=None),
        "requests": requests, "primed": sum(int(r["primed"]) for r in results),
        "errors": sum(int(r["errors"]) for r in results) + len(failures),
        "dup_gen": sum(int(r["duplicate_values"]) for r in results),
        "dup_db": dup_db,
        "rows_added": rows_after - rows_before if rows_after is not None and rows_before is not None else None,
        "server_cpu_s": round(server_cpu, 3),
        "server_us_per_req": us_per(server_cpu, answered),
        "pg_cpu_s": rounded(pg_cpu, 3),
        "pg_us_per_req": us_per(pg_cpu, answered),
        "generator_rps": [r["rps"] for r in results],
        "failures": failures + dead,
        "server_log_lines": logged,
    }
    if any(logged):
        row["server_log_tail"] = {s.name: list(s.tail)[-min(n, 5):] for s, n in zip(servers, logged) if n}
    row["target"] = target_check(row)
    return row


def target_check(row: Dict[str, object]) -> Optional[Dict[str, bool]]:
    """The 2-server targets for this row, or None if none apply."""
    if row["config"] == "sqlite" or row["servers"] != TARGET_SERVERS or row["load"] not in TARGET_RPS:
        return None
    return {"rps": row["rps"] is not None and row["rps"] >= TARGET_RPS[str(row["load"])],
            "p99": row["p99_ms"] is not None and row["p99_ms"] < TARGET_P99_MS,
            "dup": row["dup_db"] == 0 and row["dup_gen"] == 0}


def run_config(config: str, databases: List[str], db: Database, pg_pid: Optional[int],
               args: argparse.Namespace, loads: List[str]) -> List[Dict[str, object]]:
    servers = [Server(args.tree, database, "%s server %d" % (config, n)) for n, database in enumerate(databases)]
    rows: List[Dict[str, object]] = []
    try:
        for server in servers:
            server.wait_ready()
        for load in loads:
            row = run_load(config, servers, db, pg_pid, load, args)
            print_row(row)
            rows.append(row)
            if any(not s.alive() for s in servers):
                break
    finally:
        for server in servers:
            server.stop()
    return rows


# --------------------------------------------------------------------------- output

HEADER = ("%-7s %7s %-5s %9s %8s %8s %6s %7s %6s %7s %10s %9s  %s"
          % ("db", "servers", "load", "rps", "p50_ms", "p99_ms", "errors", "dup_gen", "dup_db", "rows",
             "srv_us/req", "pg_us/req", "target (2 servers)"))


def show(value: object) -> str:
    return "-" if value is None else str(value)


def target_text(row: Dict[str, object]) -> str:
    met = row["target"]
    if not met:
        return ""
    word = {True: "ok", False: "MISSED"}
    return "rps >= %d %s, p99 < %g %s, dup 0 %s" % (TARGET_RPS[str(row["load"])], word[met["rps"]],
                                                    TARGET_P99_MS, word[met["p99"]], word[met["dup"]])


def print_row(row: Dict[str, object]) -> None:
    print("%-7s %7d %-5s %9s %8s %8s %6d %7d %6d %7s %10s %9s  %s"
          % (row["config"], row["servers"], row["load"], show(row["rps"]), show(row["p50_ms"]),
             show(row["p99_ms"]), row["errors"], row["dup_gen"], row["dup_db"], show(row["rows_added"]),
             show(row["server_us_per_req"]), show(row["pg_us_per_req"]), target_text(row)), flush=True)
    for failure in row["failures"]:
        print("        ! %s" % failure, flush=True)
    for name, lines in row.get("server_log_tail", {}).items():
        for line in lines:
            print("        %s: %s" % (name, line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="1,2,4", help="server counts on PostgreSQL (default: %(default)s)")
    parser.add_argument("--loads", default="new,hit,conn", help="prbench modes: new, hit, conn (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each load (default: 10)")
    parser.add_argument("--clients", type=int, default=8, help="connections per generator (default: 8)")
    parser.add_argument("--url", default=None, help="an existing PostgreSQL (its databases are created there); "
                        "default: start one with pgserver")
    parser.add_argument("--pg-pid", type=int, default=None, help="with --url: the postmaster's pid on this "
                        "machine, for PostgreSQL's CPU")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose server runs")
    parser.add_argument("--no-sqlite", action="store_true", help="leave out the SQLite comparison")
    parser.add_argument("--shared-prefix", action="store_true",
                        help="hit and conn generators on the same packages (they then bump each other)")
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.servers.split(",") if n.strip()]
    except ValueError:
        parser.error("--servers: a comma-separated list of counts")
    loads = [m.strip() for m in args.loads.split(",") if m.strip()]
    if set(loads) - set(LOADS) or not loads:
        parser.error("--loads: some of %s" % ",".join(LOADS))
    if any(n < 1 for n in counts) or args.duration <= 0 or args.clients < 1:
        parser.error("counts, duration and clients must be positive")
    if args.pg_pid is not None and not args.url:
        parser.error("--pg-pid goes with --url")

    result: Dict[str, object] = {"tree": str(args.tree), "duration": args.duration,
                                 "clients_per_generator": args.clients, "servers": counts, "loads": loads,
                                 "shared_prefix": args.shared_prefix, "cpus": os.cpu_count()}
    work = tempfile.mkdtemp(prefix="prserv-shareddb-")
    os.chmod(work, 0o755)                       # pgserver runs PostgreSQL as another user when we are root
    rows: List[Dict[str, object]] = []
    pg: Optional[PostgreSQL] = None
    status = 0
    try:
        print(HEADER)
        print("-" * len(HEADER), flush=True)
        if not args.no_sqlite:
            path = os.path.join(work, "prserv.sqlite3")
            rows += run_config("sqlite", [path], Database(sqlite_path=path), None, args, loads)
        if counts:
            pg = PostgreSQL(args.url, args.pg_pid, work)
            result["postgresql"] = "pgserver" if pg.server is not None else "url"
            result["postgresql_version"] = pg.psql(pg.base, "SHOW server_version")
            for n in counts:
                name, url = pg.create(n)
                rows += run_config("pg", [url] * n, Database(pg=pg, url=url), pg.pid, args, loads)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        print("shareddb.py: %s" % exc, file=sys.stderr)
        result["failure"] = str(exc)
        status = 1
    finally:
        stop_all()
        if pg is not None:
            try:
                pg.close()
            except Exception as exc:                   # keep cleaning up
                print("shareddb.py: stopping PostgreSQL: %s" % exc, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    checked = [r for r in rows if r["target"]]
    if checked:
        print()
        print("targets, %d servers: %s" % (TARGET_SERVERS, "; ".join(
            "%s %s" % (r["load"], "met" if all(r["target"].values()) else "MISSED") for r in checked)))
    result["runs"] = rows
    result["targets_met"] = all(all(r["target"].values()) for r in checked) if checked else None
    if status == 0 and any(r["errors"] or r["dup_gen"] or r["dup_db"] or r["failures"] for r in rows):
        status = 2
    print(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
