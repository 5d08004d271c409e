"""Permissions by network: who may connect (``allow``) and who may store values
(``allow_write``), decided by the client's address, with real clients bound to
different loopback addresses (any 127.x.y.z is this host)."""

from __future__ import annotations

import logging
import os
import signal
import socket

import pytest

import prserv
from prserv.access import AccessRules, parse_address, parse_networks

from processes import start_process
from waiting import until
from wire import SETUP, RawConnection

V, A = "zlib-1.3-r0", "core2-64"


def get_pr(checksum: str) -> dict:
    return {"get-pr": {"version": V, "pkgarch": A, "checksum": checksum}}


def lookup(checksum: str) -> dict:
    """A test-pr request."""
    return {"test-pr": {"version": V, "pkgarch": A, "checksum": checksum}}


# --------------------------------------------------------------------------- the rules alone

@pytest.mark.parametrize("host,connect,write", [
    ("10.1.2.3", True, True), ("10.9.0.1", True, False), ("192.0.2.7", True, True),
    ("192.0.2.8", False, False), ("::ffff:10.1.2.3", True, True), ("::ffff:192.0.2.8", False, False),
    ("2001:db8::5", True, False), ("2001:db9::5", False, False), ("fe80::1%eth0", False, False),
    ("::1", True, True), ("not-an-address", False, False), (None, True, True),
])
def test_addresses_match_networks_of_their_own_kind(host, connect, write):
    rules = AccessRules(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"],
                        ["10.1.0.0/16", "::ffff:192.0.2.7", "::1/128"])
    assert (rules.may_connect(host), rules.may_write(host)) == (connect, write)


def test_no_rules_mean_everyone_and_unix_clients_may_be_kept_from_writing():
    assert AccessRules().open_to_all
    assert AccessRules().may_write("203.0.113.1") and AccessRules().may_write(None)
    closed = AccessRules(allow_write_unix=False)
    assert closed.may_connect(None) and not closed.may_write(None) and closed.may_write("203.0.113.1")
    assert parse_address("::ffff:127.0.0.2") == parse_address("127.0.0.2")
    with pytest.raises(ValueError, match="'10.0.0.0/40' is not an IP address or network"):
        parse_networks(["10.0.0.0/40"])


# --------------------------------------------------------------------------- a real server

@pytest.fixture
async def farm_server(start_server):
    """Connect: 127.0.0.1 and 127.0.0.2; write: 127.0.0.2 only (the farm)."""
    return await start_server(access=AccessRules(["127.0.0.1", "127.0.0.2/32"], ["127.0.0.2"]))


async def test_a_client_outside_allow_is_closed_before_the_handshake_and_logged_once(farm_server, caplog):
    caplog.set_level(logging.WARNING, logger="BitBake.PRserv")
    for _ in range(3):
        outsider = await RawConnection.open(farm_server.address, source="127.0.0.3")
        await outsider.expect_closed()              # not even the setup was read: no answer at all
        await outsider.close()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "127.0.0.3" in refusals[0] and "not in allow" in refusals[0], refusals
    inside = await RawConnection.open(farm_server.address, SETUP, source="127.0.0.2")
    assert await inside.request({"ping": {}}) == {"alive": True}
    await inside.close()


async def test_a_client_outside_allow_write_is_served_as_by_a_read_only_server(farm_server):
    builder = await RawConnection.open(farm_server.address, SETUP, source="127.0.0.2")
    reader = await RawConnection.open(farm_server.address, SETUP, source="127.0.0.1")
    try:
        assert await reader.request({"is-readonly": {}}) == {"readonly": True}
        assert await builder.request({"is-readonly": {}}) == {"readonly": False}
        assert await reader.request(get_pr("r1")) == {"value": "0"}           # answered, not stored
        assert await reader.request(lookup("r1")) == {"value": None}
        assert await reader.request({"import-one": {"version": V, "pkgarch": A, "checksum": "r2",
                                                     "value": 5}}) is None
        assert await builder.request(get_pr("b1")) == {"value": "0"}
        assert await builder.request(get_pr("b2")) == {"value": "1"}
        assert await reader.request(lookup("b2")) == {"value": "1"}     # it reads what the farm wrote
        assert await reader.request(get_pr("r1")) == {"value": "2"}           # still not stored
        assert await builder.request(get_pr("b3")) == {"value": "2"}
    finally:
        await builder.close()
        await reader.close()
    async with await prserv.create_async_client(farm_server.address) as client:     # from 127.0.0.1
        assert await client.is_readonly() is True


async def test_unix_socket_clients_write_unless_allow_write_unix_is_false(start_server, tmp_path):
    sock = "unix://" + str(tmp_path / "s.sock")
    open_server = await start_server(sock, db="a.sqlite3", access=AccessRules(["192.0.2.0/24"], ["192.0.2.0/24"]))
    async with await prserv.create_async_client(open_server.address) as client:
        assert await client.is_readonly() is False
        assert await client.getPR(V, A, "u1") == "0"
    sock2 = "unix://" + str(tmp_path / "t.sock")
    closed = await start_server(sock2, db="b.sqlite3", access=AccessRules(allow_write_unix=False))
    async with await prserv.create_async_client(closed.address) as client:
        assert await client.is_readonly() is True
        assert await client.getPR(V, A, "u1") == "0"
        assert await client.test_pr(V, A, "u1") is None


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
async def test_ipv6_clients_match_ipv6_rules_and_ipv4_clients_ipv4_rules(start_server):
    server = await start_server(["127.0.0.1:0", "[::1]:0"],
                                access=AccessRules(["127.0.0.2", "::1", "::ffff:127.0.0.3"], ["127.0.0.2"]))
    v4, v6 = server.addresses
    builder = await RawConnection.open(v4, SETUP, source="127.0.0.2")
    local6 = await RawConnection.open(v6, SETUP)
    mapped_rule = await RawConnection.open(v4, SETUP, source="127.0.0.3")     # allowed as ::ffff:127.0.0.3
    outsider = await RawConnection.open(v4, source="127.0.0.4")
    try:
        assert await builder.request({"is-readonly": {}}) == {"readonly": False}
        assert await local6.request({"is-readonly": {}}) == {"readonly": True}
        assert await mapped_rule.request({"is-readonly": {}}) == {"readonly": True}
        await outsider.expect_closed()
    finally:
        for conn in (builder, local6, mapped_rule, outsider):
            await conn.close()


# --------------------------------------------------------------------------- SIGHUP

def test_sighup_reloads_the_rules_without_dropping_connections(tmp_path):
    conf = tmp_path / "prserv.toml"
    conf.write_text('allow = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]\nallow_write = ["127.0.0.2"]\n')
    process, address, lines = start_process(tmp_path, "--config", str(conf))
    try:
        import asyncio

        async def scenario():
            before = await RawConnection.open(address, SETUP, source="127.0.0.3")
            assert await before.request({"is-readonly": {}}) == {"readonly": True}
            conf.write_text('allow = ["127.0.0.1", "127.0.0.3"]\nallow_write = ["127.0.0.3"]\n')
            reloads = sum("SIGHUP: access rules" in line for line in lines)
            os.kill(process.pid, signal.SIGHUP)
            await wait_for_line(lines, "SIGHUP: access rules", reloads + 1)
            assert await before.request({"is-readonly": {}}) == {"readonly": True}   # kept, as granted
            after = await RawConnection.open(address, SETUP, source="127.0.0.3")
            assert await after.request({"is-readonly": {}}) == {"readonly": False}
            assert await after.request(get_pr("h1")) == {"value": "0"}
            gone = await RawConnection.open(address, source="127.0.0.2")
            await gone.expect_closed()
            conf.write_text('allow = ["127.0.0.999"]\n')                           # a bad edit
            errors = sum("access rules not reloaded" in line for line in lines)
            os.kill(process.pid, signal.SIGHUP)
            await wait_for_line(lines, "access rules not reloaded", errors + 1)
            still = await RawConnection.open(address, SETUP, source="127.0.0.3")
            assert await still.request(get_pr("h2")) == {"value": "1"}            # the old rules stay
            for conn in (before, after, gone, still):
                await conn.close()

        asyncio.run(scenario())
    finally:
        process.terminate()
        process.wait(15)
    text = "".join(lines)
    assert "access rules: connect: 127.0.0.1/32, 127.0.0.3/32; write: 127.0.0.3/32" in text
    assert "'127.0.0.999' is not an IP address or network" in text


async def wait_for_line(lines, text, count):
    """Until ``count`` lines of the server's log contain ``text`` (the log is read by a
    thread, which fills ``lines``)."""
    await until(lambda: sum(text in line for line in lines) >= count, seen=lambda: "".join(lines))


# --------------------------------------------------------------------------- behind a proxy

PROXY_RULES = dict(allow=["203.0.113.0/24", "127.0.0.0/8"], allow_write=["203.0.113.7"],
                   trusted_proxies=["127.0.0.5"])


def proxy_v2(source: str, source_port: int, dest: str = "127.0.0.1", dest_port: int = 8585) -> bytes:
    """A PROXY protocol v2 header, PROXY command, TCP over IPv4."""
    import ipaddress
    import struct
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(dest).packed + \
        struct.pack("!HH", source_port, dest_port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


async def raw_bytes(address: str, data: bytes, source: str) -> RawConnection:
    conn = await RawConnection.open(address, source=source)
    conn.writer.write(data)
    await conn.writer.drain()
    return conn


async def test_a_trusted_proxy_names_the_client_the_rules_apply_to(start_server, caplog):
    caplog.set_level(logging.INFO, logger="BitBake.PRserv")
    server = await start_server(access=AccessRules(**PROXY_RULES))
    header_v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8585\r\n"
    via_v1 = await raw_bytes(server.address, header_v1 + SETUP.encode(), "127.0.0.5")
    via_v2 = await raw_bytes(server.address, proxy_v2("203.0.113.7", 40001) + SETUP.encode(), "127.0.0.5")
    reader = await raw_bytes(server.address, proxy_v2("203.0.113.8", 40002) + SETUP.encode(), "127.0.0.5")
    health = await raw_bytes(server.address, V2_LOCAL + SETUP.encode(), "127.0.0.5")      # the proxy itself
    try:
        assert await via_v1.request({"is-readonly": {}}) == {"readonly": False}
        assert await via_v1.request(get_pr("p1")) == {"value": "0"}
        assert await via_v2.request({"is-readonly": {}}) == {"readonly": False}
        assert await reader.request({"is-readonly": {}}) == {"readonly": True}
        assert await health.request({"is-readonly": {}}) == {"readonly": True}
        outsider = await raw_bytes(server.address, proxy_v2("198.51.100.9", 1) + SETUP.encode(), "127.0.0.5")
        await outsider.expect_closed()                      # not in allow: closed, no answer
        garbage = await raw_bytes(server.address, SETUP.encode(), "127.0.0.5")       # no header
        await garbage.expect_closed()
    finally:
        for conn in (via_v1, via_v2, reader, health):
            await conn.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "[Client 203.0.113.7:40000 (via 127.0.0.5:" in logged
    assert "[Client 198.51.100.9:1 (via 127.0.0.5:" in logged and "not in allow" in logged
    assert "from a trusted proxy: PROXY header: the connection starts with b'PRSERVICE 1." in logged


async def test_only_a_trusted_proxy_can_name_a_client(start_server):
    server = await start_server(access=AccessRules(**PROXY_RULES))
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8585\r\n"
    forged = await raw_bytes(server.address, header + SETUP.encode(), "127.0.0.6")   # not a trusted proxy
    await forged.expect_closed()                            # "PROXY ..." is not a handshake: refused
    await forged.close()
    direct = await RawConnection.open(server.address, SETUP, source="127.0.0.6")
    assert await direct.request({"is-readonly": {}}) == {"readonly": True}           # its own address
    await direct.close()


async def test_x_forwarded_for_counts_from_trusted_proxies_only(start_server):
    import websockets

    server = await start_server("ws://127.0.0.1:0", access=AccessRules(**dict(PROXY_RULES, trusted_proxies=[
        "127.0.0.5", "127.0.0.9"])))
    host, port = server.address[len("ws://"):].rsplit(":", 1)

    async def readonly(source, forwarded):
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        try:
            from websockets.asyncio.client import connect
            opened = connect(server.address, additional_headers=headers, local_addr=(source, 0))
        except ImportError:             # websockets < 13
            opened = websockets.connect(server.address, extra_headers=headers, local_addr=(source, 0))
        async with opened as ws:
            for line in ("PRSERVICE 1.0", "needs-headers: false", ""):
                await ws.send(line)
            await ws.send('{"is-readonly": {}}')
            return (await ws.recv()).strip()

    assert await readonly("127.0.0.5", "203.0.113.7") == '{"readonly": false}'
    assert await readonly("127.0.0.5", "10.9.9.9, 203.0.113.7, 127.0.0.9") == '{"readonly": false}'
    assert await readonly("127.0.0.5", "203.0.113.7, 203.0.113.8") == '{"readonly": true}'  # .8 named last
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await readonly("127.0.0.5", "203.0.113.7, 10.0.0.1")       # the client is 10.0.0.1: not in allow
    assert await readonly("127.0.0.6", "203.0.113.7") == '{"readonly": true}'      # not a trusted proxy
    assert await readonly("127.0.0.5", None) == '{"readonly": true}'                # the proxy itself
