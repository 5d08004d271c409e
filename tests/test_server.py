"""The PR server end to end, over every transport (prserv.serv)."""

from __future__ import annotations

import asyncio
import json
import os
import socket

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from prserv.asyncrpc.loops import uvloop_available
from prserv.server.session import PRServerClient
from internals import store_rows
from wire import SETUP, RawConnection, frame, open_slow_socket
from conftest import ENGINES


@pytest.fixture(params=ENGINES + (["sqlite-uvloop"] if uvloop_available() else []))
def engine_kind(request) -> str:
    """Every test of this module on a SQLite file and on a PostgreSQL database, and once
    more on SQLite with the server (the test's event loop) on uvloop."""
    return request.param


@pytest.fixture
def event_loop_policy(engine_kind):
    """uvloop's loop for the ``sqlite-uvloop`` runs (pytest-asyncio's policy fixture)."""
    if engine_kind.endswith("-uvloop"):
        import uvloop
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\" fixture is deprecated")

V, A = "curl-8.6.0-r0", "cortexa72"
KNOWN_COMMANDS = ", ".join(name for name, _ in PRServerClient.dispatch_table)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def transports(tmp_path_factory=None):
    params = ["127.0.0.1:0", "ws://127.0.0.1:0", "unix"]
    if ipv6_available():
        params.append("[::1]:0")
    return params


@pytest.fixture
def address_for(tmp_path):
    def make(kind: str) -> str:
        if kind != "unix":
            return kind
        # Longer than the AF_UNIX limit (~108 bytes).
        directory = tmp_path / ("d" * 60) / ("e" * 60)
        directory.mkdir(parents=True)
        return "unix://%s/pr.sock" % directory
    return make


@pytest.mark.parametrize("kind", transports())
async def test_every_method_over_transport(kind, address_for, start_server):
    server = await start_server(address_for(kind))
    if kind == "unix":
        assert server.address.startswith("unix:///") and len(server.address) > 120
    elif kind.startswith("ws"):
        assert server.address.startswith("ws://127.0.0.1:") and not server.address.endswith(":0")
    async with await prserv.create_async_client(server.address) as client:
        assert await client.ping() == {"alive": True}
        assert await client.is_readonly() is False
        assert await client.test_package(V, A) is False
        assert [await client.getPR(V, A, c) for c in ("a", "b", "c", "b")] == ["0", "1", "2", "3"]
        assert await client.getPR(V, A, "b", history=True) == "1"
        assert await client.test_pr(V, A, "b") == "3"
        assert await client.test_pr(V, A, "b", history=True) == "1"
        assert await client.test_pr(V, A, "zzz") is None
        assert await client.test_package(V, A) is True
        assert await client.max_package_pr(V, A) == "3"
        assert await client.importone(V, A, "imp", 7) == 7
        assert await client.importone(V, A, "imp2", "7.1") == "7.1"
        meta, data = await client.export(V, A, None, True, False)
        assert meta["tbl_name"] == "PRMAIN" and meta["core_ver"] == prserv.__version__
        assert data == [{"version": V, "pkgarch": A, "checksum": "imp2", "value": "7.1"}]
        big = "k" * 100000                       # > 64 KiB request, chunked (or one ws message)
        assert await client.importone(V, A, big, "1") == "1"
        _, data = await client.export(None, None, None, False, True)
        assert len(data) == 7 and {"version": V, "pkgarch": A, "checksum": big, "value": "1"} in data
        with pytest.raises(InvokeError):
            await client.importone(V, A, "bad", "1'")
        assert await client.ping() == {"alive": True}     # reconnected after the invoke-error


@pytest.mark.parametrize("kind", transports())
async def test_nesting_limit_is_the_servers_on_every_transport(kind, address_for, start_server):
    """64 levels are answered, 65 refused with the limit named, whatever this Python's
    json could parse (3.13's parses thousands of levels, 3.9's fewer than 1,000)."""
    server = await start_server(address_for(kind))
    async with await prserv.create_async_client(server.address) as client:
        deepest = json.loads("[" * 63 + "]" * 63)
        assert await client.invoke({"ping": deepest}) == {"alive": True}
        with pytest.raises(InvokeError, match=r"^JSON nested deeper than 64 levels \(this server's limit\)$"):
            await client.invoke({"ping": [deepest]})
        assert await client.ping() == {"alive": True}     # reconnected after the invoke-error


async def test_unix_socket_removed_on_stop_and_stale_socket_replaced(tmp_path, start_server):
    path = str(tmp_path / "pr.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()                                 # a socket file nobody listens on
    server = await start_server("unix://" + path)
    assert os.path.exists(path)
    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR(V, A, "x") == "0"
    await server.stop_serving()
    assert not os.path.exists(path)


async def test_concurrent_new_checksums_get_distinct_values(start_server):
    server = await start_server()

    async def one(n: int, history: bool) -> str:
        async with await prserv.create_async_client(server.address) as client:
            return await client.getPR(V, A, "concurrent-%d" % n, history=history)

    for history in (False, True):
        values = await asyncio.gather(*(one(n + (100 if history else 0), history) for n in range(32)))
        base = 0 if not history else 32
        assert sorted(values, key=int) == [str(base + i) for i in range(32)]


@pytest.mark.parametrize("request_line, reason", [
    # the session's commands in dispatch order (test_connection_path holds them to docs/protocol.md)
    ('{"frobnicate": {}}', "unknown command (request keys: frobnicate); known: %s" % KNOWN_COMMANDS),
    ("{}", "unknown command (request keys: none); known: %s" % KNOWN_COMMANDS),
    ('["ping"]', "a request must be a JSON object, not an array"),
    ("5", "a request must be a JSON object, not a number"),
    ('{"ping": ', "invalid JSON: Expecting value: line 1 column 10 (char 9)"),
    ('{"get-pr": null}', "get-pr: the argument must be a JSON object, not null"),
    ('{"get-pr": {"version": "v", "pkgarch": "a", "history": false}}', "get-pr: missing field 'checksum'"),
    ('{"get-pr": {"version": "", "pkgarch": "a", "checksum": "c"}}', "get-pr: field 'version' must not be empty"),
    ('{"get-pr": {"version": 5, "pkgarch": "a", "checksum": "c"}}',
     "get-pr: field 'version' must be a string, not a number"),
    ('{"get-pr": {"version": "v", "pkgarch": ["a"], "checksum": "c"}}',
     "get-pr: field 'pkgarch' must be a string, not an array"),
    ('{"get-pr": {"version": "v", "pkgarch": "a", "checksum": "c", "history": "false"}}',
     "get-pr: field 'history' must be true or false, not a string"),
    ('{"get-pr": {"version": "v", "pkgarch": "a", "checksum": "c", "history": 1}}',
     "get-pr: field 'history' must be true or false, not a number"),
    ('{"test-pr": {"version": "v", "pkgarch": "a", "checksum": "c", "history": null}}',
     "test-pr: field 'history' must be true or false, not null"),
    ('{"export": {"version": null, "pkgarch": null, "checksum": null, "colinfo": 0}}',
     "export: field 'colinfo' must be true or false, not a number"),
    ('{"test-pr": {"version": "v", "pkgarch": "", "checksum": "c"}}', "test-pr: field 'pkgarch' must not be empty"),
    ('{"test-package": {"version": "v"}}', "test-package: missing field 'pkgarch'"),
    ('{"max-package-pr": {"version": "v", "pkgarch": null}}',
     "max-package-pr: field 'pkgarch' must be a string, not null"),
    ('{"import-one": {"version": "v", "pkgarch": "a", "checksum": "c", "value": "01"}}',
     "import-one: field 'value': import value is not a revision (dotted decimal integers, "
     "no leading zeros, at most 256 characters): '01'"),
    ('{"import-one": {"version": "v", "pkgarch": "a", "checksum": "c", "value": -1}}',
     "import-one: field 'value': import value must not be negative: -1"),
    ('{"import-one": {"version": "v", "pkgarch": "a", "checksum": {}, "value": "1"}}',
     "import-one: field 'checksum' must be a string, not an object"),
    ('{"import-one": {"version": "v", "pkgarch": "a", "checksum": "c"}}', "import-one: missing field 'value'"),
    ('{"export": {"version": null, "pkgarch": null, "checksum": null, "history": false}}',
     "export: missing field 'colinfo'"),
    ('{"export": {"version": 1, "pkgarch": null, "checksum": null, "colinfo": false}}',
     "export: field 'version' must be a string or null, not a number"),
])
async def test_bad_request_gets_invoke_error_and_close(request_line, reason, start_server):
    server = await start_server()
    other = await RawConnection.open(server.address, SETUP)
    conn = await RawConnection.open(server.address, SETUP)
    await conn.send(request_line + "\n")
    answer = json.loads(await conn.recv_raw())
    assert answer == {"invoke-error": {"message": reason}}
    await conn.expect_closed()
    # Nothing stored, and everyone else is still served.
    assert await other.request({"export": {"version": None, "pkgarch": None, "checksum": None,
                                           "colinfo": False, "history": True}}) == \
        {"metainfo": {}, "datainfo": []}
    await other.close()


async def test_overlong_unchunked_line_gets_invoke_error(start_server):
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    await conn.send('{"ping": "' + "x" * (2 * 1024 * 1024) + '"}\n')
    answer = json.loads(await conn.recv_raw())
    assert "line longer than" in answer["invoke-error"]["message"]
    await conn.expect_closed()


async def test_unchunked_line_of_64k_is_accepted(start_server):
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    checksum = "c" * 70000
    await conn.send(json.dumps({"get-pr": {"version": V, "pkgarch": A, "checksum": checksum}}) + "\n")
    assert json.loads(await conn.recv_raw()) == {"value": "0"}
    await conn.close()


async def test_missing_history_means_false_and_extra_fields_are_ignored(start_server):
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    ask = {"version": V, "pkgarch": A, "build-host": "b7"}
    assert await conn.request({"get-pr": dict(ask, checksum="a")}) == {"value": "0"}
    assert await conn.request({"get-pr": dict(ask, checksum="b")}) == {"value": "1"}
    assert await conn.request({"get-pr": dict(ask, checksum="a")}) == {"value": "2"}     # no history
    assert await conn.request({"test-pr": dict(ask, checksum="a")}) == {"value": "2"}
    answer = await conn.request({"export": {"version": None, "pkgarch": None, "checksum": None,
                                            "colinfo": False}})
    assert sorted(r["checksum"] for r in answer["datainfo"]) == ["a"]
    await conn.close()


async def test_null_message_ends_session_quietly(start_server):
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    await conn.send('{"ping": {}}\nnull\n{"ping": {}}\n')
    assert json.loads(await conn.recv_raw()) == {"alive": True}
    await conn.expect_closed()


@pytest.mark.parametrize("setup", ["PRSERV 1.0\n\n", "PRSERVICE 1.1\n\n", "\n", "PRSERVICE 1.0\nbad\n\n",
                                   "\xff\n"])
async def test_refused_setup_closes_without_reply(setup, start_server, caplog):
    server = await start_server()
    conn = await RawConnection.open(server.address, setup)
    await conn.send('{"ping": {}}\n')
    await conn.expect_closed()
    assert "refused connection setup" in caplog.text


async def test_needs_headers_gets_empty_header_block(start_server):
    server = await start_server()
    conn = await RawConnection.open(server.address, "PRSERVICE 1.0\nneeds-headers: true\n\n")
    assert await conn.recv_headers() == "\n"
    assert await conn.request({"ping": {}}) == {"alive": True}
    await conn.close()


async def test_pipelined_requests_answered_in_order(start_server):
    server = await start_server()
    conn = await RawConnection.open(server.address)
    requests = [{"get-pr": {"version": V, "pkgarch": A, "checksum": "p%d" % i, "history": False}}
                for i in range(300)]
    await conn.send(SETUP + "".join(frame(json.dumps(r)) for r in requests))
    answers = [json.loads(await conn.recv_raw()) for _ in requests]
    assert answers == [{"value": str(i)} for i in range(300)]
    await conn.close()


async def test_large_export_is_chunked(start_server):
    server = await start_server()
    async with await prserv.create_async_client(server.address) as client:
        for i in range(700):
            await client.importone(V, A, "%064x" % i, str(i))
    conn = await RawConnection.open(server.address, SETUP)
    await conn.send(frame(json.dumps({"export": {"version": None, "pkgarch": None, "checksum": None,
                                                 "colinfo": False, "history": True}})))
    raw = await conn.recv_raw()
    lines = raw.split("\n")
    assert lines[0] == '{"chunk-stream": null}'
    assert all(len(line) == 32767 for line in lines[1:-3]) and lines[-2:] == ["", ""]
    assert len(json.loads("".join(lines[1:-2]))["datainfo"]) == 700
    await conn.close()


async def test_read_only_server(tmp_path, start_server):
    writer = await start_server(db="shared.sqlite3")
    reader = await start_server(db="shared.sqlite3", read_only=True)
    async with await prserv.create_async_client(writer.address) as w, \
            await prserv.create_async_client(reader.address) as r:
        assert await w.getPR(V, A, "a") == "0"
        assert await r.is_readonly() is True
        assert await r.max_package_pr(V, A) == "0"
        assert await r.getPR(V, A, "b") == "1"
        assert await r.getPR(V, A, "c") == "1"        # nothing stored: same answer twice
        assert await r.test_pr(V, A, "b") is None
        assert await r.importone(V, A, "d", "5") is None
        assert await w.getPR(V, A, "c") == "1"
        assert await r.test_pr(V, A, "c") == "1"
        with pytest.raises(InvokeError):
            await r.importone(V, A, "d", "5'")


async def test_read_only_server_on_missing_file_fails_clearly(tmp_path):
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "none.sqlite3"), read_only=True)
    with pytest.raises(Exception) as info:
        await server.start_serving()
    assert "does not exist" in str(info.value)


def test_serve_as_process_and_sigterm(tmp_path, process_servers):
    calls = []
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "p.sqlite3"))
    server.serve_as_process(prefunc=lambda s, marker: calls.append(marker), args=("x",))
    try:
        with prserv.create_client(server.address) as client:
            assert client.getPR(V, A, "a") == "0"
            assert client.getPR(V, A, "b") == "1"
    finally:
        server.process.terminate()
        server.process.join(10)
    assert server.process.exitcode == 0
    assert calls == []        # prefunc ran in the child, not here
    again = prserv.create_server("127.0.0.1:0", str(tmp_path / "p.sqlite3"))
    again.serve_as_process()
    try:
        with prserv.create_client(again.address) as client:
            assert client.getPR(V, A, "c") == "2"
    finally:
        again.process.terminate()
        again.process.join(10)


def test_serve_as_process_reports_start_failure(tmp_path):
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "none.sqlite3"), read_only=True)
    with pytest.raises(Exception) as info:
        server.serve_as_process()
    assert "does not exist" in str(info.value)


async def test_pipelined_lookups_and_allocations_keep_order_up_to_an_error(start_server):
    """Lookups are answered at once and allocations after their commit, yet answers
    keep the requests' order; a bad request is answered last, then the close."""
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    assert await conn.request({"get-pr": {"version": V, "pkgarch": A, "checksum": "known"}}) == {"value": "0"}
    requests, expected = [], []
    for i in range(1, 41):
        if i % 3:       # a lookup (history mode: the known checksum keeps its first value)
            requests.append({"get-pr": {"version": V, "pkgarch": A, "checksum": "known", "history": True}})
            expected.append({"value": "0"})
        else:           # an allocation
            requests.append({"get-pr": {"version": V, "pkgarch": A, "checksum": "new%d" % i}})
            expected.append({"value": str(i // 3)})
    requests.append({"get-pr": {"version": V, "pkgarch": A}})        # missing checksum
    requests.append({"ping": {}})                                     # never answered
    await conn.send("".join(frame(json.dumps(r)) for r in requests))
    answers = [json.loads(await conn.recv_raw()) for _ in requests[:-1]]
    assert answers[:-1] == expected
    assert "checksum" in answers[-1]["invoke-error"]["message"]
    await conn.expect_closed()


async def _import_rows(server, count: int) -> list:
    """Rows stored straight into the server's database, in one transaction (fast)."""
    rows = [(V, A, "%064x" % i, str(i)) for i in range(count)]
    await store_rows(server, rows)
    return [{"version": v, "pkgarch": a, "checksum": c, "value": value} for v, a, c, value in rows]


@pytest.mark.parametrize("kind", ["127.0.0.1:0", "ws://127.0.0.1:0"])
async def test_large_export_is_streamed_and_equals_the_whole(kind, start_server):
    server = await start_server(kind)
    expected = await _import_rows(server, 6000)
    async with await prserv.create_async_client(server.address) as client:
        meta, data = await client.export(None, None, None, True, True)
    assert meta["tbl_name"] == "PRMAIN" and data == expected



async def test_export_to_a_stalled_reader_does_not_hold_up_other_clients(start_server):
    """The export waits for the slow peer (flow control) while others are answered,
    and the slow peer still gets every row, framed exactly as the whole answer."""
    server = await start_server()
    expected = await _import_rows(server, 30000)                      # about 4.5 MB of JSON
    slow = await open_slow_socket(server.address)
    loop = asyncio.get_running_loop()
    request = {"export": {"version": None, "pkgarch": None, "checksum": None, "colinfo": False,
                          "history": True}}
    await loop.sock_sendall(slow, (SETUP + frame(json.dumps(request))).encode())
    first = await loop.sock_recv(slow, 4096)
    assert first.startswith(b'{"chunk-stream": null}\n')
    async with await prserv.create_async_client(server.address) as client:
        for i in range(20):                                   # answered while the export waits
            # (another package, sorting before the rows sent already: not in the export)
            assert await client.getPR("aaa-1.0-r0", A, "other%d" % i) == str(i)
    received = bytearray(first)
    while not received.endswith(b"\n\n"):
        data = await loop.sock_recv(slow, 65536)
        assert data, "server closed before the end of the export"
        received += data
    slow.close()
    whole = json.dumps({"metainfo": {}, "datainfo": expected})
    assert received.decode() == "".join(frame(whole))


@pytest.mark.parametrize("engine_kind", ["sqlite"])      # the SQLite engine's group commit
async def test_pipelined_writes_of_one_client_share_commits(start_server):
    """A pipelining client (an import) does not pay one fsync per request: requests
    read together are handled together and answered after their shared commit."""
    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    requests = [{"import-one": {"version": V, "pkgarch": A, "checksum": "i%d" % i, "value": str(i)}}
                for i in range(500)]
    await conn.send("".join(frame(json.dumps(r)) for r in requests))
    answers = [json.loads(await conn.recv_raw()) for _ in requests]
    assert answers == [{"value": str(i)} for i in range(500)]
    assert 1 <= server.engine.db.group.commits <= 50
    await conn.close()


@pytest.mark.parametrize("engine_kind", ["sqlite"])      # the SQLite engine's group commit
async def test_failed_commit_withholds_the_answer_and_reports_it(start_server, monkeypatch):
    """The answer of a value whose commit failed is never sent (immediate mode)."""
    import sqlite3

    server = await start_server()
    conn = await RawConnection.open(server.address, SETUP)
    assert await conn.request({"get-pr": {"version": V, "pkgarch": A, "checksum": "a"}}) == {"value": "0"}

    transactions = server.engine.db.transactions

    def failing_commit():
        transactions.rollback()
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(transactions, "commit", failing_commit)
    await conn.send("".join(frame(json.dumps({"get-pr": {"version": V, "pkgarch": A, "checksum": c}}))
                            for c in ("b", "c")))
    answer = json.loads(await conn.recv_raw())
    assert answer == {"invoke-error": {"message": "request failed: disk I/O error"}}
    await conn.expect_closed()
    monkeypatch.undo()
    async with await prserv.create_async_client(server.address) as client:
        assert await client.test_pr(V, A, "b") is None          # rolled back, not answered
        assert await client.getPR(V, A, "b") == "1"


@pytest.mark.parametrize("engine_kind", ["sqlite"])      # held answers: the transport's, not the engine's
async def test_pipelined_writes_to_a_client_that_does_not_read_are_held_then_all_sent(start_server):
    """Held answers are bounded (reading the client's requests waits), and once the
    client reads, every answer arrives, in order."""
    server = await start_server()
    sock = await open_slow_socket(server.address)
    loop = asyncio.get_running_loop()
    count = 3000
    requests = "".join(frame(json.dumps({"import-one": {"version": V, "pkgarch": A, "checksum": "k%d" % i,
                                                          "value": str(i)}})) for i in range(count))
    sending = loop.create_task(loop.sock_sendall(sock, (SETUP + requests).encode()))
    received = bytearray()
    while received.count(b"\n") < count:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        assert data
        received += data
    await sending
    sock.close()
    assert [json.loads(line) for line in received.decode().splitlines()] == \
        [{"value": str(i)} for i in range(count)]


async def test_each_run_uses_the_event_loop_it_names(engine_kind):
    loop_module = type(asyncio.get_running_loop()).__module__
    assert loop_module.startswith("uvloop") == engine_kind.endswith("-uvloop"), loop_module
