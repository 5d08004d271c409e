"""Upstream chaining, read-only publishing servers, and upstream faults (issue 3).

Chains run as separate server processes where the behaviour crosses process
boundaries (3 levels, shared files, killing an upstream); single-process tests use
in-process servers plus a relay or a scripted upstream.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from peers import SILENT, Relay, ScriptedPeer
from wire import SETUP, RawConnection, frame, parse_raw
from conftest import ENGINES


@pytest.fixture(params=ENGINES)
def engine_kind(request) -> str:
    """Every test of this module on a SQLite file and on a PostgreSQL database."""
    return request.param

PKG, ARCH = "glibc-2.39-r0", "armv8a"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def client(address):
    return prserv.create_client(address)


async def aclient(address):
    return await prserv.create_async_client(address)


def get(address, checksum, history=False, version=PKG):
    with client(address) as c:
        return c.getPR(version, ARCH, checksum, history)


# --------------------------------------------------------------------------- chains

@pytest.fixture
def chain(tmp_path, process_servers):
    """Z <- A <- B in three processes, and R: read-only on B's file, upstream A."""
    z = process_servers("127.0.0.1:0", str(tmp_path / "z.sqlite3"))
    a = process_servers("127.0.0.1:0", str(tmp_path / "a.sqlite3"), upstream=z.address)
    b = process_servers("127.0.0.1:0", str(tmp_path / "b.sqlite3"), upstream=a.address)
    r = process_servers("127.0.0.1:0", str(tmp_path / "b.sqlite3"), upstream=a.address, read_only=True)
    return z.address, a.address, b.address, r.address


def test_three_levels_no_history(chain):
    z, a, b, r = chain
    assert [get(z, "z0"), get(z, "z1")] == ["0", "1"]
    assert [get(a, "z1"), get(a, "a1"), get(a, "a2")] == ["1", "1.0", "1.1"]
    assert [get(b, "b1"), get(b, "b2"), get(b, "a1")] == ["1.1.0", "1.1.1", "1.0"]
    assert get(b, "z0") == "1.1.2"                  # A never stored z0
    assert get(z, "z2") == "2"
    assert get(a, "a1") == "2.0"                    # 1.2 < Z's max 2, unknown to Z
    assert [get(b, "b1"), get(b, "b3")] == ["2.0.0", "2.0.1"]
    assert [get(b, "b1", history=True), get(b, "b2", history=True)] == ["1.1.0", "1.1.1"]
    # Read-only with an upstream: same decisions, nothing stored.
    assert [get(r, "r1"), get(r, "r1"), get(r, "b2")] == ["2.0.2", "2.0.2", "2.0.2"]
    with client(r) as c:
        assert c.test_pr(PKG, ARCH, "r1") is None
        assert c.max_package_pr(PKG, ARCH) == "2.0.1"
        assert c.importone(PKG, ARCH, "r1", "7") is None
    assert get(b, "b4") == "2.0.2"                  # B's next value is what R showed
    with client(r) as c:
        assert c.max_package_pr(PKG, ARCH) == "2.0.2"   # R sees B's commit at once


def test_three_levels_history(chain):
    z, a, b, r = chain
    assert [get(z, "z0", True), get(z, "z1", True)] == ["0", "1"]
    assert [get(a, "z1", True), get(a, "a1", True), get(a, "a2", True)] == ["1", "1.0", "1.1"]
    assert [get(b, "b1", True), get(b, "b2", True), get(b, "b1", True)] == ["1.1.0", "1.1.1", "1.1.0"]
    assert get(z, "z2", True) == "2"
    assert get(a, "a1", True) == "1.0"              # history: first value, upstream unused
    assert get(a, "a1") == "2.0"                    # no history: above Z's new max
    assert get(b, "b1", True) == "1.1.0"
    assert get(b, "b1") == "2.0.0"
    assert get(b, "b1", True) == "1.1.0"
    assert get(r, "b1", True) == "1.1.0"
    assert get(r, "new", True) == "2.0.1"


@pytest.mark.parametrize("history", [False, True])
def test_concurrent_allocation_at_every_level(history, chain):
    z, a, b, _ = chain
    offset = 32 if history else 0
    if history:                                     # start where the other mode would end
        for level in (z, a, b):
            for n in range(32):
                get(level, "warm-%d" % n)

    async def burst(address, tag):
        clients = [await aclient(address) for _ in range(32)]
        try:
            return await asyncio.gather(*(c.getPR(PKG, ARCH, "%s-%d" % (tag, n), history)
                                          for n, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.close()

    top = asyncio.run(burst(z, "z"))
    assert sorted(top, key=int) == [str(offset + n) for n in range(32)]
    z_max = str(offset + 31)
    middle = asyncio.run(burst(a, "a"))
    assert sorted(middle) == sorted("%s.%d" % (z_max, n) for n in range(32))
    bottom = asyncio.run(burst(b, "b"))
    assert sorted(bottom) == sorted("%s.31.%d" % (z_max, n) for n in range(32))


async def test_d9_allocation_atomic_across_upstream_waits(start_server):
    upstream = await start_server(db="u.sqlite3")
    relay = Relay(upstream.address, reply_delay=0.3)
    server = await start_server(db="b.sqlite3", upstream=await relay.start())
    b, u = await aclient(server.address), await aclient(upstream.address)
    assert [await b.getPR(PKG, ARCH, "c1"), await b.getPR(PKG, ARCH, "c2")] == ["0", "1"]
    assert await u.importone(PKG, ARCH, "u5", "5") == "5"
    b2 = await aclient(server.address)
    results = await asyncio.gather(b.getPR(PKG, ARCH, "c1"), b2.getPR(PKG, ARCH, "c2"))
    assert sorted(results) == ["5.0", "5.1"]
    for c in (b, b2, u):
        await c.close()
    await relay.stop()


async def test_one_package_asks_the_upstream_one_request_at_a_time(start_server):
    """The per-package lock: concurrent get-prs of one package do not interleave their
    upstream questions (each asks exactly what it would alone, in the reference's order)."""
    def answer(request, n):
        return '{"value": "5"}' if "max-package-pr" in request else '{"value": null}'
    stub = ScriptedPeer(answer)
    server = await start_server(upstream=await stub.start())
    async with await aclient(server.address) as setup:
        assert await setup.importone(PKG, ARCH, "c1", "0") == "0"
        assert await setup.importone(PKG, ARCH, "c2", "1") == "1"
    clients = [await aclient(server.address) for _ in range(2)]
    results = await asyncio.gather(clients[0].getPR(PKG, ARCH, "c1"), clients[1].getPR(PKG, ARCH, "c2"))
    assert results == ["5.0", "5.1"]
    assert [next(iter(r)) for r in stub.requests] == ["max-package-pr", "test-pr", "max-package-pr"]
    assert stub.requests[1]["test-pr"]["checksum"] == "c1"
    for c in clients:
        await c.close()
    await stub.stop()


async def test_one_small_pool_of_upstream_connections(start_server):
    upstream = await start_server(db="u.sqlite3")
    relay = Relay(upstream.address)
    server = await start_server(db="b.sqlite3", upstream=await relay.start())
    clients = [await aclient(server.address) for _ in range(40)]
    values = await asyncio.gather(*(c.getPR("pkg%d" % n, ARCH, "c") for n, c in enumerate(clients)))
    assert values == ["0"] * 40
    assert 1 <= relay.connections <= 4
    relay.drop_connections()                       # the upstream connections break...
    values = await asyncio.gather(*(c.getPR("pkg%d" % n, ARCH, "d") for n, c in enumerate(clients)))
    assert values == ["1"] * 40                    # ...and are re-opened transparently
    assert relay.connections <= 8
    for c in clients:
        await c.close()
    await relay.stop()


# --------------------------------------------------------------------------- shared files

def test_read_only_servers_see_each_commit_on_their_next_request(tmp_path, process_servers):
    top = process_servers("127.0.0.1:0", str(tmp_path / "top.sqlite3"))
    shared = str(tmp_path / "shared.sqlite3")
    writer = process_servers("127.0.0.1:0", shared, upstream=top.address)
    plain_reader = process_servers("127.0.0.1:0", shared, read_only=True)
    chained_reader = process_servers("127.0.0.1:0", shared, upstream=top.address, read_only=True)
    assert get(top.address, "t0") == "0"
    with client(writer.address) as w, client(plain_reader.address) as r1, \
            client(chained_reader.address) as r2:
        for n in range(20):
            value = w.getPR(PKG, ARCH, "w%d" % n)
            assert value == "0.%d" % n
            for r in (r1, r2):
                assert r.test_pr(PKG, ARCH, "w%d" % n) == value
                assert r.max_package_pr(PKG, ARCH) == value
        assert r2.getPR(PKG, ARCH, "new") == "0.20"
        assert r1.getPR(PKG, ARCH, "new") == "0.20"     # local numbering of the same max
        assert r2.test_pr(PKG, ARCH, "new") is None
        assert w.getPR(PKG, ARCH, "w3") == "0.20"        # no history: bumped above the max
        assert r1.test_pr(PKG, ARCH, "w3") == "0.20" and r2.max_package_pr(PKG, ARCH) == "0.20"


def test_two_writers_on_one_file_with_an_upstream_stay_distinct(tmp_path, process_servers):
    top = process_servers("127.0.0.1:0", str(tmp_path / "top.sqlite3"))
    shared = str(tmp_path / "shared.sqlite3")
    w1 = process_servers("127.0.0.1:0", shared, upstream=top.address)
    w2 = process_servers("127.0.0.1:0", shared, upstream=top.address)
    assert get(top.address, "t0") == "0"

    async def burst():
        clients = [await aclient(w.address) for w in (w1, w2) for _ in range(16)]
        try:
            return await asyncio.gather(*(c.getPR(PKG, ARCH, "n%d" % n) for n, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.close()

    values = asyncio.run(burst())
    assert sorted(values) == sorted("0.%d" % n for n in range(32))


# --------------------------------------------------------------------------- faults

def test_upstream_killed_and_restarted(tmp_path, process_servers):
    adb = str(tmp_path / "a.sqlite3")
    a = process_servers("127.0.0.1:0", adb)
    b = process_servers("127.0.0.1:0", str(tmp_path / "b.sqlite3"), upstream=a.address,
                        upstream_timeout=3)
    assert [get(a.address, "u0"), get(a.address, "u1")] == ["0", "1"]
    assert [get(b.address, "u1"), get(b.address, "k1"), get(b.address, "k2")] == ["1", "1.0", "1.1"]
    a.process.terminate()
    a.process.join(10)
    with client(b.address) as c:
        assert c.test_pr(PKG, ARCH, "k1") == "1.0"
        assert c.test_package(PKG, ARCH) is True
        assert c.max_package_pr(PKG, ARCH) == "1.1"
        assert c.getPR(PKG, ARCH, "k1", True) == "1.0"
        assert c.getPR(PKG, ARCH, "k2") == "1.1"
        assert c.getPR(PKG, ARCH, "k1") == "1.2"   # degraded: never below what B handed out
        started = time.monotonic()
        with pytest.raises(InvokeError) as info:
            c.getPR(PKG, ARCH, "fresh")
        assert time.monotonic() - started < 10
        assert a.address in str(info.value) and "unavailable" in str(info.value)
        assert c.test_pr(PKG, ARCH, "fresh") is None          # nothing half-written
        assert c.export(None, None, None, False, True)[1].__len__() == 4
    port = int(a.address.rsplit(":", 1)[1])
    process_servers("127.0.0.1:%d" % port, adb)                # back, same port and data
    assert get(a.address, "u2") == "2"
    deadline = time.monotonic() + 15
    while True:                     # the upstream is retried after a short back-off
        try:
            value = get(b.address, "fresh")
            break
        except InvokeError:
            assert time.monotonic() < deadline, "service did not resume"
    assert value == "2.0"


@pytest.mark.parametrize("garbage", [
    '{"value": 5}', '{"value": "1\'"}', '{"value": ["1"]}', '{"valu": "1"}', '{"value": "01"}', "[]",
])
async def test_upstream_answering_garbage_stores_nothing(garbage, start_server):
    stub = ScriptedPeer(lambda request, n: garbage)
    server = await start_server(upstream=await stub.start())
    async with await aclient(server.address) as c:
        with pytest.raises(InvokeError) as info:
            await c.getPR(PKG, ARCH, "c")
        assert "upstream 127.0.0.1:" in str(info.value)
        assert await c.export(None, None, None, False, True) == ({}, [])
    await stub.stop()


@pytest.mark.parametrize("command, garbage", [
    ("test-package", '{"value": "yes"}'), ("test-pr", '{"value": 1}'), ("test-pr", '{"value": "1.x"}'),
])
async def test_upstream_garbage_later_in_the_procedure(command, garbage, start_server):
    def answer(request, n):
        if command in request:
            return garbage
        return {"max-package-pr": '{"value": "3"}', "test-package": '{"value": true}'}[next(iter(request))]
    stub = ScriptedPeer(answer)
    server = await start_server(upstream=await stub.start())
    async with await aclient(server.address) as c:
        with pytest.raises(InvokeError) as info:
            await c.getPR(PKG, ARCH, "c")
        assert command in str(info.value)
        assert await c.test_package(PKG, ARCH) is False
    await stub.stop()


async def test_upstream_invoke_error_is_forwarded_with_its_text(start_server):
    stub = ScriptedPeer(lambda request, n: '{"invoke-error": {"message": "stub upstream: request refused"}}')
    address = await stub.start()
    server = await start_server(upstream=address)
    async with await aclient(server.address) as c:
        with pytest.raises(InvokeError) as info:
            await c.getPR(PKG, ARCH, "c")
    assert address in str(info.value) and "stub upstream: request refused" in str(info.value)
    await stub.stop()


async def test_silent_upstream_gives_an_error_within_the_timeout(start_server):
    stub = ScriptedPeer(lambda request, n: SILENT)
    server = await start_server(upstream=await stub.start(), upstream_timeout=0.5)
    async with await aclient(server.address) as c:
        started = time.monotonic()
        with pytest.raises(InvokeError) as info:
            await c.getPR(PKG, ARCH, "c")
        assert time.monotonic() - started < 3
        assert "no answer within 0.5 s" in str(info.value)
    async with await aclient(server.address) as c:
        assert await c.importone(PKG, ARCH, "known", "4") == "4"
        assert await c.getPR(PKG, ARCH, "known", True) == "4"      # needs no upstream at all
    await stub.stop()


async def first_request(address: str, request: dict, context: str) -> object:
    """Send ``request`` as a new connection's first, so that the server starts it in
    one of its two eager contexts, and return the answer."""
    if context == "pipelined with the setup":       # already buffered: the session's task
        conn = await RawConnection.open(address, SETUP + frame(json.dumps(request)))
    else:                                           # arrives later: data_received, no task
        conn = await RawConnection.open(address, SETUP)
        assert await conn.request({"ping": {}}) == {"alive": True}
        await conn.send(frame(json.dumps(request)))
    try:
        return parse_raw(await conn.recv_raw())
    finally:
        await conn.close()


@pytest.mark.parametrize("upstream_transport", ["127.0.0.1:0", "ws://127.0.0.1:0"])
@pytest.mark.parametrize("context", ["pipelined with the setup", "after a round trip"])
async def test_upstream_query_and_its_deadline_work_where_a_request_starts(context, upstream_transport,
                                                                           start_server):
    """A request runs up to its first wait in the session's task or in a callback with
    no task; an upstream query and its deadline must work in both, on every Python
    (``asyncio.wait_for`` there failed on 3.12 and 3.13)."""
    top = await start_server(upstream_transport, db="top.sqlite3")
    async with await aclient(top.address) as c:
        assert await c.getPR(PKG, ARCH, "t0") == "0"
    chained = await start_server(db="chained.sqlite3", upstream=top.address)
    silent = ScriptedPeer(lambda request, n: SILENT)
    stuck = await start_server(db="stuck.sqlite3", upstream=await silent.start(), upstream_timeout=0.2)
    known_upstream = {"get-pr": {"version": PKG, "pkgarch": ARCH, "checksum": "t0"}}
    assert await first_request(chained.address, known_upstream, context) == {"value": "0"}
    new_here = {"get-pr": {"version": PKG, "pkgarch": ARCH, "checksum": "c1"}}
    assert await first_request(chained.address, new_here, context) == {"value": "0.0"}
    assert await first_request(stuck.address, new_here, context) == {"invoke-error": {
        "message": "upstream %s unavailable: no answer within 0.2 s" % silent_address(silent)}}
    async with await aclient(stuck.address) as c:               # the server itself is fine
        assert await c.ping() == {"alive": True}
    await silent.stop()


def silent_address(peer: ScriptedPeer) -> str:
    return "127.0.0.1:%d" % peer.server.sockets[0].getsockname()[1]


def test_upstream_timeout_default_is_at_most_ten_seconds(tmp_path):
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "x.sqlite3"), upstream="127.0.0.1:1")
    assert 0 < server.upstream_timeout <= 10


# --------------------------------------------------------------------------- command line

def test_command_line_upstream_from_environment(tmp_path, process_servers):
    top = process_servers("127.0.0.1:0", str(tmp_path / "top.sqlite3"))
    assert get(top.address, "t0") == "0"
    env = dict(os.environ, PRSERV_UPSTREAM=top.address)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bin", "bitbake-prserv"), "--foreground",
         "--address", "127.0.0.1:0", "-f", str(tmp_path / "cli.sqlite3"), "-l", str(tmp_path / "cli.log")],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "upstream %s" % top.address in line
        address = line.split(" on ", 1)[1].split(" ", 1)[0].rstrip(",")
        assert get(address, "local") == "0.0"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
