"""The HTTP listener's JSON API beyond the status: ``/api/v1/history`` (a package's
rows in numeric value order, with an ETag), on real servers over real sockets, on
both engines, and on a mirror, which must answer what its source answers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.parse
from typing import Tuple

import pytest

import prserv

from conftest import ENGINES
from test_http import Answer, exchange, request

pytest.importorskip("h11")

V, A = "zlib-1.3-r0", "core2-64"
IMPORTED = [("c9", "9"), ("c10", "10"), ("a19", "1.9"), ("a110", "1.10"), ("b10", "10")]


@pytest.fixture(params=ENGINES)
def engine_kind(request):
    return request.param


async def get(address: str, target: str, *headers: str) -> Answer:
    """One GET on a connection of its own, closed after it: the answer is every byte
    until the close (a 304 has no Content-Length, its 200 would have had)."""
    data = await exchange(address, request("GET", target, *headers, close=True))
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    _, status, reason = status_line.split(" ", 2)
    answer = Answer(int(status), reason, [tuple(part.strip() for part in line.split(":", 1))  # type: ignore[misc]
                                          for line in lines], body)
    if "content-length" in answer.header:
        assert len(body) == int(answer.header["content-length"])
    return answer


def stamped(items: list, earliest: float, latest: float) -> list:
    """``items`` with each ``given`` checked to be an RFC 3339 UTC time within
    [earliest, latest] (seconds since the epoch) and replaced by ``"T"``."""
    from prserv.timestamps import parse_rfc3339

    checked = []
    for found in items:
        given = found["given"]
        assert isinstance(given, str) and given.endswith("Z") and len(given) == 27, given
        assert int(earliest * 1e6) - 1 <= parse_rfc3339(given) <= int(latest * 1e6) + 1, (given, earliest, latest)
        checked.append(dict(found, given="T"))
    return checked


def history_target(version: str = V, pkgarch: str = A) -> str:
    return "/api/v1/history?version=%s&pkgarch=%s" % (version, pkgarch)


async def test_history_lists_every_row_in_numeric_value_order_with_an_etag(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    before = time.time()
    async with await prserv.create_async_client(server.address) as client:
        for checksum, value in IMPORTED:
            await client.importone(V, A, checksum, value)
        assert await client.getPR(V, A, "new") == "11"
        assert await client.getPR(V, A, "c9") == "12"          # no history: bumped past 11
    after = time.time()
    answer = await get(address, history_target())
    assert answer.status == 200
    assert answer.header["content-type"] == "application/json"
    document = answer.json()
    imported = {"given": "T", "address": None, "user": None}    # an import names nobody
    given = {"given": "T", "address": "127.0.0.1", "user": None}
    document["history"] = stamped(document["history"], before, after)
    assert document == {"version": V, "pkgarch": A, "latest": "12", "history": [
        dict(imported, checksum="a19", value="1.9"),
        dict(imported, checksum="a110", value="1.10"),
        dict(imported, checksum="c9", value="9"),
        dict(imported, checksum="b10", value="10"),
        dict(imported, checksum="c10", value="10"),
        dict(given, checksum="new", value="11"),
        dict(given, checksum="c9", value="12")]}
    tag = answer.header["etag"]
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 34

    again = await get(address, history_target(), "If-None-Match: %s" % tag)
    assert (again.status, again.body, again.header["etag"]) == (304, b"", tag)
    assert "content-length" not in again.header

    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR(V, A, "newer") == "13"
    changed = await get(address, history_target(), "If-None-Match: %s" % tag)
    assert changed.status == 200 and changed.header["etag"] != tag
    newest = changed.json()["history"][-1]
    assert (newest["checksum"], newest["value"], newest["address"]) == ("newer", "13", given["address"])


async def test_history_of_an_unknown_package_is_404_and_a_missing_parameter_400(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    unknown = await get(address, history_target("nothing-1.0-r0"))
    assert (unknown.status, unknown.json()) == (404, {"error": {"message": "no package nothing-1.0-r0/core2-64"}})
    missing = await get(address, "/api/v1/history?version=%s" % V)
    assert (missing.status, missing.json()) == (400, {"error": {"message": "query parameter 'pkgarch' is required"}})
    twice = await get(address, history_target() + "&version=other")
    assert (twice.status, twice.json()) == (400, {"error": {"message": "query parameter 'version' is given 2 times"}})
    empty = await get(address, "/api/v1/history?version=&pkgarch=%s" % A)
    assert empty.status == 400


async def test_percent_encoded_names_and_a_legacy_value_last(tmp_path, start_server, engine_kind):
    if engine_kind != "sqlite":
        pytest.skip("a legacy value is written straight into a SQLite file")
    path = str(tmp_path / "legacy.sqlite3")
    version = "a b&c=d/é-1.0-r0"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE PRMAIN (version TEXT, pkgarch TEXT, checksum TEXT, value TEXT, "
                     "PRIMARY KEY (version, pkgarch, checksum, value))")
        conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                         [(version, A, "x", "abc"), (version, A, "y", "2"), (version, A, "z", "10")])
    server = await start_server(db=path, http="127.0.0.1:0")
    target = "/api/v1/history?version=a%20b%26c%3Dd%2F%C3%A9-1.0-r0&pkgarch=" + A
    answer = await get(server.http_addresses[0], target)
    unknown = {"given": None, "address": None, "user": None}      # stored before the record
    assert answer.json() == {"version": version, "pkgarch": A, "latest": "10", "history": [
        dict(unknown, checksum="y", value="2"), dict(unknown, checksum="z", value="10"),
        dict(unknown, checksum="x", value="abc")]}


async def test_a_mirror_answers_the_history_its_source_answers(tmp_path, start_server):
    """The same rows with the same times (the feed carries them), but never an address
    or a user: those stay at the origin (a public mirror must not publish host names)."""
    source = await start_server(db="source.sqlite3", http="127.0.0.1:0")
    async with await prserv.create_async_client(source.address) as client:
        for checksum, value in IMPORTED:
            await client.importone(V, A, checksum, value)
        await client.getPR(V, A, "c9")
    mirror = prserv.create_server("127.0.0.1:0", str(tmp_path / "mirror.sqlite3"), mirror=source.address,
                                  http="127.0.0.1:0")       # a mirror's copy is a SQLite file
    await mirror.start_serving()
    try:
        from_source, from_mirror = await _compare(source, mirror)
    finally:
        await mirror.stop_serving()
    assert all(item["given"] is not None for item in from_source)
    assert any(item.get("address") == "127.0.0.1" for item in from_source), from_source
    assert all(item.get("address") is None and item.get("user") is None for item in from_mirror), from_mirror


async def _compare(source, mirror) -> Tuple[list, list]:
    """Both histories once the mirror has copied every row: the same checksums, values
    and times."""
    deadline = time.monotonic() + 10
    while True:                                         # the mirror has copied every row
        async with await prserv.create_async_client(mirror.address) as client:
            state = await client.mirror_status()
        if state["state"] == "following" and state["rows_behind"] == 0:
            break
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.02)
    from_source = await get(source.http_addresses[0], history_target())
    from_mirror = await get(mirror.http_addresses[0], history_target())
    assert from_source.status == from_mirror.status == 200
    rows = [{key: item[key] for key in ("checksum", "value", "given")} for item in from_source.json()["history"]]
    assert [{key: item[key] for key in ("checksum", "value", "given")}
            for item in from_mirror.json()["history"]] == rows
    assert json.loads(from_mirror.body)["latest"] == "11"
    return from_source.json()["history"], from_mirror.json()["history"]


# --------------------------------------------------------------------------- packages

PACKAGES = [("zlib-1.3-r0", "core2-64"), ("zlib-1.3-r0", "armv7a"), ("zlibx-1.0-r0", "core2-64"),
            ("Zlib-2.0-r0", "core2-64"), ("a-1.0-r0", "core2-64"), ("\u00e9-1.0-r0", "core2-64"),
            ("zlib", "core2-64")]


async def fill(address: str) -> None:
    """Each package above gets values 0 .. n-1 (n its place in the list, plus one)."""
    async with await prserv.create_async_client(address) as client:
        for n, (version, pkgarch) in enumerate(PACKAGES):
            for i in range(n + 1):
                await client.getPR(version, pkgarch, "c%d" % i)


def item(version: str, pkgarch: str) -> dict:
    return {"version": version, "pkgarch": pkgarch, "latest": str(PACKAGES.index((version, pkgarch))),
            "given": "T"}


async def listed(server, target: str) -> dict:
    """The packages page at ``target``, each item's ``given`` checked to be the time
    its latest value was given (as the package's history says) and replaced by "T"."""
    page = (await get(server.http_addresses[0], target)).json()
    for found in page["items"]:
        query = urllib.parse.urlencode({"version": found["version"], "pkgarch": found["pkgarch"]})
        history = (await get(server.http_addresses[0], "/api/v1/history?" + query)).json()
        [row] = [row for row in history["history"] if row["value"] == found["latest"]]
        assert found["given"] == row["given"]
        assert found["given"] is not None
        found["given"] = "T"
    return page


async def test_packages_in_byte_order_with_a_literal_prefix_and_a_pkgarch(start_server):
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    every = await get(address, "/api/v1/packages")
    assert every.status == 200 and every.header["etag"]
    assert await listed(server, "/api/v1/packages") == {"items": [item(*package) for package in sorted(
        PACKAGES, key=lambda p: (p[0].encode("utf-8"), p[1].encode("utf-8")))], "next": None}
    assert [i["version"] for i in every.json()["items"]][:2] == ["Zlib-2.0-r0", "a-1.0-r0"]   # bytes: Z < a
    assert every.json()["items"][-1]["version"] == "\u00e9-1.0-r0"                          # and z < é
    zlib = await listed(server, "/api/v1/packages?prefix=zlib")
    assert zlib["items"] == [item("zlib", "core2-64"), item("zlib-1.3-r0", "armv7a"),
                                    item("zlib-1.3-r0", "core2-64"), item("zlibx-1.0-r0", "core2-64")]
    narrow = await listed(server, "/api/v1/packages?prefix=zlib-&pkgarch=core2-64")
    assert narrow["items"] == [item("zlib-1.3-r0", "core2-64")]
    accented = await listed(server, "/api/v1/packages?prefix=%C3%A9")
    assert accented["items"] == [item("\u00e9-1.0-r0", "core2-64")]
    none = await get(address, "/api/v1/packages?prefix=zz")
    assert none.json() == {"items": [], "next": None}


async def test_paging_neither_repeats_nor_skips_while_values_are_added(start_server):
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    first = await get(address, "/api/v1/packages?prefix=zlib&limit=2")
    page = await listed(server, "/api/v1/packages?prefix=zlib&limit=2")
    assert page["items"] == [item("zlib", "core2-64"), item("zlib-1.3-r0", "armv7a")]
    assert page["next"] is not None
    assert first.header["link"] == '</api/v1/packages?prefix=zlib&limit=2&after=%s>; rel="next"' % page["next"]
    async with await prserv.create_async_client(server.address) as client:
        await client.getPR("zlib", "core2-64", "late")             # a value in a package shown
        await client.getPR("zlib-0", "core2-64", "late")           # a package new since, before the cursor
        await client.getPR("zlibz", "core2-64", "late")            # and one after it
    second = await listed(server, "/api/v1/packages?prefix=zlib&limit=2&after=" + page["next"])
    assert second["items"] == [item("zlib-1.3-r0", "core2-64"), item("zlibx-1.0-r0", "core2-64")]
    third = await listed(server, "/api/v1/packages?prefix=zlib&limit=2&after=" + second["next"])
    assert third == {"items": [{"version": "zlibz", "pkgarch": "core2-64", "latest": "0", "given": "T"}],
                     "next": None}


async def test_packages_refuses_a_bad_limit_or_cursor(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    for query in ("limit=0", "limit=1001", "limit=abc", "limit=1000000000", "limit=-1"):
        answer = await get(address, "/api/v1/packages?" + query)
        assert (answer.status, answer.json()) == (400, {"error": {
            "message": "query parameter 'limit' must be a whole number from 1 to 1000"}}), query
    for cursor in ("garbage", "W10", "WyJhIl0", "eyJhIjogMX0"):       # not base64 JSON, [], ["a"], {"a": 1}
        answer = await get(address, "/api/v1/packages?after=" + cursor)
        assert (answer.status, answer.json()) == (400, {"error": {
            "message": "query parameter 'after' is not a cursor this server gave"}}), cursor
    assert (await get(address, "/api/v1/packages?limit=1000")).status == 200


def test_the_end_of_a_prefix_is_its_last_character_made_the_next():
    from prserv.storage.engine import prefix_end

    assert prefix_end("zlib") == "zlic"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None and prefix_end("") is None
    assert prefix_end("\ud7ff") == "\ue000"                            # past the surrogates
    assert all(text.startswith("zlib") == ("zlib" <= text < "zlic")
               for text in ("zli", "zlib", "zlib\U0010ffff", "zlic", "zlia\U0010ffff", "zlib-1"))


async def test_a_prefix_is_literal_text_not_a_pattern(start_server):
    server = await start_server(http="127.0.0.1:0")
    versions = ["a%b-1", "axb-1", "a_b-1", "a'b-1", "a*b-1", "a[b-1"]
    async with await prserv.create_async_client(server.address) as client:
        for version in versions:
            await client.getPR(version, "all", "c")
    address = server.http_addresses[0]
    for prefix, expected in (("a%25", ["a%b-1"]), ("a_", ["a_b-1"]), ("a%27", ["a'b-1"]), ("a*", ["a*b-1"]),
                             ("a%5B", ["a[b-1"]), ("a", sorted(versions))):
        answer = await get(address, "/api/v1/packages?prefix=" + prefix)
        assert [found["version"] for found in answer.json()["items"]] == expected, prefix


# --------------------------------------------------------------------------- the description

async def test_every_answer_matches_the_openapi_description_and_every_path_is_served(start_server):
    """The API's description (``/api/v1/openapi.json``) held to real answers: every
    kind of answer validated against the schema given for its path and status, every
    path described is served, and every path served is described."""
    jsonschema = pytest.importorskip("jsonschema")
    server = await start_server(http="127.0.0.1:0")
    await fill(server.address)
    address = server.http_addresses[0]
    spec = (await get(address, "/api/v1/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    first = (await get(address, "/api/v1/packages?limit=2")).json()
    recent = (await get(address, "/api/v1/recent?limit=2")).json()
    answers = [
        ("/api/v1/status", "/api/v1/status"),
        ("/api/v1/history", history_target("zlib-1.3-r0", "core2-64")),
        ("/api/v1/history", history_target("nothing", "core2-64")),
        ("/api/v1/history", "/api/v1/history?version=x"),
        ("/api/v1/packages", "/api/v1/packages"),
        ("/api/v1/packages", "/api/v1/packages?limit=2&after=" + first["next"]),
        ("/api/v1/packages", "/api/v1/packages?prefix=none"),
        ("/api/v1/packages", "/api/v1/packages?limit=0"),
        ("/api/v1/recent", "/api/v1/recent?limit=3"),
        ("/api/v1/recent", "/api/v1/recent?since=2026-01-01T00:00:00Z&limit=2&after=%s" % recent["next"]),
        ("/api/v1/recent", "/api/v1/recent?since=yesterday"),
    ]
    seen = set()
    for path, target in answers:
        answer = await get(address, target)
        schema = spec["paths"][path]["get"]["responses"][str(answer.status)]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(schema).validate(answer.json())
        seen.add((path, answer.status))
    assert seen == {("/api/v1/status", 200), ("/api/v1/history", 200), ("/api/v1/history", 404),
                    ("/api/v1/history", 400), ("/api/v1/packages", 200), ("/api/v1/packages", 400),
                    ("/api/v1/recent", 200), ("/api/v1/recent", 400)}
    for path in spec["paths"]:
        assert (await get(address, path)).status != 404, path
    from prserv.server import web
    served = {value for name, value in vars(web).items() if name.endswith("_PATH")}
    assert served - {web.METRICS_PATH} == set(spec["paths"])    # /metrics: Prometheus', to writers only
