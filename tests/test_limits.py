"""Connection limits, timeouts, graceful shutdown and log reopening (asyncrpc.limits,
asyncrpc.lifecycle, asyncrpc.process, the daemon's signal handling: runtime.reload)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import sqlite3
import time
from typing import List

import pytest

import prserv
from prserv.asyncrpc.limits import Limits
from processes import start_process, status_kib
from wire import SETUP, RawConnection, frame

V, A = "busybox-1.36.1-r0", "core2-64"
GET = {"get-pr": {"version": V, "pkgarch": A, "checksum": "c0"}}


async def assert_served(address: str) -> None:
    """Another client is still answered correctly."""
    async with await prserv.create_async_client(address) as client:
        assert await client.getPR(V, A, "c0") == "0"


# --------------------------------------------------------------------------- timeouts

async def test_connection_without_setup_is_closed_after_the_handshake_timeout(start_server, caplog):
    server = await start_server(limits=Limits(handshake_timeout=0.3))
    slow = await RawConnection.open(server.address)
    await slow.send("PRSERVICE 1.0\n")                 # and never the rest
    started = time.monotonic()
    await slow.expect_closed()
    assert 0.3 <= time.monotonic() - started < 3
    assert "no connection setup within 0.3 s (handshake_timeout)" in caplog.text
    await assert_served(server.address)


async def test_silent_client_is_closed_after_the_idle_timeout_and_busy_one_is_not(start_server, caplog):
    server = await start_server(limits=Limits(idle_timeout=0.4))
    idle = await RawConnection.open(server.address, SETUP)
    busy = await RawConnection.open(server.address, SETUP)
    started = time.monotonic()
    closed = asyncio.get_running_loop().create_task(idle.expect_closed())
    while not closed.done():                          # the busy client keeps talking meanwhile
        assert await busy.request(GET) == {"value": "0"}
        await asyncio.sleep(0.05)
    await closed
    assert 0.4 <= time.monotonic() - started < 3
    assert await busy.request(GET) == {"value": "0"}  # never idle long enough
    assert "idle for more than 0.4 s (idle_timeout)" in caplog.text
    await busy.close()


async def test_zero_timeouts_mean_none(start_server):
    server = await start_server(limits=Limits(idle_timeout=0, handshake_timeout=0))
    assert server.limits.watch_interval() == 0.0
    conn = await RawConnection.open(server.address, SETUP)
    assert await conn.request(GET) == {"value": "0"}
    await conn.close()


# --------------------------------------------------------------------------- sizes and counts

async def test_a_full_server_closes_its_longest_idle_connection_to_admit_a_new_one(start_server, caplog):
    caplog.set_level(logging.INFO)
    server = await start_server(limits=Limits(max_connections=3))
    held = [await RawConnection.open(server.address, SETUP) for _ in range(3)]
    for conn in held:                                   # held[0] is now the longest idle
        assert await conn.request({"ping": {}}) == {"alive": True}
    newcomer = await RawConnection.open(server.address, SETUP)
    assert await newcomer.request(GET) == {"value": "0"}
    await held[0].expect_closed()
    assert "closed to admit a new connection, the longest idle of 3 (max_connections)" in caplog.text
    assert await held[1].request({"ping": {}}) == {"alive": True}
    for conn in held[1:] + [newcomer]:
        await conn.close()


async def test_a_full_server_with_no_idle_connection_refuses_with_an_invoke_error(start_server):
    got_request, release = asyncio.Event(), asyncio.Event()
    upstream = await _held_upstream(got_request, release)
    server = await start_server(upstream="127.0.0.1:%d" % upstream.sockets[0].getsockname()[1],
                                limits=Limits(max_connections=2))
    busy = [await RawConnection.open(server.address, SETUP) for _ in range(2)]
    try:
        for n, conn in enumerate(busy):                 # each waits for the upstream
            await conn.send(frame(json.dumps({"get-pr": {"version": V, "pkgarch": A, "checksum": "b%d" % n}})))
        await asyncio.wait_for(got_request.wait(), 10)
        while not all(session.connection.busy for session in server.sessions):
            await asyncio.sleep(0.01)
        refused = await RawConnection.open(server.address, SETUP)
        assert await refused.request(GET) == {"invoke-error": {
            "message": "server full: 2 connections open, none idle (max_connections)"}}
        await refused.expect_closed()
        release.set()
        for conn in busy:
            assert "value" in json.loads(await conn.recv_raw())     # their answers still come
            await conn.close()
    finally:
        release.set()
        upstream.close()


async def test_a_low_open_file_limit_caps_max_connections(tmp_path):
    """200 clients against a server allowed 300 open files: it admits at most 172 at a
    time (300 less 128 kept), closing the longest idle to admit more, and accepting
    never fails for want of a file descriptor."""
    process, address, lines = start_process(tmp_path, "--max-connections-per-address", "0",
                                            open_files=300)
    conns: List[RawConnection] = []
    try:
        for _ in range(200):
            conn = await RawConnection.open(address, SETUP)
            assert await conn.request({"ping": {}}) == {"alive": True}
            conns.append(conn)
        for conn in conns[:28]:                            # the longest idle: 200 - 172 of them
            await conn.expect_closed()
        assert await conns[28].request({"ping": {}}) == {"alive": True}
        assert await conns[-1].request(GET) == {"value": "0"}
        log = "".join(lines)
        assert "max_connections 10000: 172, the open-file limit (300) less 128" in log
        assert "out of system resource" not in log
    finally:
        for conn in conns:
            conn.writer.close()
        process.terminate()
        assert process.wait(20) == 0


@pytest.mark.parametrize("setup", [
    "PRSERVICE " + "1" * 5000 + "\n\n",
    "PRSERVICE 1.0\nx-padding: " + "p" * 5000 + "\n\n",
])
async def test_overlong_setup_line_closes_without_reply(setup, start_server, caplog):
    server = await start_server(limits=Limits(max_handshake_line=4096))
    conn = await RawConnection.open(server.address)
    await conn.send(setup)
    await conn.expect_closed()
    assert "setup line longer than 4096 bytes" in caplog.text
    await assert_served(server.address)


async def test_chunk_stream_over_the_message_limit_gets_an_invoke_error(start_server):
    server = await start_server(limits=Limits(max_message=64 * 1024))
    conn = await RawConnection.open(server.address, SETUP)
    huge = json.dumps({"import-one": {"version": V, "pkgarch": A, "checksum": "k" * 100000, "value": "1"}})
    await conn.send(frame(huge))
    answer = json.loads(await conn.recv_raw())
    assert answer == {"invoke-error": {"message": "chunk stream longer than 65536 characters"}}
    await conn.expect_closed()
    await assert_served(server.address)


# --------------------------------------------------------------------------- memory, file limit

async def test_thousand_idle_connections_and_a_10mb_line_keep_memory_bounded(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("hard open-file limit %d is below 1,200" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    process, address, _ = start_process(tmp_path, "--max-connections-per-address", "0")
    conns: List[RawConnection] = []
    try:
        with open("/proc/%d/limits" % process.pid) as limits:
            line = next(line for line in limits if line.startswith("Max open files"))
        assert line.split()[3] == line.split()[4]                     # soft raised to hard
        conns = list(await asyncio.gather(*(RawConnection.open(address, SETUP) for _ in range(1000))))
        assert await conns[-1].request({"ping": {}}) == {"alive": True}
        garbage = await RawConnection.open(address, SETUP)
        await garbage.send("x" * (10 * 1024 * 1024) + "\n")
        answer = json.loads(await garbage.recv_raw())
        assert answer == {"invoke-error": {"message": "line longer than 1048576 bytes"}}
        await garbage.expect_closed()
        assert await conns[0].request(GET) == {"value": "0"}
        peak = status_kib(process.pid, "VmHWM")
        assert peak < 200 * 1024, "peak RSS %d KiB" % peak
    finally:
        for conn in conns:
            conn.writer.close()
        process.terminate()
        assert process.wait(20) == 0
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------- shutdown

async def _held_upstream(got_request: asyncio.Event, release: asyncio.Event):
    """A fake upstream that knows nothing and answers only once ``release`` is set."""
    async def handle(reader, writer) -> None:
        while (await reader.readline()).strip():
            pass
        while True:
            line = await reader.readline()
            if not line:
                break
            request = json.loads(line)
            got_request.set()
            await release.wait()
            value = False if "test-package" in request else None
            writer.write((json.dumps({"value": value}) + "\n").encode())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_sigterm_finishes_the_request_in_flight_then_exits_0(tmp_path):
    """Stop accepting, answer what is in hand, commit, close, remove pidfile and socket."""
    got_request, release = asyncio.Event(), asyncio.Event()
    upstream = await _held_upstream(got_request, release)
    upstream_address = "127.0.0.1:%d" % upstream.sockets[0].getsockname()[1]
    sock = str(tmp_path / "pr.sock")
    pidfile = str(tmp_path / "pr.pid")
    process, address, lines = start_process(tmp_path, "-u", upstream_address, "--bind", "unix://" + sock,
                                             "--pidfile", pidfile, "--loglevel", "DEBUG")
    try:
        conn = await RawConnection.open(address, SETUP)
        await conn.send(frame(json.dumps({"get-pr": {"version": V, "pkgarch": A, "checksum": "new"}})))
        await asyncio.wait_for(got_request.wait(), 10)              # the request is in flight
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not any("got signal 15" in line for line in lines):
            assert time.monotonic() < deadline, "no signal line in %r" % lines
            await asyncio.sleep(0.02)
        host, port = address.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):                 # no longer accepting
            await asyncio.open_connection(host, int(port))
        release.set()
        assert json.loads(await conn.recv_raw()) == {"value": "0"}
        await conn.expect_closed()
        assert await asyncio.get_running_loop().run_in_executor(None, process.wait, 20) == 0
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
        upstream.close()
    with sqlite3.connect(str(tmp_path / "pr.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT checksum, value FROM PRMAIN").fetchall() == [("new", "0")]
    assert not os.path.exists(sock) and not os.path.exists(pidfile)
    assert any("connection closed after 1 request" in line for line in lines)


async def test_shutdown_timeout_bounds_the_wait_for_a_stuck_request(tmp_path, start_server, caplog):
    got_request, release = asyncio.Event(), asyncio.Event()
    upstream = await _held_upstream(got_request, release)
    upstream_address = "127.0.0.1:%d" % upstream.sockets[0].getsockname()[1]
    server = await start_server(upstream=upstream_address, limits=Limits(shutdown_timeout=0.3))
    conn = await RawConnection.open(server.address, SETUP)
    await conn.send(frame(json.dumps({"get-pr": {"version": V, "pkgarch": A, "checksum": "new"}})))
    await asyncio.wait_for(got_request.wait(), 10)
    started = time.monotonic()
    await server.stop_serving()
    assert 0.3 <= time.monotonic() - started < 3
    assert "1 session(s) still busy after 0.3 s (shutdown_timeout): cancelled" in caplog.text
    await conn.expect_closed()
    release.set()
    upstream.close()


async def test_idle_sessions_end_at_once_on_shutdown(start_server):
    server = await start_server(limits=Limits(shutdown_timeout=30))
    conns = [await RawConnection.open(server.address, SETUP) for _ in range(5)]
    for conn in conns:
        assert await conn.request(GET) == {"value": "0"}
    pending = await RawConnection.open(server.address)             # still in its setup
    started = time.monotonic()
    await server.stop_serving()
    assert time.monotonic() - started < 2
    for conn in conns + [pending]:
        await conn.expect_closed()


def test_sighup_reopens_the_log_file(tmp_path):
    log = tmp_path / "prserv.log"
    process, _, _ = start_process(tmp_path, "-l", str(log))
    try:
        rotated = tmp_path / "prserv.log.1"
        os.rename(str(log), str(rotated))
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (log.exists() and "SIGHUP: reopened" in log.read_text()):
            assert time.monotonic() < deadline, "the log was not reopened"
            time.sleep(0.02)
        assert "Started PRServer" in rotated.read_text()
    finally:
        process.terminate()
        assert process.wait(20) == 0


# --------------------------------------------------------------------------- logging

async def test_one_info_line_per_connection_with_peer_and_request_count(start_server, caplog):
    caplog.set_level(logging.INFO, logger="BitBake.PRserv")
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    for _ in range(3):
        assert await conn.request(GET) == {"value": "0"}
    port = conn.writer.get_extra_info("sockname")[1]
    await conn.close()
    while server.sessions:                            # the server notices the close
        await asyncio.sleep(0.01)
    await server.stop_serving()
    lines = [r.getMessage() for r in caplog.records if ":%d]" % port in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("[Client 127.0.0.1:%d] connection closed after 3 requests in " % port)
    assert lines[0].endswith(": closed by the client")
