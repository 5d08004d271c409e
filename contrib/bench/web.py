#!/usr/bin/env python3
"""web: the HTTP view's speed on a database of ten million rows.

    web.py [--db /tmp/webbench/prserv.sqlite3] [--rows 10000000] [--routes PRESETS]
           [--url NAME=TARGET[#walk]] [--requests 300] [--rounds 5] [--round-seconds 5]
           [--browse-rate 50] [--hit-clients 32] [--no-control] [--cache-size BYTES]
           [--tree CHECKOUT] [--phases routes,mix]

1. database: ``--db`` is generated once in bitbake's schema if it does not exist
   (``generate``: about 120k packages of sizes from 1 to 5,000 rows, 0.5% of them of
   exactly 1,000 rows, versions ``pkgNNNNN-1.2.3-r0`` on five pkgarchs, the rows
   interleaved across packages as builds would write them), then opened read-write
   by the server once, which builds its own index and feed state: that first open is
   timed apart.  What the generation learnt (the 1,000-row packages, the times) is
   kept beside it in ``DB.json``, so a later run reuses both;
2. routes: the server (``CHECKOUT/bin/bitbake-prserv -F --http 127.0.0.1:0``, this
   checkout by default) on core 0, one keep-alive HTTP client (``http.client``) on
   core 1, ``--requests`` requests per route: p50/p99/max, requests/s, the server's
   CPU per request, and its RSS (VmRSS, VmHWM) before and after vs ``--cache-size``.
   A route the server does not serve (404 on its first request) is reported as such
   and left out, so the presets work before the HTML pages exist;
3. mix: the PR protocol's "hit" load (``prbench.py --mode hit``, core 1) in
   ``--rounds`` rounds of three runs each, in an order rotated from round to round:
   without browsing, with a paced client (``--browse-rate`` pages per second, on a
   fixed schedule, each page timed from its slot) browsing ``/api/v1/status`` only
   (a control: the client and the HTTP stack, with pages that cost nothing), and
   with it browsing a mix of the served routes: the median hit p99 of each kind
   and their ratios to the rounds without (issue 27's target: at most 1.2), and
   the pages' own latency under that load.

Routes (``--routes``, comma separated presets; ``--url NAME=TARGET`` adds one, with
``{version}``, ``{pkgarch}`` (a random 1,000-row package) and ``{prefix}`` (the
``pkgNN`` of a random package) filled in, and ``#walk`` to follow its next-page links):

    status          /api/v1/status
    api-history     /api/v1/history?version={version}&pkgarch={pkgarch}
    page-package    /package?version={version}&pkgarch={pkgarch}
    api-packages    /api/v1/packages?prefix={prefix}&limit=100   (walked)
    api-packages-arch  the same, &pkgarch=allarch (5% of the packages)  (walked)
    page-packages   /packages?prefix={prefix}&limit=100          (walked)
    api-recent      /api/v1/recent?limit=100                     (walked)
    page-recent     /recent?limit=100                            (walked)
    page-index      /

A walked route follows the next page (JSON ``next``, a ``Link: rel="next"`` header
or an HTML link with ``rel="next"``) up to ``--walk-pages`` pages, then starts again
from a new prefix.  Standard library only; no prserv import.  Prints tables, then
one JSON line.
"""

from __future__ import annotations

import argparse
import html
import http.client
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qsl, quote, urlencode, urljoin

import _load
from _data import DDL, checksum
from _measure import cpu_seconds, cpu_used, percentile_ms, status_mib, us_per, us_per_request
from _servers import ROOT, Server, pinned, stop_all

ARCHS = (("core2-64", 50), ("cortexa57", 20), ("armv7at2hf-neon", 15), ("qemux86_64", 10), ("allarch", 5))
"""The pkgarchs of generated packages, with their weights."""
EXACT_ROWS = 1000
"""The size of the packages a history request asks about."""
EXACT_SHARE = 200
"""One package in this many has exactly ``EXACT_ROWS`` rows."""
LARGEST = 5000
"""The largest generated package but those of ``EXACT_ROWS``."""
BUCKETS = 1000
"""Slices of the generated history: a package of n rows writes its k-th row in
slice k * BUCKETS // n, so every package spreads over the whole history."""
BATCH_ROWS = 1_000_000
"""Rows per transaction while generating."""


def version_of(n: int) -> str:
    """The version of generated package ``n``: ``pkgNNNNN-M.m.p-r0``, unique per n."""
    return "pkg%05d-%d.%d.%d-r0" % (n % 100000, 1 + n // 100000, n % 7, n % 13)


def package_sizes(rows: int, seed: int) -> List[int]:
    """The row counts of the generated packages, summing to ``rows``: one in
    ``EXACT_SHARE`` of exactly ``EXACT_ROWS``, the others log-normal (median 33,
    mean about 75, at most ``LARGEST``)."""
    rng = random.Random(seed)
    sizes: List[int] = []
    left = rows
    while left > 0:
        if len(sizes) % EXACT_SHARE == EXACT_SHARE - 1 and left >= EXACT_ROWS:
            size = EXACT_ROWS
        else:
            size = min(LARGEST, max(1, int(rng.lognormvariate(3.5, 1.3))))
            size = EXACT_ROWS - 1 if size == EXACT_ROWS else size
        size = min(size, left)
        sizes.append(size)
        left -= size
    return sizes


def archs_of(count: int, seed: int) -> List[str]:
    rng = random.Random(seed + 1)
    names, weights = zip(*ARCHS)
    return rng.choices(names, weights, k=count)


def generated_rows(sizes: List[int], archs: List[str]) -> Iterator[Tuple[str, str, str, str]]:
    """Every row, in the order builds would have written them: slice by slice of the
    history (``BUCKETS``), each package's rows spread evenly over it."""
    buckets: List[List[int]] = [[] for _ in range(BUCKETS)]
    for n, size in enumerate(sizes):
        for k in range(size):
            buckets[k * BUCKETS // size].append(n << 20 | k)
    versions = [version_of(n) for n in range(len(sizes))]
    for bucket in buckets:
        for packed in bucket:
            n, k = packed >> 20, packed & 0xFFFFF
            yield versions[n], archs[n], checksum(n, k), str(k)
        bucket.clear()


def generate(path: str, rows: int, seed: int = 27) -> Dict[str, Any]:
    """Write the database at ``path`` (which must not exist) with sqlite3's executemany
    in transactions of ``BATCH_ROWS`` rows (WAL, synchronous off); what it holds."""
    started = time.monotonic()
    sizes = package_sizes(rows, seed)
    archs = archs_of(len(sizes), seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -2000000")        # KiB: the primary key stays in memory
    conn.execute(DDL)
    source = generated_rows(sizes, archs)
    written = 0
    while True:
        batch = [row for _, row in zip(range(BATCH_ROWS), source)]
        if not batch:
            break
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", batch)
        conn.execute("COMMIT")
        written += len(batch)
        print("  %d rows written, %.0f s" % (written, time.monotonic() - started), file=sys.stderr, flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    exact = [(version_of(n), archs[n]) for n, size in enumerate(sizes) if size == EXACT_ROWS]
    if not exact:                                   # a small database (a smoke run): its largest
        exact = [(version_of(n), archs[n]) for n, size in enumerate(sizes) if size == max(sizes)]
    return {"rows": written, "packages": len(sizes), "exact_packages": exact,
            "largest_package": max(sizes), "median_package": sorted(sizes)[len(sizes) // 2],
            "generate_s": round(time.monotonic() - started, 1), "db_mib": round(os.path.getsize(path) / 2**20)}


# --------------------------------------------------------------------------- routes

PRESETS: Dict[str, Tuple[str, bool]] = {
    "status": ("/api/v1/status", False),
    "api-history": ("/api/v1/history?version={version}&pkgarch={pkgarch}", False),
    "page-package": ("/package?version={version}&pkgarch={pkgarch}", False),
    "api-packages": ("/api/v1/packages?prefix={prefix}&limit=100", True),
    "api-packages-arch": ("/api/v1/packages?prefix={prefix}&pkgarch=allarch&limit=100", True),
    "page-packages": ("/packages?prefix={prefix}&limit=100", True),
    "api-recent": ("/api/v1/recent?limit=100", True),
    "page-recent": ("/recent?limit=100", True),
    "page-index": ("/", False),
}
"""name: (target, walked), as the docstring lists them."""
DEFAULT_ROUTES = "status,api-history,page-package,api-packages,page-packages,api-recent,page-recent"
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?', re.I)
_ANCHOR = re.compile(r"<a\b[^>]*>", re.I)
_HREF = re.compile(r'\bhref\s*=\s*"([^"]*)"', re.I)
_REL_NEXT = re.compile(r'\brel\s*=\s*"[^"]*\bnext\b', re.I)


class Route:
    """One kind of request: a target with ``{version}``, ``{pkgarch}``, ``{prefix}``
    to fill in; a walked one follows its next-page links up to ``pages`` pages."""

    def __init__(self, name: str, target: str, walk: bool, exact: List[Tuple[str, str]], packages: int,
                 pages: int, rng: random.Random) -> None:
        self.name, self.target, self.walk, self.exact, self.pages, self.rng = name, target, walk, exact, pages, rng
        self.packages = packages
        """Generated packages: a prefix is the ``pkgNN`` of one of them."""
        self.current: Optional[str] = None
        self.shown = 0
        self.walks = 0

    def fill(self) -> str:
        version, pkgarch = self.rng.choice(self.exact) if self.exact else ("pkg00000-1.0.0-r0", "core2-64")
        return self.target.format(version=quote(version, safe=""), pkgarch=quote(pkgarch, safe=""),
                                  prefix=version_of(self.rng.randrange(self.packages))[:5])

    def next_target(self) -> str:
        if self.current is None or self.shown >= self.pages:
            self.current, self.shown = self.fill(), 0
            self.walks += 1
        return self.current

    def answered(self, target: str, response: http.client.HTTPResponse, body: bytes) -> None:
        """Take the next page's target from the answer (walked routes); without one the
        next request starts a new walk."""
        self.shown += 1
        self.current = next_page(target, response, body) if self.walk else None


def next_page(target: str, response: http.client.HTTPResponse, body: bytes) -> Optional[str]:
    """The target of the page after ``target``'s answer: a ``Link: rel="next"``
    header, a JSON document's ``next`` cursor (as ``after``), or an HTML ``<a
    rel="next" href=...>``; None on the last page."""
    link = _LINK_NEXT.search(response.getheader("Link") or "")
    if link:
        return urljoin(target, link.group(1))
    kind = response.getheader("Content-Type") or ""
    if "json" in kind:
        try:
            cursor = json.loads(body).get("next")
        except (ValueError, AttributeError):
            return None
        if not cursor:
            return None
        path, _, query = target.partition("?")
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "after"]
        return path + "?" + urlencode(kept + [("after", cursor)])
    if "html" in kind:
        for anchor in _ANCHOR.findall(body.decode("utf-8", "replace")):
            href = _HREF.search(anchor)
            if href and _REL_NEXT.search(anchor):
                return urljoin(target, html.unescape(href.group(1)))
    return None


def routes_of(names: str, urls: List[str], exact: List[Tuple[str, str]], packages: int, pages: int,
              seed: int) -> List[Route]:
    """The routes ``--routes`` and ``--url`` name (SystemExit for an unknown preset)."""
    routes = []
    for name in [n for n in names.split(",") if n]:
        if name not in PRESETS:
            raise SystemExit("unknown route %r; presets: %s" % (name, ", ".join(PRESETS)))
        routes.append(Route(name, *PRESETS[name], exact, packages, pages, random.Random("%s-%s" % (seed, name))))
    for text in urls:
        name, _, target = text.partition("=")
        target, _, walk = target.partition("#")
        if not name or not target.startswith("/"):
            raise SystemExit("--url takes NAME=/TARGET[#walk], not %r" % text)
        routes.append(Route(name, target, walk == "walk", exact, packages, pages,
                            random.Random("%s-%s" % (seed, name))))
    return routes


# --------------------------------------------------------------------------- HTTP client

class Browser:
    """One keep-alive HTTP/1.1 connection, one request at a time (``http.client``);
    a connection the server closed is opened again once per request."""

    def __init__(self, address: Tuple[str, int]) -> None:
        self.address = address
        self.conn = http.client.HTTPConnection(*address, timeout=120)

    def get(self, target: str) -> Tuple[int, http.client.HTTPResponse, bytes, float]:
        """(status, response, body, seconds from sending to the body read)."""
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("GET", target)
                response = self.conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
            return response.status, response, body, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def message_of(body: bytes) -> str:
    """A short form of an error answer: its JSON message, else its start."""
    try:
        return str(json.loads(body)["error"]["message"])[:120]
    except (ValueError, KeyError, TypeError):
        return body[:120].decode("utf-8", "replace")


# --------------------------------------------------------------------------- measuring

def measure_route(route: Route, address: Tuple[str, int], requests: int, pid: int) -> Dict[str, Any]:
    """``requests`` requests of one route on one connection, back to back."""
    browser = Browser(address)
    samples: List[float] = []
    sizes: List[int] = []
    errors: Dict[int, int] = {}
    before = cpu_seconds(pid)
    started = time.perf_counter()
    failure = None
    try:
        for i in range(requests):
            target = route.next_target()
            try:
                status, response, body, seconds = browser.get(target)
            except (OSError, http.client.HTTPException) as exc:
                failure = "%s: %s" % (target, exc)
                print("  %s: no answer for %s" % (route.name, failure), file=sys.stderr)
                break
            if i == 0 and status == 404:
                return {"route": route.name, "served": False, "status": 404, "target": target,
                        "message": message_of(body)}
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
                if len(errors) == 1 and errors[status] == 1:
                    print("  %s: %d for %s: %s" % (route.name, status, target, message_of(body)), file=sys.stderr)
            samples.append(seconds)
            sizes.append(len(body))
            route.answered(target, response, body)
    finally:
        browser.close()
    elapsed = time.perf_counter() - started
    cpu = cpu_used(before, cpu_seconds(pid))
    if not samples:
        return {"route": route.name, "served": False, "status": None, "target": target, "message": failure}
    return {"route": route.name, "served": True, "failure": failure, "requests": len(samples), "walks": route.walks,
            "rps": round(len(samples) / elapsed, 1), "first_ms": round(samples[0] * 1e3, 3),
            "p50_ms": percentile_ms(samples, 0.5), "p99_ms": percentile_ms(samples, 0.99),
            "max_ms": percentile_ms(samples, 1.0), "server_us_per_req": us_per(cpu, len(samples)),
            "mean_kib": round(sum(sizes) / len(sizes) / 1024, 1), "errors": errors}


class PacedBrowsing(threading.Thread):
    """A browsing client at ``rate`` pages per second, on a fixed schedule, cycling
    through ``routes``: each page is timed from its slot (a page late for its slot
    counts its wait)."""

    def __init__(self, address: Tuple[str, int], routes: List[Route], rate: float) -> None:
        super().__init__(daemon=True)
        self.address, self.routes, self.interval = address, routes, 1.0 / rate
        self.stopping = threading.Event()
        self.samples: List[float] = []
        self.errors = 0
        self.late = 0
        self.elapsed = 0.0

    def run(self) -> None:
        browser = Browser(self.address)
        started = slot = time.perf_counter()
        i = 0
        try:
            while not self.stopping.is_set():
                now = time.perf_counter()
                if slot > now:
                    time.sleep(slot - now)
                else:
                    self.late += now - slot > self.interval
                route = self.routes[i % len(self.routes)]
                target = route.next_target()
                try:
                    status, response, body, _ = browser.get(target)
                except (OSError, http.client.HTTPException):
                    self.errors += 1                # counted; the next page reconnects
                    route.current = None
                else:
                    self.samples.append(time.perf_counter() - slot)
                    self.errors += status != 200
                    route.answered(target, response, body)
                slot += self.interval
                i += 1
        finally:
            self.elapsed = time.perf_counter() - started
            browser.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join()


KINDS = ("none", "status", "pages")
"""The kinds of hit rounds: without browsing; browsing ``/api/v1/status`` only (a
control: what a paced HTTP client and the HTTP stack cost, with pages that cost the
server nothing); browsing the measured routes."""


def hit_round(server: Server, http_address: Tuple[str, int], routes: List[Route], kind: str,
              args: argparse.Namespace, n: int) -> Dict[str, Any]:
    """One round of the hit load (``prbench.py --mode hit`` on core 1), with the paced
    browsing client of ``kind`` beside it (``KINDS``)."""
    browsing = None
    if kind == "status":
        control = Route("status", PRESETS["status"][0], False, [], 1, 1, random.Random(n))
        browsing = PacedBrowsing(http_address, [control], args.browse_rate)
    elif kind == "pages":
        browsing = PacedBrowsing(http_address, routes, args.browse_rate)
    before = cpu_seconds(server.pid)
    pace = ["--rate", str(args.hit_rate)] if args.hit_rate else []
    load = _load.start(pinned(1, _load.command(server.wait_serving(), "hit", "--clients", str(args.hit_clients),
                                               "--duration", str(args.round_seconds), "--prefix", "webhit", *pace)))
    if browsing:
        browsing.start()
    try:
        done = _load.finish(load, args.round_seconds + 120)
    finally:
        if browsing:
            browsing.stop()
    cpu = cpu_used(before, cpu_seconds(server.pid))
    r = done.result
    row = {"round": n, "browsing": kind, "hit_rps": r["rps"], "hit_p50_ms": r["p50_ms"],
           "hit_p99_ms": r["p99_ms"], "hit_errors": r["errors"],
           "server_us_per_hit": us_per_request(cpu, r)}
    if browsing:
        row.update({"pages": len(browsing.samples), "pages_per_s": round(len(browsing.samples) / browsing.elapsed, 1),
                    "page_p50_ms": percentile_ms(browsing.samples, 0.5),
                    "page_p99_ms": percentile_ms(browsing.samples, 0.99),
                    "page_max_ms": percentile_ms(browsing.samples, 1.0),
                    "pages_late": browsing.late, "page_errors": browsing.errors})
        row["_page_samples"] = browsing.samples
    return row


# --------------------------------------------------------------------------- the server

def quiet_browser() -> None:
    """This process (its browsing client) on core 0 beside the server, at the lowest
    CPU priority (``idle``): the server takes the core whenever it has work, and the load
    generator keeps core 1 to itself -- so a browsing client does not slow the
    clients whose latency is measured (the control then shows what is left)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    idle(0)


def idle(pid: int) -> None:
    """Process ``pid`` (0: this one) at the lowest CPU priority there is: Linux's
    ``SCHED_IDLE`` where it has it (any other process on the core goes first, at once),
    else ``nice 19``."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.setpriority(os.PRIO_PROCESS, pid, 19)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for ``--http``, whose address a server at
    WARNING level does not log)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: argparse.Namespace) -> Tuple[Server, Tuple[str, int], int]:
    """The server of ``--tree`` on ``--db`` with an HTTP listener, pinned to core 0,
    once it serves; the HTTP listener's address; and the process answering it (its
    CPU and memory are the pages').  With ``--web-server read-only``
    the HTTP listener is a second server's, read-only on the same database, on core 0
    too but at the lowest CPU priority (``idle``): the pages off the event loop that
    answers get-pr.  With ``--web-server process`` the server starts that second
    process itself (``--http-process true``; its child inherits core 0)."""
    http_address = ("127.0.0.1", free_port())
    cache = ["--cache-size", args.cache_size] if args.cache_size else []
    if args.web_server == "read-only":
        server = Server(args.tree, args.db, "server", *cache, cpu=0)
        server.wait_serving(args.start_timeout)
        web = Server(args.tree, args.db, "web", "--read-only", "--http", "%s:%d" % http_address, *cache, cpu=0)
        web.wait_serving(args.start_timeout)
        idle(web.pid)
        return server, http_address, web.pid
    if args.web_server == "process":
        server = Server(args.tree, args.db, "server", "--http", "%s:%d" % http_address, "--http-process", "true",
                        *cache, cpu=0)
        server.wait_serving(args.start_timeout)
        wait_listening(http_address, args.start_timeout)
        return server, http_address, child_of(server.pid)
    server = Server(args.tree, args.db, "server", "--http", "%s:%d" % http_address, "--http-process", "false",
                    *cache, cpu=0)
    server.wait_serving(args.start_timeout)
    return server, http_address, server.pid


def child_of(pid: int) -> int:
    """The one child process of ``pid`` (the server's HTTP child)."""
    children = [int(child) for task in os.listdir("/proc/%d/task" % pid)
                for child in Path("/proc/%d/task/%s/children" % (pid, task)).read_text().split()]
    if len(children) != 1:
        raise SystemExit("expected the server (pid %d) to have one child, found %s" % (pid, children))
    return children[0]


def wait_listening(address: Tuple[str, int], timeout: float) -> None:
    """Return once ``address`` accepts a connection (the server's HTTP child has
    started: ``--web-server process``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(address, 1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("nothing listens on %s:%d after %g s" % (address + (timeout,)))
            time.sleep(0.05)


def prepared(args: argparse.Namespace) -> Dict[str, Any]:
    """The database's description (``DB.json``), generating the database and opening
    it read-write once first if it does not exist."""
    sidecar = args.db + ".json"
    if os.path.exists(args.db) and os.path.exists(sidecar):
        with open(sidecar) as text:
            described = json.load(text)
        if "first_open_s" in described:
            return dict(described, reused=True)
    elif os.path.exists(args.db):
        raise SystemExit("%s exists but %s does not: remove the database, or give another --db" % (args.db, sidecar))
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
        print("generating %d rows in %s ..." % (args.rows, args.db), file=sys.stderr, flush=True)
        described = generate(args.db, args.rows, args.seed)
    server, _, _ = start_server(args)                 # the first read-write open: indexes, feed state
    described["first_open_s"] = round(server.ready_s or 0.0, 2)
    server.stop()
    with open(sidecar, "w") as out:
        json.dump(described, out)
    return dict(described, reused=False)


# --------------------------------------------------------------------------- report

def table(rows: List[Dict[str, Any]], columns: List[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, "-"))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "-")).rjust(w) for c, w in zip(columns, widths)))


def memory(pid: int, web_pid: int) -> Dict[str, Optional[float]]:
    """The server's RSS and peak, and the HTTP process's where it is another."""
    found = {"rss_mib": status_mib(pid, "VmRSS"), "hwm_mib": status_mib(pid, "VmHWM")}
    if web_pid != pid:
        found.update(web_rss_mib=status_mib(web_pid, "VmRSS"), web_hwm_mib=status_mib(web_pid, "VmHWM"))
    return found


def memory_text(found: Dict[str, Optional[float]]) -> str:
    text = "server RSS %(rss_mib)s MiB, peak %(hwm_mib)s MiB" % found
    if "web_rss_mib" in found:
        text += "; HTTP process RSS %(web_rss_mib)s MiB, peak %(web_hwm_mib)s MiB" % found
    return text


ROUTE_COLUMNS = ["route", "requests", "walks", "rps", "first_ms", "p50_ms", "p99_ms", "max_ms",
                 "server_us_per_req", "mean_kib", "errors"]
MIX_COLUMNS = ["round", "browsing", "hit_rps", "hit_p50_ms", "hit_p99_ms", "server_us_per_hit", "pages_per_s",
               "page_p50_ms", "page_p99_ms", "page_max_ms", "pages_late", "page_errors"]
MIX_LINE = "%5s %8s %8s %10s %10s %17s %11s %11s %11s %11s %10s %11s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="presets: " + ", ".join(PRESETS))
    parser.add_argument("--db", default="/tmp/webbench/prserv.sqlite3",
                        help="database file, generated if missing, with DB.json beside it (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows to generate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--routes", default=DEFAULT_ROUTES, help="presets to measure (default: %(default)s)")
    parser.add_argument("--url", action="append", default=[], metavar="NAME=TARGET[#walk]",
                        help="another route; repeatable")
    parser.add_argument("--requests", type=int, default=300, help="requests per route (default: %(default)s)")
    parser.add_argument("--walk-pages", type=int, default=10, help="pages per walk (default: %(default)s)")
    parser.add_argument("--phases", default="routes,mix", help="routes, mix or both (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of hit runs (default: %(default)s)")
    parser.add_argument("--round-seconds", type=float, default=5.0, help="(default: %(default)s)")
    parser.add_argument("--hit-clients", type=int, default=32, help="prbench.py --clients (default: %(default)s)")
    parser.add_argument("--browse-rate", type=float, default=50.0, help="pages per second (default: %(default)s)")
    parser.add_argument("--hit-rate", type=float, default=None,
                        help="hits per second in all, paced (prbench.py --rate): a load the server keeps up "
                             "with, whose p99 shows what a page makes a hit wait (default: as fast as answered)")
    parser.add_argument("--quiet-browser", action="store_true",
                        help="run the browsing client on the server's core at the lowest CPU priority, not beside the load "
                             "generator (for the mix: the control then measures the pages' own cost)")
    parser.add_argument("--web-server", choices=("same", "read-only", "process"), default="process",
                        help="who serves the pages: the server's own HTTP child process (process: "
                             "--http-process true, the server's default), the server answering get-pr itself "
                             "(same: --http-process false), or a second, read-only server on the same database "
                             "at the lowest CPU priority (read-only) (default: %(default)s)")
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="leave out the rounds browsing /api/v1/status only")
    parser.add_argument("--cache-size", default=None, help="the server's --cache-size (default: its own, 64M)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose server runs (default: this one)")
    parser.add_argument("--start-timeout", type=float, default=600.0,
                        help="seconds a server has to start (the first open indexes the table)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    described = prepared(args)
    result: Dict[str, Any] = {"db": args.db, "cache_size": args.cache_size or "64M (default)"}
    result.update({k: v for k, v in described.items() if k != "exact_packages"})
    exact = [tuple(p) for p in described["exact_packages"]]
    print("database: %(rows)d rows in %(packages)d packages (median %(median_package)d rows, largest "
          "%(largest_package)d), %(db_mib)d MiB; generated in %(generate_s)s s, first read-write open "
          "%(first_open_s)s s" % dict(described), "(reused)" if described["reused"] else "")
    print("1,000-row packages: %d" % len(exact))
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})                  # the server is on core 0 (taskset: pinned)
    routes = routes_of(args.routes, args.url, exact, described["packages"], args.walk_pages, args.seed)
    server, http_address, web_pid = start_server(args)
    try:
        result["start_s"] = round(server.ready_s or 0.0, 2)
        result["memory_start"] = memory(server.pid, web_pid)
        print("server started in %s s; %s, cache budget %s" % (
            result["start_s"], memory_text(result["memory_start"]), result["cache_size"]))
        served = routes
        if "routes" in phases:
            measured = [measure_route(route, http_address, args.requests, web_pid) for route in routes]
            result["routes"] = measured
            result["memory_after_routes"] = memory(server.pid, web_pid)
            served = [route for route, m in zip(routes, measured) if m["served"]]
            print("\nroutes, %d requests each on one keep-alive connection:" % args.requests)
            table([m for m in measured if m["served"]], ROUTE_COLUMNS)
            for m in measured:
                if not m["served"] and m["status"] == 404:
                    print("%s: 404, not served by this server (%s: %s)" % (m["route"], m["target"], m["message"]))
                elif not m["served"]:
                    print("%s: no answer (%s)" % (m["route"], m["message"]))
                elif m["failure"]:
                    print("%s: stopped after %d requests: no answer for %s" % (m["route"], m["requests"],
                                                                                m["failure"]))
            print("after: %s" % memory_text(result["memory_after_routes"]))
        if "mix" in phases and served:
            print("\nhit p99 without and with browsing (%s pages/s over %s), %d rounds of %s s:" % (
                args.browse_rate, ",".join(r.name for r in served), args.rounds, args.round_seconds), flush=True)
            kinds = [k for k in KINDS if k != "status" or args.control]
            if args.quiet_browser:
                quiet_browser()
            rounds = []
            print(MIX_LINE % tuple(MIX_COLUMNS))
            for n in range(args.rounds):
                for kind in kinds[n % len(kinds):] + kinds[:n % len(kinds)]:     # rotated each round
                    rounds.append(hit_round(server, http_address, served, kind, args, n))
                    print(MIX_LINE % tuple(rounds[-1].get(c, "-") for c in MIX_COLUMNS), flush=True)
            pages = [s for r in rounds if r["browsing"] == "pages" for s in r.pop("_page_samples", [])]
            median = {kind: statistics.median(r["hit_p99_ms"] for r in rounds if r["browsing"] == kind)
                      for kind in kinds}
            without, with_ = median["none"], median["pages"]
            result["mix"] = {"rounds": rounds, "hit_p99_without_ms": without, "hit_p99_with_ms": with_,
                             "ratio": round(with_ / without, 2),
                             "pages_p50_ms": percentile_ms(pages, 0.5), "pages_p99_ms": percentile_ms(pages, 0.99),
                             "pages_max_ms": percentile_ms(pages, 1.0)}
            for r in rounds:
                r.pop("_page_samples", None)
            if args.control:
                result["mix"].update(hit_p99_control_ms=median["status"],
                                     control_ratio=round(median["status"] / without, 2))
            result["memory_after_mix"] = memory(server.pid, web_pid)
            print("median hit p99: without %.3f ms, with browsing %.3f ms: ratio %.2f (target <= 1.2)" % (
                without, with_, with_ / without))
            if args.control:
                print("control, browsing /api/v1/status only: %.3f ms: ratio %.2f" % (
                    median["status"], median["status"] / without))
            print("pages under the hit load: p50 %(pages_p50_ms)s ms, p99 %(pages_p99_ms)s ms, max "
                  "%(pages_max_ms)s ms" % result["mix"])
            print("after: %s" % memory_text(result["memory_after_mix"]))
    finally:
        server.stop()
        stop_all()                  # the read-only web server too (--web-server read-only)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
