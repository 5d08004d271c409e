"""Hostile HTTP input against a real server: each request below on a connection of
its own, while a well-behaved client keeps being answered.  Every one gets a clear
error answer (or a 200/404 that says nothing it should not), never a 500, never a
header a client string wrote, and the server goes on (the status answers after each).
The session's own rules (methods, bodies, heads over 16 KiB, pipelining, slow
clients) have their tests in ``test_http.py``; this corpus is about what clients
put in request lines, headers and query strings."""

from __future__ import annotations

import pytest

import prserv

from test_http import exchange, parse_answers, request
from test_http_api import get

pytest.importorskip("h11")

LONG = "x" * 12000                                  # a long query, under the 16 KiB head

# (what it is, raw request bytes, the statuses it may get)
CORPUS = [
    ("script in a version", request("GET", "/api/v1/history?version=%3Cscript%3Ealert(1)%3C/script%3E&pkgarch=x",
                                    close=True), {404}),
    ("NUL in a version", request("GET", "/api/v1/history?version=a%00b&pkgarch=x", close=True), {404}),
    ("CR LF in a prefix", request("GET", "/api/v1/packages?prefix=a%0D%0ASet-Cookie:%20x=1&limit=1",
                                  close=True), {200}),
    ("overlong UTF-8", request("GET", "/api/v1/history?version=%C0%AF&pkgarch=x", close=True), {400}),
    ("lone surrogate in UTF-8", request("GET", "/api/v1/packages?prefix=%ED%A0%80", close=True), {400}),
    ("a percent sign alone", request("GET", "/api/v1/packages?prefix=%", close=True), {400}),
    ("a limit of 10^9", request("GET", "/api/v1/packages?limit=1000000000", close=True), {400}),
    ("a limit in Arabic digits", request("GET", "/api/v1/recent?limit=%D9%A3", close=True), {400}),
    ("a limit with a sign", request("GET", "/api/v1/recent?limit=+5", close=True), {400}),
    ("a since in the year 10000", request("GET", "/api/v1/recent?since=10000-01-01T00:00:00Z", close=True), {400}),
    ("a since with 30 fraction digits", request("GET", "/api/v1/recent?since=2026-01-01T00:00:00.%sZ" % ("1" * 30),
                                                close=True), {400}),
    ("a cursor of 10 KB", request("GET", "/api/v1/recent?after=" + "A" * 10000, close=True), {400}),
    ("a long query", request("GET", "/api/v1/packages?prefix=" + LONG, close=True), {200}),
    ("a parameter 1000 times", request("GET", "/api/v1/packages?" + "&".join(["prefix=a"] * 1000), close=True),
     {400}),
    ("a path with dot segments", request("GET", "/api/v1/../v1/status", close=True), {404}),
    ("an absolute-form target", request("GET", "http://elsewhere/api/v1/status", close=True), {200}),
    ("the asterisk target", request("OPTIONS", "*", close=True), {405}),
    ("no Host header", b"GET /api/v1/status HTTP/1.1\r\nConnection: close\r\n\r\n", {400}),
    ("HTTP/1.0", b"GET /api/v1/status HTTP/1.0\r\n\r\n", {200}),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400, 405}),
    ("a bare LF request", b"GET /api/v1/status HTTP/1.1\nHost: x\nConnection: close\n\n", {200, 400}),
    ("two Content-Lengths", request("GET", "/api/v1/status", "Content-Length: 0", "Content-Length: 5"), {400}),
    ("Content-Length and chunked", request("GET", "/api/v1/status", "Content-Length: 3",
                                           "Transfer-Encoding: chunked") + b"0\r\n\r\n", {400}),
    ("a header without a colon", b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n", {400}),
    ("an obsolete folded header", b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n"
                                  b"Connection: close\r\n\r\n", {200, 400}),
    ("Basic credentials that are not base64", request("GET", "/api/v1/status", "Authorization: Basic %%%",
                                                      close=True), {401}),
    ("a control byte in the target", b"GET /api/v1/status\x01 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
]


def first_answer(raw: bytes):
    """The first answer in ``raw`` (a request that is two, such as HTTP/2's preface,
    gets two)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    length = int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"Content-Length"])
    return parse_answers(head + b"\r\n\r\n" + rest[:length], ["GET"])[0]


def forbidden_header(answer) -> bool:
    return any(name.lower() == "set-cookie" for name, _ in answer.headers)


async def test_hostile_requests_get_clear_answers_and_the_server_goes_on(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR("a-1.0-r0", "x", "c") == "0"
        assert await client.getPR("a\r\nSet-Cookie: x=1", "x", "c") == "0"
        for what, data, statuses in CORPUS:
            raw = await exchange(address, data)
            head = raw.split(b"\r\n", 1)[0]
            assert head.startswith(b"HTTP/1.1 "), (what, raw[:200])
            status = int(head.split()[1])
            assert status in statuses, (what, status, raw[:300])
            answer = first_answer(raw)
            assert not forbidden_header(answer), what
            if status >= 400:
                assert set(answer.json()) == {"error"}, what
            assert (await get(address, "/api/v1/status")).status == 200, what
            assert await client.getPR("a-1.0-r0", "x", "c") == "0", what       # the PR side too
    crlf = (await get(address, "/api/v1/packages?prefix=a%0D%0ASet&limit=1")).json()
    assert crlf["items"][0]["version"] == "a\r\nSet-Cookie: x=1"


async def test_every_request_of_a_pipelined_burst_is_answered_in_order(start_server):
    server = await start_server(http="127.0.0.1:0")
    burst = b"".join(request("GET", "/api/v1/packages?prefix=%d" % n) for n in range(200))
    data = await exchange(server.http_addresses[0], burst + request("GET", "/api/v1/status", close=True))
    answers = parse_answers(data, ["GET"] * 201)
    assert [answer.status for answer in answers] == [200] * 201
    assert all(answer.json() == {"items": [], "next": None} for answer in answers[:200])
