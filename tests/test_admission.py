"""Connections per address (asyncrpc.admission): at its ``max_connections_per_address``
an address's longest-idle connection is closed to admit its newcomer; the newcomer is
refused only when none is idle, and no other address is touched."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import List

import pytest

import prserv
from prserv.asyncrpc import admission
from prserv.asyncrpc.admission import SETUP_IDLE_SECONDS
from prserv.asyncrpc.limits import Limits
from peers import SILENT, ScriptedPeer
from waiting import until
from wire import SETUP, RawConnection, frame

V, A = "busybox-1.36.1-r0", "core2-64"
GET = {"get-pr": {"version": V, "pkgarch": A, "checksum": "c0"}}
PING = {"ping": {}}
EVICTED = "closing the connection: closed to admit a new connection from the same address"


def held_by(server, host: str) -> int:
    """The connections ``host`` holds on ``server`` (those being closed left out), as the
    sessions show them; the admission's count must be the same."""
    held = [s for s in server.sessions if s.connection.peer_host == host and not s.evicted]
    assert len(server.admission.per_address.get(host, ())) == len(held)
    return len(held)


@pytest.fixture
async def silent_upstream_server(start_server):
    """``await silent_upstream_server(limit)``: (server, upstream) with that
    ``max_connections_per_address`` and an upstream that never answers, so that a get-pr
    for a checksum the server does not know keeps a connection busy (a request in hand)
    until the upstream stops (at the latest before the server does)."""
    stub = ScriptedPeer(lambda request, n: SILENT)
    address = await stub.start()

    async def start(limit: int):
        server = await start_server(upstream=address, upstream_timeout=60,
                                    limits=Limits(max_connections_per_address=limit))
        return server, stub

    yield start
    await stub.stop()


async def make_busy(server, conns: List[RawConnection], tag: str) -> None:
    """Send each of ``conns`` a get-pr only the silent upstream could answer; return once
    the server has every one of them in hand."""
    for n, conn in enumerate(conns):
        request = {"get-pr": {"version": V, "pkgarch": A, "checksum": "%s%d" % (tag, n)}}
        await conn.send(frame(json.dumps(request)))
    names = {"%s:%d" % conn.writer.get_extra_info("sockname")[:2] for conn in conns}
    mine = lambda: [s for s in server.sessions if s.connection.address in names]   # noqa: E731
    await until(lambda: len(mine()) == len(conns) and all(s.connection.busy for s in mine()),
                seen=lambda: [(s.connection.address, s.connection.busy) for s in mine()])


async def answered_within_1s(request):
    started = time.monotonic()
    answer = await asyncio.wait_for(request, 1)
    assert time.monotonic() - started < 1
    return answer


# --------------------------------------------------------------------------- the issue

async def test_a_thousand_idle_connections_from_one_address_do_not_lock_out_a_client_there(
        start_server, caplog):
    """1,000 idle connections from 127.0.0.1, half having sent only the protocol line and
    half nothing, against the default limit of 256: a client on 127.0.0.1 is answered,
    each time by closing one of them."""
    caplog.set_level(logging.INFO, logger="BitBake.PRserv")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)    # both ends are in this process
    if soft != resource.RLIM_INFINITY and soft < 2500:
        if hard != resource.RLIM_INFINITY and hard < 2500:
            pytest.skip("hard open-file limit %d is below 2,500" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (2500, hard))
    hoard: List[RawConnection] = []
    try:
        server = await start_server()
        assert server.limits.max_connections_per_address == 256
        for start in range(0, 1000, 100):           # the listener's backlog is 100
            hoard += await asyncio.gather(*(
                RawConnection.open(server.address, "PRSERVICE 1.0\n" if n % 2 else None)
                for n in range(start, start + 100)))
        await until(lambda: len(server.sessions) == 256, seen=lambda: len(server.sessions))
        assert held_by(server, "127.0.0.1") == 256
        assert not any(session.setup_done for session in server.sessions)
        await asyncio.sleep(SETUP_IDLE_SECONDS)     # the rule: in its setup this long
        first = await prserv.create_async_client(server.address)        # as bitbake's
        for checksum, value in [("c0", "0"), ("c1", "1"), ("c2", "2"), ("c2", "2")]:
            assert await answered_within_1s(first.getPR(V, A, checksum)) == value
        second = await prserv.create_async_client(server.address)       # another task's
        for checksum, value in [("c3", "3"), ("c3", "3")]:
            assert await answered_within_1s(second.getPR(V, A, checksum)) == value
        assert held_by(server, "127.0.0.1") == 256
        await second.close()
        assert caplog.text.count(EVICTED) == 2
        assert caplog.text.count(EVICTED + ", the longest idle of 256 (max_connections_per_address)") == 2
        assert await answered_within_1s(first.getPR(V, A, "c4")) == "4"   # not closed for the second
        await first.close()
        assert "refused: too many connections" in caplog.text              # the hoard's own surplus
    finally:
        for conn in hoard:
            conn.writer.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------- busy and young

async def test_a_hoarder_whose_connections_are_all_busy_is_refused_and_stays_at_the_limit(
        silent_upstream_server):
    server, stub = await silent_upstream_server(3)
    hoard = [await RawConnection.open(server.address, SETUP) for _ in range(3)]
    for conn in hoard:
        assert await conn.request(PING) == {"alive": True}
    await make_busy(server, hoard[:2], "busy")
    newcomer = await RawConnection.open(server.address, SETUP)
    assert await newcomer.request(PING) == {"alive": True}     # hoard[2], the one idle, made room
    await hoard[2].expect_closed()
    await make_busy(server, [newcomer], "late")
    assert held_by(server, "127.0.0.1") == 3
    for _ in range(3):
        refused = await RawConnection.open(server.address, SETUP)
        assert await refused.request(GET) == {"invoke-error": {
            "message": "too many connections from 127.0.0.1 (max_connections_per_address 3)"}}
        await refused.expect_closed()
        assert held_by(server, "127.0.0.1") == 3
    assert [s.connection.busy for s in server.sessions if not s.evicted] == [True, True, True]
    await stub.stop()                                  # the requests in hand end, answered
    for conn in hoard[:2] + [newcomer]:
        assert "invoke-error" in json.loads(await conn.recv_raw())
        await conn.close()


async def test_a_connection_in_its_setup_makes_room_only_once_it_has_been_there_a_while(
        start_server, monkeypatch):
    monkeypatch.setattr(admission, "SETUP_IDLE_SECONDS", 0.5)
    server = await start_server(limits=Limits(max_connections_per_address=1))
    opened = time.monotonic()
    pending = await RawConnection.open(server.address, "PRSERVICE 1.0\n")     # and never the rest
    await until(lambda: len(server.sessions) == 1)
    refused = await RawConnection.open(server.address, SETUP)
    assert await refused.request(GET) == {"invoke-error": {
        "message": "too many connections from 127.0.0.1 (max_connections_per_address 1)"}}
    assert time.monotonic() - opened < 0.5             # it was refused while the other was young
    await refused.expect_closed()
    await asyncio.sleep(0.5)                           # the rule: in its setup this long
    newcomer = await RawConnection.open(server.address, SETUP)
    assert await newcomer.request(GET) == {"value": "0"}
    await pending.expect_closed()
    assert held_by(server, "127.0.0.1") == 1
    await newcomer.close()


async def test_a_full_server_closes_a_connection_in_its_setup_a_while_for_a_newcomer(
        start_server, monkeypatch):
    """The same idle rule when the server holds ``max_connections``."""
    monkeypatch.setattr(admission, "SETUP_IDLE_SECONDS", 0.2)
    server = await start_server(limits=Limits(max_connections=1, max_connections_per_address=0))
    pending = await RawConnection.open(server.address, source="127.0.0.2")   # never sets up
    await until(lambda: len(server.sessions) == 1)
    await asyncio.sleep(0.2)                           # the rule: in its setup this long
    newcomer = await RawConnection.open(server.address, SETUP)
    assert await newcomer.request(GET) == {"value": "0"}
    await pending.expect_closed()
    await newcomer.close()


# --------------------------------------------------------------------------- other addresses

async def test_another_address_is_never_closed_to_make_room_for_one_at_its_limit(
        silent_upstream_server, monkeypatch, caplog):
    """127.0.0.2's connections are idle longer than any of 127.0.0.1's, one of them still
    in its setup: 127.0.0.1's newcomer closes 127.0.0.1's own, or is refused."""
    caplog.set_level(logging.INFO, logger="BitBake.PRserv")
    monkeypatch.setattr(admission, "SETUP_IDLE_SECONDS", 0.2)
    server, stub = await silent_upstream_server(2)
    other_idle = await RawConnection.open(server.address, SETUP, source="127.0.0.2")
    assert await other_idle.request(PING) == {"alive": True}
    other_pending = await RawConnection.open(server.address, source="127.0.0.2")
    hoard = [await RawConnection.open(server.address, SETUP, source="127.0.0.1") for _ in range(2)]
    for conn in hoard:
        assert await conn.request(PING) == {"alive": True}
    await asyncio.sleep(0.2)                           # other_pending may now make room (for 127.0.0.2)
    newcomer = await RawConnection.open(server.address, SETUP, source="127.0.0.1")
    assert await newcomer.request(PING) == {"alive": True}
    await hoard[0].expect_closed()
    await make_busy(server, [hoard[1], newcomer], "busy")
    refused = await RawConnection.open(server.address, SETUP, source="127.0.0.1")
    assert await refused.request(PING) == {"invoke-error": {
        "message": "too many connections from 127.0.0.1 (max_connections_per_address 2)"}}
    await refused.expect_closed()
    assert (held_by(server, "127.0.0.1"), held_by(server, "127.0.0.2")) == (2, 2)
    assert await other_idle.request(PING) == {"alive": True}
    await other_pending.send(SETUP)
    assert await other_pending.request(PING) == {"alive": True}
    assert caplog.text.count(EVICTED) == 1
    for conn in (other_idle, other_pending, hoard[1], newcomer):
        await conn.close()


async def test_one_address_at_its_limit_does_not_lock_out_another(silent_upstream_server, caplog):
    server, stub = await silent_upstream_server(3)
    hoard = [await RawConnection.open(server.address, SETUP, source="127.0.0.1") for _ in range(3)]
    await make_busy(server, hoard, "busy")
    refused = await RawConnection.open(server.address, SETUP, source="127.0.0.1")
    assert await refused.request(GET) == {"invoke-error": {
        "message": "too many connections from 127.0.0.1 (max_connections_per_address 3)"}}
    await refused.expect_closed()
    other = await RawConnection.open(server.address, SETUP, source="127.0.0.2")
    assert await other.request(PING) == {"alive": True}
    assert caplog.text.count("refused: too many connections") == 1
    refused_again = await RawConnection.open(server.address, SETUP, source="127.0.0.1")
    assert "invoke-error" in await refused_again.request(GET)
    assert caplog.text.count("refused: too many connections") == 1     # once a minute per address
    assert held_by(server, "127.0.0.1") == 3
    for conn in hoard + [other]:
        await conn.close()


async def test_a_refusal_answers_a_client_that_asked_for_headers(silent_upstream_server):
    server, stub = await silent_upstream_server(1)
    first = await RawConnection.open(server.address, SETUP)
    await make_busy(server, [first], "busy")
    refused = await RawConnection.open(server.address, "PRSERVICE 1.0\nneeds-headers: true\n\n")
    assert await refused.recv_headers() == "\n"
    assert "too many connections" in (await refused.request(GET))["invoke-error"]["message"]
    await first.close()
