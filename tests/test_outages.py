"""Outages of the servers a process is a client of: one line when one starts, one
when it ends, whatever the retries in between (``prserv.asyncrpc.outage``).

The rule itself is checked on a clock the test sets; the client layer against a
real server's closed port, then the same port serving again; the upstream pool of
a real downstream server against its upstream stopped, replaced by a peer that
closes every connection, then restarted.  (A mirror's follower: tests/test_mirror.py.)
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from prserv.asyncrpc.outage import OutageLog
from prserv.client import PRAsyncClient

from peers import CLOSE, ScriptedPeer

V, A = "zlib-1.3-r0", "core2-64"
LOGGER = "BitBake.PRserv"


def lines(caplog, prefix):
    """(level, message) of the records of ``LOGGER`` whose message starts with ``prefix``."""
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == LOGGER and r.getMessage().startswith(prefix)]


def test_an_outage_is_logged_when_it_starts_once_a_minute_while_it_lasts_and_when_it_ends(caplog):
    now = [0.0]
    log = OutageLog(logging.getLogger("test.outage"), "upstream", "; retrying", clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="test.outage")
    for moment in (0, 10, 59.9, 60, 61, 119.9, 120, 130):
        now[0] = moment
        log.failed("h:1", "refused")
    log.failed("h:2", "garbage", nonsense=True)            # another address: an outage of its own
    assert (log.is_down("h:1"), log.down_since("h:1"), log.is_down("h:3")) == (True, 0.0, False)
    now[0] = 131.5
    log.recovered("h:1")
    log.recovered("h:1")                                     # over already: nothing
    log.recovered("h:3")                                     # never down: nothing
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "upstream h:1 is unreachable: refused; retrying"),
        ("DEBUG", "upstream h:1 is unreachable: refused (failure 2 of this outage)"),
        ("DEBUG", "upstream h:1 is unreachable: refused (failure 3 of this outage)"),
        ("WARNING", "upstream h:1 is unreachable: refused (for 60 s, 4 failures so far); retrying"),
        ("DEBUG", "upstream h:1 is unreachable: refused (failure 5 of this outage)"),
        ("DEBUG", "upstream h:1 is unreachable: refused (failure 6 of this outage)"),
        ("WARNING", "upstream h:1 is unreachable: refused (for 120 s, 7 failures so far); retrying"),
        ("DEBUG", "upstream h:1 is unreachable: refused (failure 8 of this outage)"),
        ("ERROR", "upstream h:2 answered nonsense: garbage; retrying"),
        ("INFO", "upstream h:1 is back after 131.5 s (8 failures)"),
    ]
    assert (log.is_down("h:1"), log.is_down("h:2")) == (False, True)


async def test_a_client_retrying_a_closed_port_logs_the_outage_once_and_its_end(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    await server.start_serving()
    address = server.address
    await server.stop_serving()                              # nothing listens there now
    first, second = PRAsyncClient(timeout=5), PRAsyncClient(timeout=5)
    try:
        for client in (first, second):                      # two clients of one process
            await client.connect_address(address)
        for client in (first, second, first):
            with pytest.raises(ConnectionError):
                await client.ping()
        server = prserv.create_server(address, str(tmp_path / "pr.sqlite3"))
        await server.start_serving()
        try:
            assert await second.ping() == {"alive": True}
            assert await first.ping() == {"alive": True}
        finally:
            await server.stop_serving()
    finally:
        await first.close()
        await second.close()
    outage = lines(caplog, "server %s " % address)
    assert len(outage) == 4, outage
    assert outage[0][0] == "WARNING" and outage[0][1].startswith("server %s is unreachable: " % address)
    assert outage[1:3] == [("DEBUG", "%s (failure %d of this outage)" % (outage[0][1], n)) for n in (2, 3)]
    assert outage[3][0] == "INFO"
    assert re.fullmatch(r"server %s is back after \d+\.\d s \(3 failures\)" % re.escape(address), outage[3][1])
    attempts = lines(caplog, "Error talking to server %s " % address)
    assert [message.split("(")[1].split(")")[0] for _, message in attempts] == [
        "attempt %d of 4" % n for n in (1, 2, 3, 4)] * 3
    assert {level for level, _ in attempts} == {"DEBUG"}


async def test_an_upstream_down_and_back_is_logged_once_each_way(tmp_path, start_server, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    upstream = prserv.create_server("127.0.0.1:0", str(tmp_path / "u.sqlite3"))
    await upstream.start_serving()
    address = upstream.address
    port = int(address.rsplit(":", 1)[1])
    server = await start_server(db="d.sqlite3", upstream=address)
    peer = ScriptedPeer(lambda request, n: CLOSE)
    client = await prserv.create_async_client(server.address)
    try:
        assert await client.getPR(V, A, "before") == "0"
        await upstream.stop_serving()
        await peer.start(port)                 # a server that closes every connection at once
        await ask_until(client, lambda: peer.connections >= 8)      # two rounds of 4 attempts
        await peer.stop()
        upstream = prserv.create_server(address, str(tmp_path / "u.sqlite3"))
        await upstream.start_serving()
        ok = (await client.get_stats())["upstream"]["ok"]
        await ask_until(client, lambda: False, lambda stats: stats["upstream"]["ok"] > ok)
    finally:
        await client.close()
        await upstream.stop_serving()
    records = [r for r in caplog.records if r.name == LOGGER]
    problems = [(r.levelname, r.getMessage()) for r in records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, problems
    assert problems[0][0] == "WARNING"
    assert problems[0][1].startswith("upstream %s is unreachable: " % address), problems
    assert problems[0][1].endswith("; retrying every 1 s"), problems
    back = lines(caplog, "upstream %s is back after " % address)
    assert [level for level, _ in back] == ["INFO"]
    attempts = {r.levelname for r in records if r.getMessage().startswith("Error talking to server")}
    assert attempts == {"DEBUG"}


async def ask_until(client, condition, on_stats=None, timeout=20.0):
    """Ask the downstream server for new values (each may need its upstream) until
    ``condition()`` holds, or ``on_stats(get-stats answer)`` does."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        try:
            await client.getPR(V, A, "asked-%d-%d" % (id(condition), n))
        except InvokeError:
            pass
        if condition() or (on_stats is not None and on_stats(await client.get_stats())):
            return
        assert time.monotonic() < deadline, "not within %g s" % timeout
        await asyncio.sleep(0.05)
