"""The HTTP listener (``--http``): real servers on 127.0.0.1 port 0, raw HTTP/1.1 over
real sockets -- the status API on every kind of server, the session's own rules
(methods, bodies, oversized heads, pipelining, ``Connection: close``), admission, the
closing log line, and the flag's refusals in a server process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import pytest

import prserv
from prserv.access import AccessRules
from prserv.version import __version__

from processes import BIN, start_process
from waiting import until

pytest.importorskip("h11")

STATUS = "/api/v1/status"
HEAD_LIMIT = 16 * 1024


class Answer:
    """One HTTP response as it came over the wire."""

    def __init__(self, status: int, reason: str, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    @property
    def header(self) -> Dict[str, str]:
        return {name.lower(): value for name, value in self.headers}

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8"))


def parse_answers(data: bytes, methods: List[str]) -> List[Answer]:
    """The responses in ``data``, one per request method sent (HEAD's have no body);
    every byte must belong to one of them."""
    answers = []
    for method in methods:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, "incomplete answer: %r" % head
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        length = 0 if method == "HEAD" else int(dict((n.lower(), v) for n, v in headers)["content-length"])
        answers.append(Answer(int(status), reason, headers, data[:length]))    # type: ignore[arg-type]
        data = data[length:]
    assert data == b"", "bytes after the last answer: %r" % data[:200]
    return answers


def request(method: str, target: str, *headers: str, close: bool = False) -> bytes:
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: test", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def host_port(address: str) -> Tuple[str, int]:
    host, port = address[len("http://"):].rsplit(":", 1)
    return host, int(port)


async def exchange(address: str, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection(*host_port(address))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def get(address: str, target: str = STATUS, method: str = "GET") -> Answer:
    answers = parse_answers(await exchange(address, request(method, target, close=True)), [method])
    return answers[0]


CLOSE = ("Connection", "close")
ALLOW = ("Allow", "GET, HEAD")


def assert_json_answer(answer: Answer, status: int, document: object, *extra: Tuple[str, str]) -> None:
    """A JSON answer: its headers exactly, in order (``extra`` after the fixed ones,
    ``Content-Length`` before ``Connection: close``), its body exactly."""
    body = json.dumps(document).encode("utf-8")
    close = [header for header in extra if header == CLOSE]
    others = [header for header in extra if header != CLOSE]
    assert answer.status == status
    assert answer.headers == [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *others,
                              ("Content-Length", str(len(body))), *close]
    assert answer.body == body


def error(message: str) -> dict:
    return {"error": {"message": message}}


def status_document(role: str, upstream: Optional[str] = None, mirror_of: Optional[str] = None,
                    identity: Optional[str] = None, packages: int = 0, values: int = 0, given_24h: int = 0,
                    mirror: Optional[dict] = None, upstream_state: Optional[dict] = None) -> dict:
    return {"role": role, "engine": "sqlite", "version": __version__, "upstream": upstream,
            "mirror_of": mirror_of, "identity": identity, "figures": {"packages": packages, "values": values,
                                                               "given_24h": given_24h},
            "mirror": mirror, "upstream_state": upstream_state}


async def status_of(server, role: str, **fields) -> dict:
    """``status_document`` of ``server``, its history's identity read from its engine."""
    identity = (await server.engine.changes(None, 0)).identity
    return status_document(role, identity=identity, **fields)


# --------------------------------------------------------------------------- the status API

async def test_status_of_a_read_write_server(start_server):
    server = await start_server(http="127.0.0.1:0")
    assert server.http_addresses[0].startswith("http://127.0.0.1:")
    assert server.address == server.addresses[0] and len(server.addresses) == 1    # PR addresses only
    answer = await get(server.http_addresses[0])
    assert answer.reason == "OK"
    assert_json_answer(answer, 200, await status_of(server, "read-write"), CLOSE)


async def test_status_of_a_read_only_server_a_chained_one_and_a_mirror(start_server):
    source = await start_server(db="source.sqlite3")
    reader = await start_server(db="source.sqlite3", read_only=True, http="http://127.0.0.1:0")
    chained = await start_server(db="chained.sqlite3", upstream=source.address, http="127.0.0.1:0")
    mirror = await start_server(db="mirror.sqlite3", mirror=source.address, http="127.0.0.1:0")
    assert_json_answer(await get(reader.http_addresses[0]), 200, await status_of(reader, "read-only"), CLOSE)
    assert_json_answer(await get(chained.http_addresses[0]), 200, await status_of(
        chained, "read-write", upstream=source.address,
        upstream_state={"address": source.address, "down": False, "ok": 0, "error": 0}), CLOSE)
    mirrored = (await get(mirror.http_addresses[0])).json()
    state = mirror.mirror_status()
    for document in (mirrored["mirror"], state):
        document.pop("seconds_since_contact")                       # a moment apart
    assert mirrored == status_document("mirror", mirror_of=source.address,
                                       identity=(await source.engine.changes(None, 0)).identity,
                                       mirror=state)
    assert mirrored["mirror"]["source"] == source.address and mirrored["mirror"]["state"] == "following"


async def test_head_has_the_headers_of_get_and_no_body(start_server):
    server = await start_server(http="127.0.0.1:0")
    answer = await get(server.http_addresses[0], method="HEAD")
    length = str(len(json.dumps(await status_of(server, "read-write"))))
    assert answer.status == 200
    assert answer.headers == [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                              ("Content-Length", length), CLOSE]
    assert answer.body == b""                   # parse_answers checked nothing followed


async def test_an_unknown_path_is_404_and_bad_percent_encoding_400(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    assert_json_answer(await get(address, "/api/v1/nope%21"), 404, error("no such resource: /api/v1/nope!"), CLOSE)
    assert_json_answer(await get(address, "/api/v1/status%"), 400,
                       error("bad percent-encoding in the request target"), CLOSE)
    assert_json_answer(await get(address, "/api/v1/status?x=%zz"), 400,
                       error("bad percent-encoding in the request target"), CLOSE)
    assert_json_answer(await get(address, "/%ff"), 400, error("the request target's path is not UTF-8"), CLOSE)
    assert_json_answer(await get(address, "/api/v1/status?whatever=1"), 200, await status_of(server, "read-write"), CLOSE)


# --------------------------------------------------------------------------- the session's rules

async def test_another_method_is_405_with_allow_and_the_connection_goes_on(start_server):
    server = await start_server(http="127.0.0.1:0")
    data = await exchange(server.http_addresses[0], request("POST", STATUS) + request("DELETE", "/x")
                          + request("GET", STATUS, close=True))
    post, delete, status = parse_answers(data, ["POST", "DELETE", "GET"])
    assert_json_answer(post, 405, error("method POST not allowed (GET, HEAD only)"), ALLOW)
    assert post.reason == "Method Not Allowed"
    assert_json_answer(delete, 405, error("method DELETE not allowed (GET, HEAD only)"), ALLOW)
    assert_json_answer(status, 200, await status_of(server, "read-write"), CLOSE)


async def test_a_request_with_a_body_is_400_and_the_connection_closed(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    for headers in (("Content-Length: 5",), ("Transfer-Encoding: chunked",)):
        data = await exchange(address, request("GET", STATUS, *headers) + b"hello" + request("GET", STATUS))
        [answer] = parse_answers(data, ["GET"])         # nothing after: the second request is not read
        assert_json_answer(answer, 400, error("requests carry no body here"), CLOSE)
    data = await exchange(address, request("POST", STATUS, "Content-Length: 5") + b"hello")
    [answer] = parse_answers(data, ["POST"])
    assert_json_answer(answer, 405, error("method POST not allowed (GET, HEAD only)"), ALLOW, CLOSE)
    [answer] = parse_answers(await exchange(address, request("GET", STATUS, "Content-Length: 0", close=True)),
                             ["GET"])
    assert answer.status == 200


async def test_a_head_over_16_kib_is_431_and_the_connection_closed(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    big = request("GET", STATUS, "X-Big: " + "a" * 20 * 1024)
    [answer] = parse_answers(await exchange(address, big), ["GET"])
    assert answer.reason == "Request Header Fields Too Large"
    assert_json_answer(answer, 431, error("request line and headers over 16384 bytes"), CLOSE)
    # sent in pieces: h11 refuses the incomplete head once it passes the limit
    reader, writer = await asyncio.open_connection(*host_port(address))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n")
        for _ in range(20):
            writer.write(b"X-Part: " + b"b" * 1014 + b"\r\n")
            await writer.drain()
        [answer] = parse_answers(await asyncio.wait_for(reader.read(), 10), ["GET"])
    finally:
        writer.close()
    assert_json_answer(answer, 431, error("request line and headers over 16384 bytes"), CLOSE)
    just_under = request("GET", STATUS, "X-Big: " + "a" * (HEAD_LIMIT - 200), close=True)
    [answer] = parse_answers(await exchange(address, just_under), ["GET"])
    assert answer.status == 200


async def test_a_malformed_request_is_400_and_the_connection_closed(start_server):
    server = await start_server(http="127.0.0.1:0")
    [answer] = parse_answers(await exchange(server.http_addresses[0], b"GARBAGE\r\n\r\n"), ["GET"])
    assert_json_answer(answer, 400, error("malformed request: illegal request line"), CLOSE)


async def test_pipelined_requests_are_answered_in_order_then_connection_close_ends_it(start_server, caplog):
    server = await start_server(http="127.0.0.1:0")
    caplog.set_level(logging.INFO, logger=prserv.logger.name)
    data = await exchange(server.http_addresses[0], request("GET", "/first") + request("HEAD", STATUS)
                          + request("GET", STATUS, close=True) + request("GET", "/never-read"))
    first, head, status = parse_answers(data, ["GET", "HEAD", "GET"])
    assert_json_answer(first, 404, error("no such resource: /first"))
    assert head.status == 200 and head.body == b""
    assert_json_answer(status, 200, await status_of(server, "read-write"), CLOSE)
    closing = [r.getMessage() for r in caplog.records if "connection closed after" in r.getMessage()]
    assert len(closing) == 1
    assert re.fullmatch(r"\[Client 127\.0\.0\.1:\d+\] connection closed after 3 requests in \d+\.\d s: "
                        r"closed after an answer \(Connection: close\)", closing[0]), closing


async def test_keep_alive_answers_one_request_after_another_on_one_connection(start_server):
    server = await start_server(http="127.0.0.1:0")
    reader, writer = await asyncio.open_connection(*host_port(server.http_addresses[0]))
    try:
        for target, status in (("/a", 404), (STATUS, 200)):
            writer.write(request("GET", target))
            answer = await read_answer(reader)
            assert answer.status == status and CLOSE not in answer.headers
        assert len(server.sessions) == 1
    finally:
        writer.close()


# --------------------------------------------------------------------------- admission

async def test_a_client_outside_allow_is_closed_with_nothing_served(start_server, caplog):
    server = await start_server(http="127.0.0.1:0", access=AccessRules(["10.0.0.0/8"]))
    caplog.set_level(logging.WARNING, logger=prserv.logger.name)
    reader, writer = await asyncio.open_connection(*host_port(server.http_addresses[0]))
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        "[Client %s:%d] refused: not in allow" % writer.get_extra_info("sockname")]


async def test_an_http_session_counts_in_the_per_address_limit(start_server):
    """A second HTTP connection from the address at its limit closes the first, idle
    one (admission sees HTTP sessions as it sees any)."""
    from prserv.asyncrpc.limits import Limits

    server = await start_server(http="127.0.0.1:0", limits=Limits(max_connections_per_address=1))
    address = server.http_addresses[0]
    reader, writer = await asyncio.open_connection(*host_port(address))
    try:
        writer.write(request("GET", STATUS))
        assert (await read_answer(reader)).status == 200
        answer = await get(address)                 # the first one, idle, makes room
        assert answer.status == 200
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One keep-alive answer to a GET, read off an open connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    body = await asyncio.wait_for(reader.readexactly(int(re.search(rb"Content-Length: (\d+)", head).group(1))), 10)
    [answer] = parse_answers(head + body, ["GET"])
    return answer


async def test_the_handshake_timeout_bounds_the_first_request_and_the_idle_timeout_the_next(start_server, caplog):
    from prserv.asyncrpc.limits import Limits

    server = await start_server(http="127.0.0.1:0", limits=Limits(handshake_timeout=0.2, idle_timeout=0.3))
    caplog.set_level(logging.INFO, logger=prserv.logger.name)
    host, port = host_port(server.http_addresses[0])
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\n")                 # a first request that never ends
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request("GET", STATUS))
        assert (await read_answer(reader)).status == 200
        writer.write(b"GET / HTTP/1.1\r\n")                 # the next one never ends either
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    await until(lambda: not server.sessions)                # each logs its line as it ends
    closing = [r.getMessage() for r in caplog.records if "connection closed after" in r.getMessage()]
    assert [re.sub(r"\[Client [^]]+\]| in \d+\.\d s", "", line) for line in closing] == [
        " connection closed after 0 requests: no connection setup within 0.2 s (handshake_timeout)",
        " connection closed after 1 request: idle for more than 0.3 s (idle_timeout)"]


async def test_shutdown_closes_an_idle_keep_alive_connection_and_the_listener(start_server, database_for):
    server = prserv.create_server("127.0.0.1:0", database_for("stop.sqlite3"), http="127.0.0.1:0")
    await server.start_serving()
    address = server.http_addresses[0]
    reader, writer = await asyncio.open_connection(*host_port(address))
    try:
        writer.write(request("GET", STATUS))
        assert (await read_answer(reader)).status == 200
        await server.stop_serving()
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    with pytest.raises(OSError):
        await exchange(address, request("GET", STATUS, close=True))


async def test_a_client_the_per_address_limit_refuses_gets_503_then_is_closed(start_server, caplog):
    """The one place left before admission can make room (a newcomer while the holder
    is still in its first second): the refused HTTP client's request is answered 503
    with Retry-After and the reason, and its connection closed."""
    from prserv.asyncrpc.limits import Limits

    server = await start_server(http="127.0.0.1:0", limits=Limits(max_connections_per_address=1))
    caplog.set_level(logging.WARNING, logger=prserv.logger.name)
    address = server.http_addresses[0]
    reader, writer = await asyncio.open_connection(*host_port(address))      # holds the place, no request yet
    reason = "too many connections from 127.0.0.1 (max_connections_per_address 1)"
    try:
        await until(lambda: len(server.sessions) == 1)
        [refused] = parse_answers(await exchange(address, request("GET", STATUS) + request("GET", "/x")),
                                  ["GET"])                                 # one answer, then closed
        assert refused.reason == "Service Unavailable"
        assert_json_answer(refused, 503, error(reason), ("Retry-After", "1"), CLOSE)
        [head] = parse_answers(await exchange(address, request("HEAD", STATUS)), ["HEAD"])
        assert head.status == 503 and head.body == b""
        assert await exchange(address, b"GARBAGE\r\n\r\n") == b""          # malformed: nothing said
        writer.write(request("GET", STATUS, close=True))                    # the first one is still served
        [answer] = parse_answers(await asyncio.wait_for(reader.read(), 10), ["GET"])
        assert answer.status == 200
    finally:
        writer.close()
    assert [r.getMessage().split("] ", 1)[1] for r in caplog.records if "refused" in r.getMessage()] == [
        "refused: " + reason]                                               # once a minute per address


# --------------------------------------------------------------------------- the server process

def test_a_server_process_logs_its_http_address_before_it_reports_ready(tmp_path):
    process, address, lines = start_process(tmp_path, "--http", "127.0.0.1:0")
    try:
        http_address = re.search(r"HTTP listener on (http://\S+)", "".join(lines)).group(1)
        assert http_address != "http://" + address
        answer = asyncio.run(get(http_address))
        assert answer.status == 200
        assert answer.json() == status_document("read-write", identity=answer.json()["identity"])
    finally:
        process.terminate()
        process.wait(15)
    assert process.returncode == 0


def run_server(tmp_path, *flags: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    clean.update(env or {})
    return subprocess.run([sys.executable, BIN, "-F", "-f", str(tmp_path / "pr.sqlite3"), "--bind", "127.0.0.1:0",
                           *flags], capture_output=True, text=True, env=clean, cwd=str(tmp_path), timeout=60)


REFUSE_H11 = '''
import sys

class RefuseH11:
    """Makes h11 unimportable (and unfindable) in this process."""

    def find_spec(self, name, path=None, target=None):
        if name == "h11" or name.startswith("h11."):
            raise ModuleNotFoundError("No module named 'h11' (refused by the test)", name=name)
        return None

sys.meta_path.insert(0, RefuseH11())
'''


def test_the_http_flag_without_h11_exits_2_naming_the_extra(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(REFUSE_H11)
    result = run_server(tmp_path, "--http", "127.0.0.1:0", env={"PYTHONPATH": str(hook)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "invalid http '127.0.0.1:0' (from flag --http): the HTTP listener needs h11: pip install 'prserv[web]'")
    check = subprocess.run([sys.executable, "-c", "import h11"], env=dict(os.environ, PYTHONPATH=str(hook)),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "refused by the test" in check.stderr     # the hook does work


def test_lib_prserv_still_imports_without_h11():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import prserv, prserv.serv, prserv.server.prserver, "
            "prserv.server.web, prserv.asyncrpc.lifecycle, prserv.runtime.settings; "
            "print('h11' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, os.path.join(os.path.dirname(BIN), "..", "lib")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
