#!/usr/bin/env python3
"""prbench: get-pr load generator for any PRSERVICE 1.0 server (bitbake's PR protocol).

Standard library only (and the helpers beside it), and it does not import ``prserv``:
it speaks the wire protocol itself, so the same load can be pointed at this project's
server, at bitbake's own ``bitbake-prserv``, or at any other implementation.

    prbench.py ADDRESS [--mode new|hit|mixed|conn] [--clients 32]
               [--requests 200 | --duration SECONDS] [--packages N | --package NAME]
               [--prefix pkg] [--pkgarch core2-64] [--history]

ADDRESS is ``HOST:PORT``, ``[V6ADDR]:PORT`` or ``unix:///path/to/socket``.

Every timed request is one ``get-pr``; each client keeps exactly one request
outstanding.  Request ``i`` of client ``c`` asks for package
``<prefix><(c * 7919 + i) % packages>-1.0-r0``, or for every request the one
package named by ``--package`` (e.g. ``new`` on a package with a long history,
the "grown" load of sweep.py).

Modes:
  new    every request carries a new checksum, so each one is an allocation
         (a changed recipe).  Default --packages 8, so clients race on packages.
  hit    one stable checksum per package, asked once per package before timing
         (untimed "priming"), so every timed request is a lookup: a no-change
         rebuild.  Default --packages 256.
  mixed  like hit, but every 4th request of a client carries a new checksum.
         Without --history a stable checksum whose value fell below the package
         maximum is bumped by the server, so "mixed" allocates more than 1 in 4.
         Default --packages 8.
  conn   like hit, but every request opens a NEW connection, sends the setup and
         one get-pr, reads the reply and closes, as OpenEmbedded does once per
         packaging task.  Latency includes connect and setup.  Clients are threads
         with blocking sockets.  Default --packages 256.

Output: one JSON line
  {"mode", "address", "clients", "packages", "primed", "requests", "seconds", "rps",
   "p50_ms", "p99_ms", "errors", "duplicate_values"}
"requests" counts timed requests that got a reply line; "errors" counts replies
without a value (e.g. invoke-error) plus requests whose connection the server
closed without replying (the client then reconnects and carries on);
"duplicate_values" counts values handed to two different checksums of one package
(must be 0 for a correct server; it is the point of ``new`` mode).

Exit status: 0 clean run; 2 the run finished but had errors or duplicate values;
1 the run could not be carried out (connect failed, server silent for 60 s, ...).
SIGINT/SIGTERM end the timed phase early; results so far are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from _client import SETUP
from _measure import percentile_ms

MODES = ("new", "hit", "mixed", "conn")
PRIMED_MODES = frozenset({"hit", "mixed", "conn"})
DEFAULT_PACKAGES = {"new": 8, "hit": 256, "mixed": 8, "conn": 256}
DEFAULT_CLIENTS = 32
DEFAULT_REQUESTS = 200
NEW_EVERY = 4                  # mixed mode: request i is new when i % NEW_EVERY == 0
PACKAGE_STRIDE = 7919          # a prime: spreads the clients' starting packages
REPLY_TIMEOUT_S = 60           # a server silent this long fails the run
UNIX_PATH_MAX = 107            # sun_path is 108 bytes including the NUL


class BenchError(Exception):
    """The run cannot be carried out (as opposed to a request the server got wrong)."""


# --------------------------------------------------------------------------- addresses

@dataclass(frozen=True)
class Target:
    """Where to connect: socket family and the address ``connect()`` takes."""

    family: int
    sockaddr: Any
    text: str


def parse_address(text: str) -> Target:
    """Parse ``HOST:PORT``, ``[V6ADDR]:PORT`` or ``unix:///path`` (as bitbake's clients do)."""
    if text.startswith("unix://"):
        return Target(socket.AF_UNIX, _unix_sockaddr(text[len("unix://"):]), text)
    if text.startswith(("ws://", "wss://")):
        raise BenchError("websocket addresses are not supported: %s" % text)
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise BenchError("address must be HOST:PORT, [V6ADDR]:PORT or unix:///path: %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise BenchError("put IPv6 addresses in brackets: [%s]:%s" % (host, port))
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise BenchError("cannot resolve %s: %s" % (host, exc)) from exc
    return Target(family, sockaddr, text)


def _unix_sockaddr(path: str) -> str:
    """A connectable form of a unix socket path of any length.

    ``sun_path`` holds about 107 bytes; servers bind longer paths by changing into
    the directory first.  ``chdir`` is process-wide and the conn-mode threads
    connect concurrently, so instead go through the directory's descriptor
    (``/proc/self/fd/N/name``, Linux), kept open for the life of the process.
    """
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise BenchError("unix socket directory %s: %s" % (directory, exc)) from exc
    short = "/proc/self/fd/%d/%s" % (dir_fd, name)
    if len(os.fsencode(short)) > UNIX_PATH_MAX:
        raise BenchError("unix socket name too long: %s" % name)
    return short


# --------------------------------------------------------------------------- workload

@dataclass
class Workload:
    """Which package and checksum request ``i`` of client ``c`` asks for."""

    mode: str
    packages: int
    prefix: str
    pkgarch: str
    history: bool
    run_id: str
    pinned: Optional[str] = None
    _stable_requests: Dict[str, bytes] = field(default_factory=dict)

    def package(self, client: int, i: int) -> str:
        """Clients start on different packages and walk through all of them."""
        return self.package_name((client * PACKAGE_STRIDE + i) % self.packages)

    def package_name(self, n: int) -> str:
        """bitbake's version string shape (PN-PV-PR); the prefix separates loads."""
        if self.pinned is not None:
            return self.pinned
        return "%s%d-1.0-r0" % (self.prefix, n)

    def all_packages(self) -> List[str]:
        """Every package the run touches (what priming asks for)."""
        return [self.package_name(n) for n in range(self.packages)]

    def stable_checksum(self, package: str) -> str:
        """The run id keeps several runs against one server from sharing checksums."""
        return "%s-stable-%s" % (self.run_id, package)

    def is_new(self, i: int) -> bool:
        """Whether request ``i`` carries a never-seen checksum (an allocation)."""
        return self.mode == "new" or (self.mode == "mixed" and i % NEW_EVERY == 0)

    def next_request(self, client: int, i: int) -> Tuple[str, str, bytes]:
        """(package, checksum, request bytes); stable requests are encoded once, so
        the generator spends its CPU on the wire, not on json.dumps."""
        package = self.package(client, i)
        if self.is_new(i):
            checksum = "%s-new-%d-%d" % (self.run_id, client, i)
            return package, checksum, self.encode(package, checksum)
        checksum = self.stable_checksum(package)
        request = self._stable_requests.get(package)
        if request is None:
            request = self._stable_requests[package] = self.encode(package, checksum)
        return package, checksum, request

    def encode(self, package: str, checksum: str) -> bytes:
        """One get-pr line, formatted as bitbake's client formats it (json.dumps)."""
        message = {"get-pr": {"version": package, "pkgarch": self.pkgarch,
                              "checksum": checksum, "history": self.history}}
        return (json.dumps(message) + "\n").encode()


# --------------------------------------------------------------------------- results

def reply_value(line: bytes) -> Any:
    """The ``value`` of a get-pr reply, None for anything else.

    get-pr never answers ``{"value": null}``, so None always means a failed
    request (invoke-error, garbage), never a legitimate answer.
    """
    try:
        reply = json.loads(line)
    except ValueError:          # also covers invalid UTF-8
        return None
    return reply.get("value") if isinstance(reply, dict) else None


@dataclass
class ClientStats:
    """What one client saw; one object per client, so threads never share one."""

    latencies: List[float] = field(default_factory=list)
    answers: List[Tuple[str, str, Any]] = field(default_factory=list)
    errors: int = 0

    def record(self, latency: float, package: str, checksum: str, line: bytes) -> bool:
        """Count one reply; False if it carries no value (the server then closes)."""
        self.latencies.append(latency)
        value = reply_value(line)
        if value is None:
            self.errors += 1
            return False
        self.answers.append((package, checksum, value))
        return True


def count_duplicate_values(answers: Sequence[Tuple[str, str, Any]]) -> int:
    """Values handed to more than one checksum of a package (each extra checksum counts once).

    A correct server gives every checksum of a package its own value, with or
    without history, so this must be 0 in every mode.
    """
    owners: Dict[Tuple[str, Any], set] = {}
    for package, checksum, value in answers:
        owners.setdefault((package, value), set()).add(checksum)
    return sum(len(checksums) - 1 for checksums in owners.values())


def summarize(options: argparse.Namespace, stats: Sequence[ClientStats], seconds: float,
              primed: int) -> Dict[str, Any]:
    """The one-line JSON result of a run."""
    latencies = sorted(lat for s in stats for lat in s.latencies)
    answers = [answer for s in stats for answer in s.answers]
    return {
        "mode": options.mode, "address": options.address, "clients": options.clients,
        "packages": options.packages, "primed": primed, "requests": len(latencies),
        "seconds": round(seconds, 3),
        "rps": round(len(latencies) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": percentile_ms(latencies, 0.50), "p99_ms": percentile_ms(latencies, 0.99),
        "errors": sum(s.errors for s in stats),
        "duplicate_values": count_duplicate_values(answers),
    }


# --------------------------------------------------------------------------- run control

class RunControl:
    """Decides when a client stops: after N requests, at a deadline, or on a signal."""

    def __init__(self, requests: int, duration: Optional[float], interval: float = 0.0) -> None:
        self.requests = requests
        self.duration = duration
        self.interval = interval
        """Seconds between one client's requests (``--rate``); 0: each as soon as the last is answered."""
        self.deadline = math.inf
        self.stopped = threading.Event()

    def start(self) -> None:
        """Start the clock: the deadline counts from the timed phase, not from priming."""
        if self.duration is not None:
            self.deadline = time.perf_counter() + self.duration

    def stop(self, *_signal_args: Any) -> None:
        """End the run early (also a signal handler); clients finish their request."""
        self.stopped.set()

    def more(self, i: int) -> bool:
        """Whether a client that has sent ``i`` requests sends another."""
        if self.stopped.is_set():
            return False
        if self.duration is not None:
            return time.perf_counter() < self.deadline
        return i < self.requests


# --------------------------------------------------------------------------- blocking sockets

def open_blocking(target: Target) -> socket.socket:
    """A connected blocking socket, set up for a PR exchange.

    Timeouts are kernel-side (SO_RCVTIMEO/SO_SNDTIMEO, the latter also bounds
    connect on Linux): ``settimeout()`` would make Python poll() before every
    call, CPU the generator would take from the server it measures.
    """
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        timeval = struct.pack("ll", REPLY_TIMEOUT_S, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.connect(target.sockaddr)
        if target.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BlockingIOError as exc:
        sock.close()
        raise BenchError("connect to %s timed out" % target.text) from exc
    except OSError as exc:
        sock.close()
        raise BenchError("cannot connect to %s: %s" % (target.text, exc)) from exc
    return sock


def read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    """One reply line; ConnectionError if the server closed, BenchError if it is silent."""
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[:end + 1])
            del buffer[:end + 1]
            return line
        try:
            data = sock.recv(65536)
        except BlockingIOError as exc:          # SO_RCVTIMEO expired
            raise BenchError("no reply within %d s" % REPLY_TIMEOUT_S) from exc
        if not data:
            raise ConnectionError("the server closed the connection without a reply")
        buffer += data


def run_threads(worker: Callable[..., None], arguments: Sequence[tuple],
                control: RunControl) -> None:
    """Run ``worker(*args)`` per argument tuple in threads; re-raise the first failure.

    A failing worker stops the others (the run is lost anyway).  join() polls so
    that SIGINT/SIGTERM handlers run in the main thread meanwhile.
    """
    failures: List[BaseException] = []

    def guarded(*args: Any) -> None:
        """An exception must not die with its thread unseen."""
        try:
            worker(*args)
        except (OSError, BenchError, ValueError) as exc:
            failures.append(exc)
            control.stop()

    threads = [threading.Thread(target=guarded, args=args, daemon=True) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    if failures:
        raise failures[0]


# --------------------------------------------------------------------------- priming

def prime(target: Target, workload: Workload, clients: int) -> int:
    """Ask every package's stable checksum once, untimed.

    Without this the first timed request per package would be an allocation and
    hit/conn would not measure pure lookups.  Returns the number of packages primed.
    """
    packages = workload.all_packages()
    shares = min(clients, len(packages))

    def prime_share(names: List[str]) -> None:
        """One persistent connection asks its share of the packages, one at a time."""
        with open_blocking(target) as sock:
            sock.sendall(SETUP)
            buffer = bytearray()
            for package in names:
                checksum = workload.stable_checksum(package)
                sock.sendall(workload.encode(package, checksum))
                line = read_line(sock, buffer)
                if reply_value(line) is None:
                    raise BenchError("priming %s failed: %r" % (package, line[:200]))

    run_threads(prime_share, [(packages[k::shares],) for k in range(shares)], RunControl(0, None))
    return len(packages)


# --------------------------------------------------------------------------- conn mode

def conn_client(target: Target, workload: Workload, client: int, control: RunControl,
                stats: ClientStats) -> None:
    """One conn-mode client: a fresh connection, setup and one get-pr per request."""
    i = 0
    while control.more(i):
        package, checksum, request = workload.next_request(client, i)
        started = time.perf_counter()
        with open_blocking(target) as sock:
            try:
                sock.sendall(SETUP + request)   # one segment: setup may be pipelined
                line = read_line(sock, bytearray())
            except ConnectionError:
                stats.errors += 1
            else:
                stats.record(time.perf_counter() - started, package, checksum, line)
        i += 1


def run_conn_mode(target: Target, workload: Workload, control: RunControl,
                  stats: Sequence[ClientStats]) -> float:
    """Timed conn-mode phase; returns its duration in seconds."""
    started = time.perf_counter()
    control.start()
    run_threads(conn_client, [(target, workload, c, control, s) for c, s in enumerate(stats)],
                control)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- persistent modes

class ReplyProtocol(asyncio.Protocol):
    """One persistent connection with at most one request outstanding.

    A bare Protocol and a future per request cost the generator far less CPU than
    StreamReader.readline() + drain(); on a small machine every cycle the
    generator saves is one the server under test can use.
    """

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self._buffer = bytearray()
        self._waiter: Optional[asyncio.Future] = None
        self._lost: Optional[Exception] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """A reply may arrive in pieces; the waiter gets it once the line is complete."""
        self._buffer += data
        if self._waiter is not None and not self._waiter.done():
            line = self._take_line()
            if line is not None:
                self._waiter.set_result(line)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """Fail the pending request, and every later one, with ConnectionError."""
        self._lost = ConnectionError("connection closed by the server%s"
                                     % (": %s" % exc if exc else ""))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def _take_line(self) -> Optional[bytes]:
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line

    async def ask(self, request: bytes) -> bytes:
        """Send one request and wait for its reply line (ConnectionError if closed)."""
        if self._lost is not None:
            raise self._lost
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_persistent(target: Target) -> ReplyProtocol:
    """Connect and send the setup (the server answers nothing to it)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, target.sockaddr), REPLY_TIMEOUT_S)
        if target.family == socket.AF_UNIX:
            _, protocol = await loop.create_unix_connection(ReplyProtocol, sock=sock)
        else:   # asyncio sets TCP_NODELAY on TCP transports itself
            _, protocol = await loop.create_connection(ReplyProtocol, sock=sock)
    except (OSError, asyncio.TimeoutError) as exc:
        sock.close()
        raise BenchError("cannot connect to %s: %s" % (target.text, exc or "timed out")) from exc
    protocol.transport.write(SETUP)
    return protocol


async def persistent_client(target: Target, workload: Workload, client: int,
                            control: RunControl, stats: ClientStats,
                            connection: ReplyProtocol) -> None:
    """One client on one connection; reconnects after the server closed it.  Paced
    (``control.interval``), request ``i`` is due at a fixed time, and its latency counts
    from then: a late answer delays the next request, whose wait is counted too."""
    i = 0
    first = time.perf_counter() + control.interval * random.random()     # clients spread out
    try:
        while control.more(i):
            package, checksum, request = workload.next_request(client, i)
            started = time.perf_counter()
            if control.interval:
                due = first + i * control.interval
                if due > started:
                    await asyncio.sleep(due - started)
                started = due
            try:
                line = await connection.ask(request)
            except ConnectionError:
                stats.errors += 1
                ok = False
            else:
                ok = stats.record(time.perf_counter() - started, package, checksum, line)
            if not ok:          # an invoke-error or a lost connection: start afresh
                connection.close()
                connection = await open_persistent(target)
            i += 1
    finally:
        connection.close()


async def _until_done_or_silent(task: asyncio.Future, progress: Callable[[], int]) -> None:
    """Await ``task``; fail the run if no request completes for REPLY_TIMEOUT_S.

    One watchdog instead of a timeout per request keeps timers out of the hot path.
    """
    loop = asyncio.get_running_loop()
    last, since = progress(), loop.time()
    while not task.done():
        await asyncio.wait({task}, timeout=1.0)
        if progress() != last:
            last, since = progress(), loop.time()
        elif not task.done() and loop.time() - since > REPLY_TIMEOUT_S:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise BenchError("no reply within %d s" % REPLY_TIMEOUT_S)
    task.result()


async def run_persistent_mode(target: Target, workload: Workload, control: RunControl,
                              stats: Sequence[ClientStats]) -> float:
    """Timed phase of new/hit/mixed; connections are opened before the clock starts."""
    connections = await asyncio.gather(*(open_persistent(target) for _ in stats))
    started = time.perf_counter()
    control.start()
    clients = asyncio.gather(*(persistent_client(target, workload, c, control, s, conn)
                               for c, (s, conn) in enumerate(zip(stats, connections))))
    await _until_done_or_silent(clients, lambda: sum(len(s.latencies) + s.errors for s in stats))
    return time.perf_counter() - started


# --------------------------------------------------------------------------- main

def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line; per-mode defaults filled in."""
    parser = argparse.ArgumentParser(
        description="get-pr load generator speaking PRSERVICE 1.0 directly",
        epilog="Modes: new = allocation per request; hit = lookups (primed); mixed = every "
               "4th request new; conn = new connection per request (primed).")
    parser.add_argument("address", help="HOST:PORT, [V6ADDR]:PORT or unix:///path")
    parser.add_argument("--mode", default="new", choices=MODES)
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS,
                        help="concurrent connections, one request outstanding each (default 32)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help="requests per client (default 200)")
    amount.add_argument("--duration", type=float, default=None,
                        help="run every client for this many seconds instead")
    parser.add_argument("--packages", type=int, default=None,
                        help="distinct packages (default 8 for new/mixed, 256 for hit/conn)")
    parser.add_argument("--package", default=None,
                        help="send every request to this one package (--packages is then 1)")
    parser.add_argument("--prefix", default="pkg", help="package names <prefix><n>-1.0-r0")
    parser.add_argument("--pkgarch", default="core2-64")
    parser.add_argument("--history", action="store_true", help='send "history": true')
    parser.add_argument("--rate", type=float, default=None,
                        help="requests per second in all, paced over the clients (each request due at a fixed "
                             "time, its latency counted from then); default: each client asks again at once")
    options = parser.parse_args(argv)
    if options.package is not None:
        if options.packages not in (None, 1):
            parser.error("--package pins one package; it does not go with --packages")
        options.packages = 1
    if options.packages is None:
        options.packages = DEFAULT_PACKAGES[options.mode]
    if options.clients < 1 or options.packages < 1 or options.requests < 1:
        parser.error("--clients, --packages and --requests must be >= 1")
    if options.duration is not None and options.duration <= 0:
        parser.error("--duration must be > 0")
    if options.rate is not None and (options.rate <= 0 or options.mode == "conn"):
        parser.error("--rate must be > 0, and paces new, hit and mixed only")
    return options


def run(options: argparse.Namespace) -> Dict[str, Any]:
    """Prime if the mode needs it, run the timed phase, return the summary."""
    target = parse_address(options.address)
    workload = Workload(options.mode, options.packages, options.prefix, options.pkgarch,
                        options.history, os.urandom(6).hex(), options.package)
    primed = prime(target, workload, options.clients) if options.mode in PRIMED_MODES else 0
    control = RunControl(options.requests, options.duration,
                         options.clients / options.rate if options.rate else 0.0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, control.stop)
    stats = [ClientStats() for _ in range(options.clients)]
    if options.mode == "conn":
        seconds = run_conn_mode(target, workload, control, stats)
    else:
        seconds = asyncio.run(run_persistent_mode(target, workload, control, stats))
    return summarize(options, stats, seconds, primed)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run and print the JSON line; the exit status tells CI whether the server was right."""
    options = parse_arguments(argv)
    try:
        result = run(options)
    except (BenchError, OSError, ValueError) as exc:
        print("prbench: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 2 if result["errors"] or result["duplicate_values"] else 0


if __name__ == "__main__":
    sys.exit(main())
