"""Interoperability with bitbake's own ``bb.asyncrpc`` (PyPI ``bitbake-setup==2.19.0``).

Two directions, over real TCP sockets on 127.0.0.1:

1. bitbake's client stack -> our server: ``BitbakePRAsyncClient`` is a copy of
   bitbake's prserv client (same requests, same return values) on top of
   ``bb.asyncrpc.AsyncClient``; it talks to our ``PRServer`` (``start_server``).
2. our clients -> bitbake's server stack: ``InMemoryBitbakePRServer`` is a tiny PR
   server on ``bb.asyncrpc.AsyncServer`` (in a child process, via bitbake's own
   ``serve_as_process``); our ``PRClient`` / ``PRAsyncClient`` talk to it.

Both directions include messages above 64 KiB, which only pass as chunk streams
(bitbake's stream reader drops unchunked lines longer than 64 KiB).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any, Dict, List, Optional, Tuple

import bb.asyncrpc
import pytest

import prserv
import prserv.asyncrpc
from prserv.client import PRClient

logger = logging.getLogger("test_interop")

HOST = "127.0.0.1"

# The export metainfo of a PRMAIN table, as bitbake's prserv reports it (docs/protocol.md §5).
PRMAIN_METAINFO = {
    "tbl_name": "PRMAIN",
    "core_ver": "2.19.0",
    "col_info": [
        {"name": "version", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 1},
        {"name": "pkgarch", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 2},
        {"name": "checksum", "type": "TEXT", "notnull": 1, "dflt_value": None, "pk": 3},
        {"name": "value", "type": "TEXT", "notnull": 0, "dflt_value": None, "pk": 4},
    ],
}

# Bigger than the 64 KiB line limit of bitbake's (and asyncio's default) stream reader.
BEYOND_LINE_LIMIT = 64 * 1024


# --------------------------------------------------------------------------- helpers

def row(version: str, pkgarch: str, checksum: str, value: str) -> Dict[str, str]:
    """One export row."""
    return {"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value}


def row_sort_key(r: Dict[str, str]) -> Tuple[str, str, str, Tuple[int, ...]]:
    """Export row order is unspecified: compare sorted lists (values numerically)."""
    return (r["version"], r["pkgarch"], r["checksum"], tuple(int(p) for p in r["value"].split(".")))


def sorted_rows(rows: List[Dict[str, str]]) -> List[Dict[str, str]]:
    return sorted(rows, key=row_sort_key)


def assert_exact(result: Any, expected: Any, what: str = "") -> None:
    """Equal *and* of the same type (so "7" != 7, 7 != 7.0, True != 1)."""
    assert (type(result), result) == (type(expected), expected), what


class BitbakePRAsyncClient(bb.asyncrpc.AsyncClient):
    """bitbake 2.19.0's ``prserv.client.PRAsyncClient``, method for method.

    Built on bitbake's own ``bb.asyncrpc.AsyncClient`` (its framing, chunking,
    retries and invoke-error handling), so talking to our server through it is what
    a bitbake build does.  The only addition is a shorter timeout, so a broken
    server fails the test in seconds rather than minutes.
    """

    def __init__(self, timeout: float = 5) -> None:
        super().__init__("PRSERVICE", "1.0", logger, timeout=timeout)

    async def getPR(self, version, pkgarch, checksum, history=False):
        response = await self.invoke({"get-pr": {"version": version, "pkgarch": pkgarch,
                                                 "checksum": checksum, "history": history}})
        if response:
            return response["value"]

    async def test_pr(self, version, pkgarch, checksum, history=False):
        response = await self.invoke({"test-pr": {"version": version, "pkgarch": pkgarch,
                                                  "checksum": checksum, "history": history}})
        if response:
            return response["value"]

    async def test_package(self, version, pkgarch):
        response = await self.invoke({"test-package": {"version": version, "pkgarch": pkgarch}})
        if response:
            return response["value"]

    async def max_package_pr(self, version, pkgarch):
        response = await self.invoke({"max-package-pr": {"version": version, "pkgarch": pkgarch}})
        if response:
            return response["value"]

    async def importone(self, version, pkgarch, checksum, value):
        response = await self.invoke({"import-one": {"version": version, "pkgarch": pkgarch,
                                                     "checksum": checksum, "value": value}})
        if response:
            return response["value"]

    async def export(self, version, pkgarch, checksum, colinfo, history=False):
        response = await self.invoke({"export": {"version": version, "pkgarch": pkgarch,
                                                 "checksum": checksum, "colinfo": colinfo,
                                                 "history": history}})
        if response:
            return (response["metainfo"], response["datainfo"])

    async def is_readonly(self):
        response = await self.invoke({"is-readonly": {}})
        if response:
            return response["readonly"]


class InMemoryBitbakePRConnection(bb.asyncrpc.AsyncServerConnection):
    """One session of ``InMemoryBitbakePRServer``; handlers answer in the reference's shapes.

    Like the reference, every handler reads its fields with ``request[...]``, so a
    request missing a field (e.g. ``history``) makes bitbake drop the connection.
    """

    def __init__(self, socket, server: "InMemoryBitbakePRServer") -> None:
        super().__init__(socket, "PRSERVICE", server.logger)
        self.server = server
        self.handlers.update({
            "get-pr": self.handle_get_pr,
            "test-pr": self.handle_test_pr,
            "test-package": self.handle_test_package,
            "max-package-pr": self.handle_max_package_pr,
            "import-one": self.handle_import_one,
            "export": self.handle_export,
            "is-readonly": self.handle_is_readonly,
        })

    def validate_proto_version(self):
        """bb.asyncrpc calls this after parsing the client's version (as bitbake's prserv)."""
        return self.proto_version == (1, 0)

    async def handle_get_pr(self, request):
        _ = request["history"]
        return {"value": self.server.get_pr(request["version"], request["pkgarch"], request["checksum"])}

    async def handle_test_pr(self, request):
        _ = request["history"]
        package = self.server.package(request["version"], request["pkgarch"])
        return {"value": package.get(request["checksum"])}

    async def handle_test_package(self, request):
        return {"value": bool(self.server.package(request["version"], request["pkgarch"]))}

    async def handle_max_package_pr(self, request):
        return {"value": self.server.max_value(request["version"], request["pkgarch"])}

    async def handle_import_one(self, request):
        version, pkgarch, checksum, value = (request["version"], request["pkgarch"],
                                             request["checksum"], request["value"])
        if not (isinstance(value, int) or re.fullmatch(r"[0-9]+(\.[0-9]+)*", str(value))):
            raise bb.asyncrpc.InvokeError("invalid import value %r" % (value,))
        if self.server.read_only:
            return None                    # the reference answers the JSON literal null
        self.server.package(version, pkgarch)[checksum] = str(value)
        return {"value": value}

    async def handle_export(self, request):
        filters = (request["version"], request["pkgarch"], request["checksum"])
        metainfo = PRMAIN_METAINFO if request["colinfo"] else {}
        return {"metainfo": metainfo, "datainfo": self.server.export(*filters, request["history"])}

    async def handle_is_readonly(self, request):
        return {"readonly": self.server.read_only}


class InMemoryBitbakePRServer(bb.asyncrpc.AsyncServer):
    """A deliberately simple PR server on bitbake's ``bb.asyncrpc.AsyncServer``.

    One value per checksum (``history`` is accepted but ignored); a new checksum gets
    the package's max + 1 (``"0"`` first).  import-one accepts a non-negative integer
    or a dotted-decimal string and stores it as text; anything else is answered with
    bitbake's ``InvokeError`` (the error path under test).  Export without history
    gives the rows holding their package's max; with history, every row; rows come in
    insertion order.  The data lives in the serving (child) process.
    """

    def __init__(self, read_only: bool = False) -> None:
        super().__init__(logging.getLogger("test_interop.bitbake_server"))
        self.read_only = read_only
        self.rows: Dict[Tuple[str, str], Dict[str, str]] = {}

    def accept_client(self, socket):
        return InMemoryBitbakePRConnection(socket, self)

    def package(self, version: str, pkgarch: str) -> Dict[str, str]:
        """checksum -> value of one package (empty dict if unknown)."""
        if self.read_only:
            return dict(self.rows.get((version, pkgarch), {}))
        return self.rows.setdefault((version, pkgarch), {})

    @staticmethod
    def _key(value: str) -> Tuple[int, ...]:
        return tuple(int(p) for p in value.split("."))

    def max_value(self, version: str, pkgarch: str) -> Optional[str]:
        values = self.package(version, pkgarch).values()
        return max(values, key=self._key) if values else None

    def get_pr(self, version: str, pkgarch: str, checksum: str) -> str:
        package = self.package(version, pkgarch)
        if checksum not in package:
            top = self.max_value(version, pkgarch)
            package[checksum] = "0" if top is None else str(self._key(top)[0] + 1)
        return package[checksum]

    def export(self, version, pkgarch, checksum, history) -> List[Dict[str, str]]:
        rows = []
        for (v, a), package in self.rows.items():
            top = self.max_value(v, a)
            for c, value in package.items():
                if not history and value != top:
                    continue
                if (version and v != version) or (pkgarch and a != pkgarch) or (checksum and c != checksum):
                    continue
                rows.append(row(v, a, c, value))
        return rows


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
async def bitbake_client(start_server):
    """``connect(server)`` -> a ``BitbakePRAsyncClient`` for that server; all closed at the end."""
    clients: List[BitbakePRAsyncClient] = []

    async def connect(server) -> BitbakePRAsyncClient:
        host, port = server.address.rsplit(":", 1)
        client = BitbakePRAsyncClient()
        await client.connect_tcp(host, int(port))     # records the address only
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
async def our_server_and_bitbake_client(start_server, bitbake_client):
    """A fresh writable server of ours and a bitbake client connected to it."""
    server = await start_server()
    return server, await bitbake_client(server)


@pytest.fixture
def start_bitbake_server():
    """``start(read_only=False)`` -> a running ``InMemoryBitbakePRServer`` (child process)."""
    processes = []

    def start(read_only: bool = False) -> InMemoryBitbakePRServer:
        server = InMemoryBitbakePRServer(read_only=read_only)
        server.start_tcp_server(HOST, 0)
        processes.append(server.serve_as_process())
        assert server.address.startswith(HOST + ":")
        return server

    yield start
    for process in processes:
        process.terminate()
        process.join(10)
        assert process.exitcode == 0


@pytest.fixture
def bitbake_server(start_bitbake_server) -> InMemoryBitbakePRServer:
    """A writable bitbake server, started before any event loop runs (for async tests)."""
    return start_bitbake_server()


@pytest.fixture
def our_client(bitbake_server):
    """Our blocking ``PRClient`` connected to a fresh bitbake server."""
    client = prserv.create_client(bitbake_server.address)
    assert isinstance(client, PRClient)
    with client:
        yield client


# =========================================================================== part 1
# bitbake's client -> our server

async def test_bitbake_client_ping(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    assert_exact(await client.ping(), {"alive": True})


async def test_bitbake_client_get_pr_without_history(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    assert_exact(await client.getPR("v1", "arm", "c0"), "0")
    assert_exact(await client.getPR("v1", "arm", "c1"), "1")
    assert_exact(await client.getPR("v1", "arm", "c2"), "2")
    assert_exact(await client.getPR("v1", "arm", "c2"), "2")       # known, still the max
    assert_exact(await client.getPR("v1", "arm", "c0"), "3")       # below the max: bumped
    assert_exact(await client.getPR("v1", "arm", "c0"), "3")
    assert_exact(await client.getPR("v1", "x86", "c0"), "0")       # other package
    assert_exact(await client.getPR("v2", "arm", "c0"), "0")


async def test_bitbake_client_get_pr_with_history(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    assert_exact(await client.getPR("v1", "arm", "h1", history=True), "0")
    assert_exact(await client.getPR("v1", "arm", "h2", history=True), "1")
    assert_exact(await client.getPR("v1", "arm", "h1", history=True), "0")   # the first value
    assert_exact(await client.getPR("v1", "arm", "h1"), "2")                 # no history: bumped
    assert_exact(await client.getPR("v1", "arm", "h1", history=True), "0")
    assert_exact(await client.getPR("v1", "arm", "h3", history=True), "3")   # new: max + 1


async def test_bitbake_client_queries(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    assert_exact(await client.test_package("v1", "arm"), False)
    assert_exact(await client.max_package_pr("v1", "arm"), None)
    assert_exact(await client.test_pr("v1", "arm", "c0"), None)
    for checksum in ("c0", "c1", "c0"):                                      # c0 -> 0, c1 -> 1, c0 -> 2
        await client.getPR("v1", "arm", checksum)
    assert_exact(await client.test_package("v1", "arm"), True)
    assert_exact(await client.test_package("v1", "x86"), False)
    assert_exact(await client.max_package_pr("v1", "arm"), "2")
    assert_exact(await client.test_pr("v1", "arm", "c0"), "2")              # largest
    assert_exact(await client.test_pr("v1", "arm", "c0", history=True), "0")  # smallest
    assert_exact(await client.test_pr("v1", "arm", "c1"), "1")
    assert_exact(await client.test_pr("v1", "arm", "nope"), None)
    assert_exact(await client.max_package_pr("v1", "arm"), "2")             # queries never allocate


async def test_bitbake_client_importone_echoes_string_and_integer(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    assert_exact(await client.importone("v1", "arm", "k1", "3"), "3")
    assert_exact(await client.importone("v1", "arm", "k2", 7), 7)           # OE compares answer != value
    assert_exact(await client.importone("v1", "arm", "k3", "1.2.0"), "1.2.0")
    assert_exact(await client.importone("v1", "arm", "k1", "1"), "1")       # no ordering check
    assert_exact(await client.test_pr("v1", "arm", "k2"), "7")              # stored as text
    assert_exact(await client.test_pr("v1", "arm", "k1"), "3")
    assert_exact(await client.test_pr("v1", "arm", "k1", history=True), "1")
    assert_exact(await client.max_package_pr("v1", "arm"), "7")
    assert_exact(await client.getPR("v1", "arm", "new"), "8")


async def test_bitbake_client_importone_invalid_value_raises_invoke_error(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    with pytest.raises(bb.asyncrpc.InvokeError) as excinfo:
        await client.importone("v1", "arm", "bad", "1'")
    assert "1'" in str(excinfo.value)
    # bitbake keeps the socket the server closed; its next call reconnects by itself.
    assert_exact(await client.test_pr("v1", "arm", "bad"), None)            # nothing stored
    assert_exact(await client.test_package("v1", "arm"), False)


async def test_bitbake_client_unknown_command_raises_invoke_error(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    with pytest.raises(bb.asyncrpc.InvokeError):
        await client.invoke({"frobnicate": {}})
    assert_exact(await client.ping(), {"alive": True})


async def _fill_export_fixture(client: BitbakePRAsyncClient) -> None:
    """v1/arm: c0=0, c1=1, c2=2, c0=3; v1/x86: c0=0; v2/arm: x=0, y=1."""
    for version, pkgarch, checksum in [("v1", "arm", "c0"), ("v1", "arm", "c1"), ("v1", "arm", "c2"),
                                       ("v1", "arm", "c0"), ("v1", "x86", "c0"),
                                       ("v2", "arm", "x"), ("v2", "arm", "y")]:
        await client.getPR(version, pkgarch, checksum)


EXPORT_ALL_ROWS = [
    row("v1", "arm", "c0", "0"), row("v1", "arm", "c0", "3"), row("v1", "arm", "c1", "1"),
    row("v1", "arm", "c2", "2"), row("v1", "x86", "c0", "0"), row("v2", "arm", "x", "0"),
    row("v2", "arm", "y", "1"),
]
EXPORT_MAX_ROWS = [row("v1", "arm", "c0", "3"), row("v1", "x86", "c0", "0"), row("v2", "arm", "y", "1")]


async def test_bitbake_client_export_colinfo(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    await _fill_export_fixture(client)
    metainfo, datainfo = await client.export(None, None, None, False)
    assert_exact(metainfo, {})
    assert sorted_rows(datainfo) == EXPORT_MAX_ROWS
    metainfo, datainfo = await client.export(None, None, None, True)
    assert_exact(metainfo, PRMAIN_METAINFO)
    assert sorted_rows(datainfo) == EXPORT_MAX_ROWS


async def test_bitbake_client_export_history(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    await _fill_export_fixture(client)
    _, datainfo = await client.export(None, None, None, False, history=True)
    assert sorted_rows(datainfo) == EXPORT_ALL_ROWS
    _, datainfo = await client.export(None, None, None, False, history=False)
    assert sorted_rows(datainfo) == EXPORT_MAX_ROWS


@pytest.mark.parametrize("filters, history, expected", [
    (("v1", None, None), False, [row("v1", "arm", "c0", "3"), row("v1", "x86", "c0", "0")]),
    ((None, "arm", None), False, [row("v1", "arm", "c0", "3"), row("v2", "arm", "y", "1")]),
    (("v1", "arm", "c0"), False, [row("v1", "arm", "c0", "3")]),
    ((None, None, "c1"), False, []),          # c1 does not hold its package's max
    ((None, None, "c1"), True, [row("v1", "arm", "c1", "1")]),
    ((None, None, "c0"), True, [row("v1", "arm", "c0", "0"), row("v1", "arm", "c0", "3"),
                                row("v1", "x86", "c0", "0")]),
    (("v1", "arm", None), True, [row("v1", "arm", "c0", "0"), row("v1", "arm", "c0", "3"),
                                 row("v1", "arm", "c1", "1"), row("v1", "arm", "c2", "2")]),
    (("", "", ""), True, EXPORT_ALL_ROWS),    # empty filters mean "any"
    (("v3", None, None), True, []),
])
async def test_bitbake_client_export_filters(our_server_and_bitbake_client, filters, history, expected):
    _, client = our_server_and_bitbake_client
    await _fill_export_fixture(client)
    metainfo, datainfo = await client.export(*filters, False, history=history)
    assert_exact(metainfo, {})
    assert sorted_rows(datainfo) == expected


async def test_bitbake_client_is_readonly(start_server, bitbake_client):
    writer = await start_server(db="shared.sqlite3")
    writer_client = await bitbake_client(writer)
    assert_exact(await writer_client.getPR("v1", "arm", "c0"), "0")
    reader = await start_server(db="shared.sqlite3", read_only=True)
    reader_client = await bitbake_client(reader)
    assert_exact(await writer_client.is_readonly(), False)
    assert_exact(await reader_client.is_readonly(), True)


async def test_bitbake_client_against_read_only_server(start_server, bitbake_client):
    writer = await start_server(db="shared.sqlite3")
    writer_client = await bitbake_client(writer)
    for checksum in ("c0", "c1"):
        await writer_client.getPR("v1", "arm", checksum)
    reader_client = await bitbake_client(await start_server(db="shared.sqlite3", read_only=True))
    assert_exact(await reader_client.getPR("v1", "arm", "c1"), "1")
    assert_exact(await reader_client.getPR("v1", "arm", "new"), "2")        # answered, not stored
    assert_exact(await reader_client.test_pr("v1", "arm", "new"), None)
    assert_exact(await reader_client.importone("v1", "arm", "k", "9"), None)  # answer is null
    assert_exact(await reader_client.test_pr("v1", "arm", "k"), None)
    assert_exact(await reader_client.max_package_pr("v1", "arm"), "1")
    # Rows the writer adds later are visible through the read-only server.
    assert_exact(await writer_client.getPR("v1", "arm", "c2"), "2")
    assert_exact(await reader_client.test_pr("v1", "arm", "c2"), "2")


async def test_bitbake_client_receives_chunked_export(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    expected = [row("big", "arm", hashlib.sha256(b"%d" % i).hexdigest(), str(i)) for i in range(1200)]
    for r in expected:
        assert_exact(await client.importone(r["version"], r["pkgarch"], r["checksum"], r["value"]), r["value"])
    metainfo, datainfo = await client.export("big", None, None, True, history=True)
    assert len(json.dumps({"metainfo": metainfo, "datainfo": datainfo})) > BEYOND_LINE_LIMIT
    assert_exact(metainfo, PRMAIN_METAINFO)
    assert sorted_rows(datainfo) == sorted_rows(expected)
    _, datainfo = await client.export("big", None, None, False)
    assert datainfo == [expected[-1]]


async def test_bitbake_client_sends_chunked_request(our_server_and_bitbake_client):
    _, client = our_server_and_bitbake_client
    checksum = "x" * 70000
    assert_exact(await client.importone("v1", "arm", checksum, "5"), "5")
    assert_exact(await client.test_pr("v1", "arm", checksum), "5")
    assert_exact(await client.getPR("v1", "arm", checksum), "5")
    assert_exact(await client.test_pr("v1", "arm", "x" * 69999), None)
    _, datainfo = await client.export(None, None, checksum, False, history=True)
    assert datainfo == [row("v1", "arm", checksum, "5")]


async def test_bitbake_client_non_ascii_chunked_round_trip(our_server_and_bitbake_client):
    """bitbake escapes non-ASCII as \\uXXXX (surrogate pairs too); chunk cuts may split them."""
    _, client = our_server_and_bitbake_client
    checksum = "é😀" * 20000                 # ~240 000 characters on the wire
    assert_exact(await client.importone("vé", "arm", checksum, "1"), "1")
    assert_exact(await client.test_pr("vé", "arm", checksum), "1")
    _, datainfo = await client.export("vé", None, None, False, history=True)
    assert datainfo == [row("vé", "arm", checksum, "1")]


async def test_bitbake_client_chunk_ending_in_space_keeps_the_space(our_server_and_bitbake_client):
    """A chunk line may end inside a JSON string with a space; only its '\\n' is framing."""
    _, client = our_server_and_bitbake_client
    prefix = json.dumps({"import-one": {"version": "v1", "pkgarch": "arm", "checksum": ""}})[:-3]
    cut = 32767 - len(prefix)                 # checksum index of the first chunk's last char
    checksum = "a" * (cut - 1) + " " + "b" * 40000
    request = {"import-one": {"version": "v1", "pkgarch": "arm", "checksum": checksum, "value": "4"}}
    assert json.dumps(request)[32766] == " "
    assert_exact(await client.importone("v1", "arm", checksum, "4"), "4")
    assert_exact(await client.test_pr("v1", "arm", checksum), "4")
    assert_exact(await client.test_pr("v1", "arm", checksum.replace(" ", "")), None)


# =========================================================================== part 2
# our clients -> bitbake's server stack

# (method, args, expected answer) against a fresh InMemoryBitbakePRServer, in order.
BASIC_STEPS = [
    ("ping", (), {"alive": True}),
    ("is_readonly", (), False),
    ("test_package", ("v1", "arm"), False),
    ("max_package_pr", ("v1", "arm"), None),
    ("test_pr", ("v1", "arm", "c0"), None),
    ("getPR", ("v1", "arm", "c0"), "0"),
    ("getPR", ("v1", "arm", "c1"), "1"),
    ("getPR", ("v1", "arm", "c0"), "0"),
    ("getPR", ("v1", "arm", "c2", True), "2"),
    ("test_pr", ("v1", "arm", "c1"), "1"),
    ("test_pr", ("v1", "arm", "c1", True), "1"),
    ("test_package", ("v1", "arm"), True),
    ("max_package_pr", ("v1", "arm"), "2"),
    ("importone", ("v1", "arm", "c9", "7"), "7"),
    ("importone", ("v1", "arm", "c8", 11), 11),
    ("test_pr", ("v1", "arm", "c8"), "11"),
    ("max_package_pr", ("v1", "arm"), "11"),
    ("getPR", ("v1", "arm", "c3"), "12"),
    ("export", (None, None, None, False), ({}, [row("v1", "arm", "c3", "12")])),
    ("export", (None, None, None, True, True), (PRMAIN_METAINFO, [
        row("v1", "arm", "c0", "0"), row("v1", "arm", "c1", "1"), row("v1", "arm", "c2", "2"),
        row("v1", "arm", "c9", "7"), row("v1", "arm", "c8", "11"), row("v1", "arm", "c3", "12")])),
    ("export", ("v1", "arm", "c9", False, True), ({}, [row("v1", "arm", "c9", "7")])),
    ("export", ("v2", None, None, False, True), ({}, [])),
]

# Big rows: 200 checksums of ~600 characters; their export is ~130 KB.
BIG_ROWS = [row("big", "arm", "%04d-" % i + "c" * 600, str(i)) for i in range(200)]
HUGE_CHECKSUM = "x" * 70000


def test_our_client_methods_against_bitbake_server(our_client):
    for method, args, expected in BASIC_STEPS:
        assert_exact(getattr(our_client, method)(*args), expected, "%s%r" % (method, args))


async def test_our_async_client_methods_against_bitbake_server(bitbake_server):
    client = await prserv.create_async_client(bitbake_server.address)
    assert isinstance(client, prserv.client.PRAsyncClient)
    async with client:
        for method, args, expected in BASIC_STEPS:
            assert_exact(await getattr(client, method)(*args), expected, "%s%r" % (method, args))


def test_our_client_against_read_only_bitbake_server(start_bitbake_server):
    with prserv.create_client(start_bitbake_server(read_only=True).address) as client:
        assert_exact(client.is_readonly(), True)
        assert_exact(client.importone("v1", "arm", "c0", "3"), None)        # null answer -> None
        assert_exact(client.test_pr("v1", "arm", "c0"), None)


def test_our_client_invoke_error_from_bitbake_server(our_client):
    with pytest.raises(prserv.asyncrpc.InvokeError) as excinfo:
        our_client.importone("v1", "arm", "bad", "1x")
    assert str(excinfo.value) == "invalid import value '1x'"
    assert not isinstance(excinfo.value, bb.asyncrpc.InvokeError)
    # The client recovers on a new connection; nothing was stored.
    assert_exact(our_client.test_pr("v1", "arm", "bad"), None)
    assert_exact(our_client.getPR("v1", "arm", "good"), "0")


async def test_our_async_client_invoke_error_from_bitbake_server(bitbake_server):
    async with await prserv.create_async_client(bitbake_server.address) as client:
        with pytest.raises(prserv.asyncrpc.InvokeError) as excinfo:
            await client.importone("v1", "arm", "bad", "")
        assert str(excinfo.value) == "invalid import value ''"
        assert_exact(await client.ping(), {"alive": True})


def test_our_client_receives_chunked_export_from_bitbake_server(our_client):
    for r in BIG_ROWS:
        assert_exact(our_client.importone(r["version"], r["pkgarch"], r["checksum"], r["value"]), r["value"])
    metainfo, datainfo = our_client.export(None, None, None, True, True)
    assert len(json.dumps({"metainfo": metainfo, "datainfo": datainfo})) > BEYOND_LINE_LIMIT
    assert_exact(metainfo, PRMAIN_METAINFO)
    assert datainfo == BIG_ROWS
    assert_exact(our_client.export("big", "arm", None, False), ({}, [BIG_ROWS[-1]]))


def test_our_client_sends_chunked_request_to_bitbake_server(our_client):
    assert_exact(our_client.importone("v1", "arm", HUGE_CHECKSUM, "5"), "5")
    assert_exact(our_client.test_pr("v1", "arm", HUGE_CHECKSUM), "5")
    assert_exact(our_client.getPR("v1", "arm", HUGE_CHECKSUM), "5")
    assert_exact(our_client.export(None, None, HUGE_CHECKSUM, False, True),
                 ({}, [row("v1", "arm", HUGE_CHECKSUM, "5")]))          # chunked both ways


async def test_our_async_client_large_messages_with_bitbake_server(bitbake_server):
    async with await prserv.create_async_client(bitbake_server.address) as client:
        for r in BIG_ROWS:
            await client.importone(r["version"], r["pkgarch"], r["checksum"], r["value"])
        assert_exact(await client.importone("v1", "arm", HUGE_CHECKSUM, "5"), "5")
        assert_exact(await client.test_pr("v1", "arm", HUGE_CHECKSUM), "5")
        _, datainfo = await client.export(None, None, None, False, True)
        assert datainfo == BIG_ROWS + [row("v1", "arm", HUGE_CHECKSUM, "5")]
