"""The HTTP listener's access (``--http``): HTTPS with the server's certificate, who
sees what (``allow_write``, tokens by HTTP Basic, ``/metrics`` to writers only),
``X-Forwarded-For`` and PROXY headers from trusted proxies, the answer a refused
client gets, and HTTP requests in the server's figures -- real servers on 127.0.0.1
port 0, real sockets, a real TLS client."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import re
import socket
import ssl
import urllib.request
from typing import Dict, List, Optional, Tuple

import pytest

import prserv
from prserv.access import AccessRules, parse_address
from prserv.server import session

from test_http import (CLOSE, STATUS, assert_json_answer, error, exchange, parse_answers, request,
                       run_server, status_of)
from test_tls import certificates  # noqa: F401  (a fixture)
from test_tokens import add_user

pytest.importorskip("h11")


def https_get(address: str, ca_file: Optional[str], target: str = STATUS,
              headers: Optional[Dict[str, str]] = None) -> Tuple[int, List[Tuple[str, str]], bytes]:
    """One GET with the standard library's HTTPS client (blocking: run in a thread),
    checking the server's certificate against ``ca_file`` (None: the system's CAs)."""
    host, port = address[len("https://"):].rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


# --------------------------------------------------------------------------- HTTPS

async def https_server(start_server, certificates, **options):
    _, chain, key = certificates
    return await start_server(http="https://127.0.0.1:0", tls_certificate=chain, tls_key=key, **options)


async def test_https_serves_with_the_servers_certificate(start_server, certificates):
    ca_file = certificates[0]
    server = await https_server(start_server, certificates)
    address = server.http_addresses[0]
    assert address.startswith("https://127.0.0.1:")
    status, headers, body = await in_thread(https_get, address, ca_file)
    document = json.dumps(await status_of(server, "read-write")).encode("utf-8")
    assert (status, body) == (200, document)
    assert headers == [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                       ("Content-Length", str(len(document)))]
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await in_thread(https_get, address, None)             # the system's CAs: not ours


async def test_plain_http_to_an_https_listener_is_not_served(start_server, certificates):
    server = await https_server(start_server, certificates)
    host, port = server.http_addresses[0][len("https://"):].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request("GET", STATUS, close=True))
        assert not (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1")
    finally:
        writer.close()
    assert not server.sessions


def test_https_without_a_certificate_exits_2(tmp_path):
    result = run_server(tmp_path, "--http", "https://127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "http https://127.0.0.1:0 (from flag --http) needs tls_certificate (and tls_key, unless the key is "
        "in the certificate file)")
    assert not (tmp_path / "pr.sqlite3").exists()


# --------------------------------------------------------------------------- who sees what

METRICS = "/metrics"
CHALLENGE = ("WWW-Authenticate", 'Basic realm="prserv"')
WRONG = error("unknown user, wrong token or expired token (HTTP Basic: the user name, the token as password)")
IN_THE_CLEAR = error("credentials are accepted over https only (or over http from this host)")
NO_METRICS = error("no such resource: /metrics")
FARM_ONLY = AccessRules(allow_write=["10.0.0.0/8"])
"""Loopback clients may connect, not write."""


def basic(user: str, token: str) -> str:
    return "Authorization: Basic " + base64.b64encode(("%s:%s" % (user, token)).encode()).decode()


async def get_with(address: str, target: str, *headers: str) -> "object":
    [answer] = parse_answers(await exchange(address, request("GET", target, *headers, close=True)), ["GET"])
    return answer


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture
def quick_failures(monkeypatch):
    """Failed authentications answered at once (the delay has tests of its own)."""
    monkeypatch.setattr(session, "AUTH_FAILURE_DELAY", 0.01)


async def test_metrics_are_served_to_writers_as_the_metrics_flag_serves_them(start_server):
    from prometheus_client import CONTENT_TYPE_LATEST

    server = await start_server(http="127.0.0.1:0", metrics="127.0.0.1:0")       # everyone may write
    exported = await in_thread(scrape, server.exporter.url)
    answer = await get_with(server.http_addresses[0], METRICS)
    assert answer.status == 200
    assert answer.headers == [("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store"),
                              ("Content-Length", str(len(answer.body))), CLOSE]
    # the same text, but for the one HTTP connection open while it was read
    assert b"prserv_connections_active 0.0\n" in exported
    assert answer.body == exported.replace(b"prserv_connections_active 0.0\n", b"prserv_connections_active 1.0\n")


async def test_metrics_are_404_to_a_client_that_may_not_write(start_server):
    server = await start_server(http="127.0.0.1:0", access=FARM_ONLY)
    address = server.http_addresses[0]
    assert_json_answer(await get_with(address, METRICS), 404, NO_METRICS, CLOSE)
    assert_json_answer(await get_with(address, STATUS), 200, await status_of(server, "read-write"), CLOSE)


async def test_a_write_or_admin_token_by_basic_over_http_from_this_host(start_server, quick_failures, caplog):
    server = await start_server(http="127.0.0.1:0", access=FARM_ONLY)
    address = server.http_addresses[0]
    caplog.set_level(logging.INFO, logger=prserv.logger.name)
    ci, root, reader = (await add_user(server, "ci", ["write"]), await add_user(server, "root", ["admin"]),
                        await add_user(server, "reader", ["read"]))
    for user in (ci, root):
        answer = await get_with(address, METRICS, basic(*user))
        assert answer.status == 200 and answer.body.startswith(b"# HELP ")
    assert_json_answer(await get_with(address, METRICS, basic(*reader)), 404, NO_METRICS, CLOSE)
    assert_json_answer(await get_with(address, STATUS, basic(*reader)), 200, await status_of(server, "read-write"),
                       CLOSE)
    for wrong in (basic("ci", root[1]), basic("nobody", ci[1]), "Authorization: Basic !!!",
                  "Authorization: Bearer " + ci[1], basic("ci", ci[1]) + "\r\n" + basic("ci", ci[1])):
        assert_json_answer(await get_with(address, METRICS, wrong), 401, WRONG, CHALLENGE, CLOSE)
    lines = [r.getMessage() for r in caplog.records if "connection closed after" in r.getMessage()]
    assert [re.sub(r"^\[Client [^]]+\] | in \d+\.\d s", "", line) for line in lines] == [
        "connection closed after 1 request: closed after an answer (Connection: close) (user ci)",
        "connection closed after 1 request: closed after an answer (Connection: close) (user root)",
        "connection closed after 1 request: closed after an answer (Connection: close) (user reader)",
        "connection closed after 1 request: closed after an answer (Connection: close) (user reader)",
        *["connection closed after 1 request: closed after an answer (Connection: close)"] * 5]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP authentication failed for user 'nobody'" in logged
    for token in (ci[1], root[1], reader[1]):
        assert token not in logged


def local_address() -> str:
    """An address of this host that is not loopback (the test skips where none is)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))                 # no packet is sent: the route decides
        host = probe.getsockname()[0]
    except OSError:
        pytest.skip("this host has no address but loopback")
    finally:
        probe.close()
    if parse_address(host).is_loopback:
        pytest.skip("this host has no address but loopback")
    return host


async def test_credentials_from_elsewhere_only_over_https(start_server, certificates):
    host = local_address()
    ca_file, chain, key = certificates
    plain = await start_server(http="%s:0" % host, access=FARM_ONLY)
    ci = await add_user(plain, "ci", ["write"])
    assert_json_answer(await get_with(plain.http_addresses[0], METRICS, basic(*ci)), 403, IN_THE_CLEAR, CLOSE)
    assert_json_answer(await get_with(plain.http_addresses[0], METRICS, basic("ci", "wrong")), 403, IN_THE_CLEAR,
                       CLOSE)
    assert_json_answer(await get_with(plain.http_addresses[0], STATUS), 200, await status_of(plain, "read-write"), CLOSE)
    secure = await start_server(db="pr.sqlite3", http="https://%s:0" % host, access=FARM_ONLY,
                                tls_certificate=chain, tls_key=key)

    def fetch(headers: Dict[str, str]):
        context = ssl.create_default_context(cafile=ca_file)
        context.check_hostname = False              # the test's certificate names 127.0.0.1, not this address
        connection = http.client.HTTPSConnection(host, int(secure.http_addresses[0].rsplit(":", 1)[1]),
                                                 context=context, timeout=10)
        try:
            connection.request("GET", METRICS, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    status, body = await in_thread(fetch, {"Authorization": basic(*ci).split(": ", 1)[1]})
    assert status == 200 and body.startswith(b"# HELP ")
    status, body = await in_thread(fetch, {})
    assert (status, json.loads(body)) == (404, NO_METRICS)


# --------------------------------------------------------------------------- trusted proxies

PROXIED = AccessRules(allow=["127.0.0.1", "10.0.0.0/8"], allow_write=["10.1.0.0/16"],
                      trusted_proxies=["127.0.0.1"])
"""The test is the trusted proxy; writers are in 10.1/16, readers in the rest of 10/8."""


async def test_x_forwarded_for_from_a_trusted_proxy_gives_the_client(start_server):
    server = await start_server(http="127.0.0.1:0", access=PROXIED)
    address = server.http_addresses[0]
    for forwarded, status in (("10.1.2.3", 200), ("10.9.9.9", 404), ("10.1.2.3, 127.0.0.1", 200),
                              ("10.9.9.9, 10.1.2.3", 200), ("10.1.2.3, 10.9.9.9", 404)):
        answer = await get_with(address, METRICS, "X-Forwarded-For: " + forwarded)
        assert answer.status == status, forwarded
    answer = await get_with(address, METRICS, "X-Forwarded-For: 10.9.9.9", "X-Forwarded-For: 10.1.2.3")
    assert answer.status == 200                     # several headers: one list, read from the right
    assert_json_answer(await get_with(address, STATUS, "X-Forwarded-For: 192.0.2.99"), 403,
                       error("not allowed to connect from 192.0.2.99"), CLOSE)
    assert_json_answer(await get_with(address, METRICS), 404, NO_METRICS, CLOSE)   # the proxy itself


async def test_x_forwarded_for_from_any_other_peer_is_ignored(start_server):
    rules = AccessRules(allow_write=["10.1.0.0/16"], trusted_proxies=["10.0.0.5"])
    server = await start_server(http="127.0.0.1:0", access=rules)
    address = server.http_addresses[0]
    assert_json_answer(await get_with(address, METRICS, "X-Forwarded-For: 10.1.2.3"), 404, NO_METRICS, CLOSE)
    assert_json_answer(await get_with(address, STATUS, "X-Forwarded-For: 192.0.2.99"), 200,
                       await status_of(server, "read-write"), CLOSE)


async def test_a_proxy_header_from_a_trusted_proxy_gives_the_client(start_server, caplog):
    server = await start_server(http="127.0.0.1:0", access=PROXIED)
    address = server.http_addresses[0]
    caplog.set_level(logging.INFO, logger=prserv.logger.name)
    for client, status in (("10.1.2.3", 200), ("10.9.9.9", 404)):
        header = ("PROXY TCP4 %s 10.0.0.10 40000 8586\r\n" % client).encode("ascii")
        [answer] = parse_answers(await exchange(address, header + request("GET", METRICS, close=True)), ["GET"])
        assert answer.status == status
    lines = [r.getMessage() for r in caplog.records if "connection closed after" in r.getMessage()]
    assert [re.sub(r"via 127\.0\.0\.1:\d+\)\] .*", "via 127.0.0.1)", line) for line in lines] == [
        "[Client 10.1.2.3:40000 (via 127.0.0.1)", "[Client 10.9.9.9:40000 (via 127.0.0.1)"]


# --------------------------------------------------------------------------- the figures

async def test_http_requests_are_counted_in_get_stats_and_metrics(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    data = await exchange(address, request("GET", STATUS) + request("GET", "/x") + request("HEAD", STATUS)
                          + request("POST", STATUS) + request("GET", STATUS, close=True))
    assert [a.status for a in parse_answers(data, ["GET", "GET", "HEAD", "POST", "GET"])] == [200, 404, 200, 405,
                                                                                              200]
    assert await exchange(address, b"GARBAGE\r\n\r\n") != b""                       # 400, counted too
    async with await prserv.create_async_client(server.address) as client:
        stats = await client.get_stats()
    assert stats["commands"] == {"http GET": {"ok": 2, "error": 1}, "http HEAD": {"ok": 1, "error": 0},
                                 "http other": {"ok": 0, "error": 2}}
    assert stats["requests"]["num"] == 6
    answer = await get_with(address, METRICS)
    lines = [line for line in answer.body.decode().splitlines() if line.startswith("prserv_requests_total")]
    assert lines == ['prserv_requests_total{command="get-stats",outcome="ok"} 1.0',
                     'prserv_requests_total{command="get-stats",outcome="error"} 0.0',
                     'prserv_requests_total{command="http GET",outcome="ok"} 2.0',
                     'prserv_requests_total{command="http GET",outcome="error"} 1.0',
                     'prserv_requests_total{command="http HEAD",outcome="ok"} 1.0',
                     'prserv_requests_total{command="http HEAD",outcome="error"} 0.0',
                     'prserv_requests_total{command="http other",outcome="ok"} 0.0',
                     'prserv_requests_total{command="http other",outcome="error"} 2.0']
