"""The record of when each value was given (and to whom): written with its row, in
the same transaction, on real SQLite files and real servers; read by history,
``/api/v1/recent`` and the status' figures; erased by ``forget_clients``."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

import prserv
from prserv.client import PRAsyncClient
from prserv.timestamps import parse_rfc3339
from prserv.storage import open_engine
from prserv.storage.engine import Giver

from test_http_api import get
from test_tokens import add_user

V, A = "zlib-1.3-r0", "core2-64"


def us(seconds: float) -> int:
    return int(seconds * 1e6)


def records_in_file(path: str) -> dict:
    """PRMAIN rowid -> (checksum, value, time, address, user) as another connection
    reads the file: what is committed, rows and records together."""
    with sqlite3.connect(path) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT t.rowid, t.checksum, t.value, g.given, g.address, g.user FROM PRMAIN AS t "
            "LEFT JOIN prserv_PRMAIN_given AS g ON g.row = t.rowid ORDER BY t.rowid")}


async def store(engine, checksum: str, key, giver=Giver()) -> bool:
    async with engine.write(V, A, giver=giver) as scope:
        return await scope.store(checksum, key)


# --------------------------------------------------------------------------- the engine

async def test_each_committed_row_has_its_record_in_the_same_commit(tmp_path):
    """Another connection never sees a row without its record: the record is written
    inside the row's transaction (just before COMMIT), not after it."""
    path = str(tmp_path / "pr.sqlite3")
    engine = await open_engine(path)
    try:
        before = time.time()
        await store(engine, "c1", (0,), Giver("10.1.2.3", "alice"))
        await store(engine, "c2", (1,), Giver("10.1.2.4"))
        assert records_in_file(path) == {}                      # the turn's commit is pending
        await asyncio.sleep(0)                                  # the loop's next turn commits
        after = time.time()
        found = records_in_file(path)
        assert [row[:2] + row[3:] for row in found.values()] == [("c1", "0", "10.1.2.3", "alice"),
                                                                 ("c2", "1", "10.1.2.4", None)]
        assert all(us(before) <= row[2] <= us(after) for row in found.values())
        assert found[1][2] <= found[2][2]
    finally:
        await engine.close()


async def test_the_record_is_written_inside_the_transaction_of_its_rows(tmp_path):
    """The statements the connection runs for one turn of writes: the records go in one
    statement between BEGIN and COMMIT, so that a crash can never keep a value without
    its record (a record written after COMMIT would be lost with the process)."""
    engine = await open_engine(str(tmp_path / "pr.sqlite3"))
    statements = []
    try:
        engine.conn.set_trace_callback(statements.append)
        await store(engine, "c1", (0,), Giver("10.1.2.3"))
        await store(engine, "c2", (1,), Giver("10.1.2.3"))
        await asyncio.sleep(0)
        engine.conn.set_trace_callback(None)
        kinds = [text.split()[0] + (" record" if "prserv_PRMAIN_given" in text else "")
                 for text in statements if text.split()[0] in ("BEGIN", "INSERT", "COMMIT")]
        assert kinds == ["BEGIN", "INSERT", "INSERT", "INSERT record", "INSERT record", "COMMIT"]
    finally:
        await engine.close()


async def test_a_rolled_back_write_leaves_no_record(tmp_path):
    """A write scope of its own (no server's group commit) that fails is rolled back:
    its row and its queued record both go."""
    from prserv.storage.sqlite.database import SQLiteDatabase
    from prserv.storage.sqlite.engine import SQLiteEngine

    path = str(tmp_path / "pr.sqlite3")
    engine = SQLiteEngine(SQLiteDatabase(path))
    try:
        with pytest.raises(RuntimeError):
            async with engine.write(V, A, giver=Giver("10.0.0.1", "x")) as scope:
                await scope.store("lost", (0,))
                raise RuntimeError("the request failed after storing")
        await store(engine, "kept", (0,), Giver("10.0.0.2"))
        assert [row[:2] + row[3:] for row in records_in_file(path).values()] == [("kept", "0", "10.0.0.2", None)]
        assert [row[:2] for row in await engine.history(V, A)] == [("kept", "0")]
    finally:
        await engine.close()


async def test_history_recent_and_counts_read_the_record_and_rows_without_one_are_unknown(tmp_path):
    path = str(tmp_path / "pr.sqlite3")
    with sqlite3.connect(path) as conn:                         # rows bitbake's server wrote
        conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                     "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
        conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", [(V, A, "old0", "0"), (V, A, "old1", "1")])
    engine = await open_engine(path)
    try:
        start = time.time()
        for n in range(2, 6):
            await store(engine, "new%d" % n, (n,), Giver("10.0.0.%d" % n))
            await asyncio.sleep(0)
        history = sorted(await engine.history(V, A), key=lambda row: row[1])
        assert [(row[0], row[1], row[3]) for row in history] == [
            ("old0", "0", None), ("old1", "1", None), ("new2", "2", "10.0.0.2"), ("new3", "3", "10.0.0.3"),
            ("new4", "4", "10.0.0.4"), ("new5", "5", "10.0.0.5")]
        assert history[0][2] is None and history[1][2] is None and all(row[2] >= us(start) for row in history[2:])
        assert [row[:5] for row in await engine.recent(None, None, 3)] == [
            ("6", V, A, "new5", "5"), ("5", V, A, "new4", "4"), ("4", V, A, "new3", "3")]
        assert [row[3] for row in await engine.recent(None, "4", 10)] == ["new2", "old1", "old0"]
        third = history[3][2]                                   # new3's time
        assert [row[3] for row in await engine.recent(third, None, 10)] == ["new5", "new4", "new3"]
        assert [row[3] for row in await engine.recent(third, "5", 10)] == ["new3"]
        assert await engine.recent(us(time.time() + 3600), None, 10) == []
        assert (await engine.given_since(third), await engine.given_since(0)) == (3, 4)
        assert await engine.values_stored() == 6
        assert await engine.forget_clients(third) == 1          # new2 only: older than new3
        assert [row[3] for row in sorted(await engine.history(V, A), key=lambda row: row[1])] == [
            None, None, None, "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        assert [row[2] for row in sorted(await engine.history(V, A), key=lambda row: row[1])] == [
            row[2] for row in history]                          # times stay
    finally:
        await engine.close()


# --------------------------------------------------------------------------- a real server

async def test_get_pr_records_the_address_and_the_user_import_one_the_time_only(start_server):
    server = await start_server(http="127.0.0.1:0")
    writer = await add_user(server, "ci", ["write"])
    before = time.time()
    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR(V, A, "anonymous") == "0"
        await client.importone(V, A, "imported", "7")
    client = PRAsyncClient(credentials=writer)
    await client.connect_address(server.address)
    async with client:
        assert await client.getPR(V, A, "proved") == "8"
        assert await client.getPR(V, A, "proved") == "8"          # known: nothing new recorded
    after = time.time()
    recent = (await get(server.http_addresses[0], "/api/v1/recent")).json()
    assert [(item["checksum"], item["value"], item["address"], item["user"]) for item in recent["items"]] == [
        ("proved", "8", "127.0.0.1", "ci"), ("imported", "7", None, None), ("anonymous", "0", "127.0.0.1", None)]
    times = [parse_rfc3339(item["given"]) for item in recent["items"]]
    assert us(before) <= times[2] <= times[1] <= times[0] <= us(after)
    assert recent["next"] is None
    status = (await get(server.http_addresses[0], "/api/v1/status")).json()
    assert status["figures"] == {"packages": 1, "values": 3, "given_24h": 3}


async def test_record_clients_off_records_times_only(start_server):
    server = await start_server(http="127.0.0.1:0", record_clients=False)
    writer = await add_user(server, "ci", ["write"])
    client = PRAsyncClient(credentials=writer)
    await client.connect_address(server.address)
    async with client:
        assert await client.getPR(V, A, "c") == "0"
    [row] = await server.engine.history(V, A)
    assert (row[0], row[1], row[3], row[4]) == ("c", "0", None, None) and row[2] is not None


async def test_recent_pages_newest_first_neither_repeat_nor_skip_while_values_are_added(start_server):
    server = await start_server(http="127.0.0.1:0")
    address = server.http_addresses[0]
    async with await prserv.create_async_client(server.address) as client:
        for n in range(5):
            await client.getPR(V, A, "c%d" % n)
        first = await get(address, "/api/v1/recent?limit=2")
        page = first.json()
        assert [item["checksum"] for item in page["items"]] == ["c4", "c3"]
        assert first.header["link"] == '</api/v1/recent?limit=2&after=%s>; rel="next"' % page["next"]
        await client.getPR(V, A, "late")                         # newer than every page: not in them
        second = (await get(address, "/api/v1/recent?limit=2&after=" + page["next"])).json()
        assert [item["checksum"] for item in second["items"]] == ["c2", "c1"]
        third = (await get(address, "/api/v1/recent?limit=2&after=" + second["next"])).json()
        assert ([item["checksum"] for item in third["items"]], third["next"]) == (["c0"], None)
        since = (await get(address, "/api/v1/recent?since=" + second["items"][0]["given"])).json()
        assert [item["checksum"] for item in since["items"]] == ["late", "c4", "c3", "c2"]
        for bad in ("yesterday", "2026-12-06", "2026-12-06T08:00:00", "2026-13-01T00:00:00Z"):
            answer = await get(address, "/api/v1/recent?since=" + bad)
            message = answer.json()["error"]["message"]
            assert answer.status == 400 and ("RFC 3339" in message or "not a time" in message), bad
        for cursor in ("garbage", "WyJ4Il0", "WyIxIiwiMiJd"):      # not base64 JSON, ["x"], ["1","2"]
            answer = await get(address, "/api/v1/recent?after=" + cursor)
            assert (answer.status, answer.json()) == (400, {"error": {
                "message": "query parameter 'after' is not a cursor this server gave"}}), cursor


async def test_a_viewer_that_may_not_write_sees_times_but_not_whom(start_server):
    from prserv.access import AccessRules

    server = await start_server(http="127.0.0.1:0", access=AccessRules(allow_write=["127.0.0.2"]))
    writer = await add_user(server, "ci", ["write"])
    client = PRAsyncClient(credentials=writer)
    await client.connect_address(server.address)
    async with client:
        assert await client.getPR(V, A, "c") == "0"
    address = server.http_addresses[0]
    [item] = (await get(address, "/api/v1/recent")).json()["items"]
    assert sorted(item) == ["checksum", "given", "pkgarch", "value", "version"]
    [row] = (await get(address, "/api/v1/history?version=%s&pkgarch=%s" % (V, A))).json()["history"]
    assert sorted(row) == ["checksum", "given", "value"]


# --------------------------------------------------------------------------- the package count

def test_the_package_count_is_walked_in_steps_and_counts_a_package_new_during_the_walk_once(tmp_path, monkeypatch):
    """A table of 1,201 packages (bitbake's rows, no record) counted 500 seeks per
    call (set so here; the engine takes 50): unknown for two calls, then exact; packages stored meanwhile -- before and
    after the walk's place, and into a package already walked -- each count once."""
    from prserv.storage.sqlite import counting

    monkeypatch.setattr(counting, "STEP", 500)
    path = str(tmp_path / "pr.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                 "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                     [("p%04d" % n, "x", "c%d" % i, str(i)) for n in range(1201) for i in range(2)])
    conn.commit()
    counter = counting.PackageCounter(conn, "PRMAIN")

    def add(version: str) -> int:
        conn.execute("INSERT INTO PRMAIN VALUES (?, 'x', 'late', '9')", (version,))
        conn.commit()
        return conn.execute("SELECT max(rowid) FROM PRMAIN").fetchone()[0]

    assert counter.count(2402) is None                          # 500 packages walked
    committed = add("p0001-new")                                # before the walk's place: not walked again
    committed = add("p9999-new")                                # after it: walked, but new since the start
    committed = add("p0005")                                    # a package walked already
    assert counter.count(committed) is None                     # 1,000
    assert counter.count(committed) == 1201 + 2                 # done: the new ones come from the rows after
    committed = add("q-new")
    assert counter.count(committed) == 1204
    assert counter.count(committed) == 1204
    conn.close()


async def test_since_is_a_binary_search_over_rows_that_agrees_with_reading_every_record(tmp_path, monkeypatch):
    """Records with gaps (rows stored without a record in between) and equal times: the
    first record given since T, and the count since T, as reading every record says,
    for every T around each time; forget_clients in slices of 7 rows changes exactly
    the records older than T."""
    from prserv.storage.sqlite import engine as sqlite_engine

    path = str(tmp_path / "pr.sqlite3")
    engine = await open_engine(path)
    try:
        await store(engine, "first", (0,))
        await asyncio.sleep(0)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("DELETE FROM prserv_PRMAIN_given")
            rows = []
            for n in range(1, 60):
                conn.execute("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", (V, A, "c%d" % n, str(n)))
                if n % 5:                                       # every fifth row has no record
                    rows.append((conn.execute("SELECT max(rowid) FROM PRMAIN").fetchone()[0], 1000 + n // 3))
            conn.executemany("INSERT INTO prserv_PRMAIN_given VALUES (?, ?, '10.0.0.1', 'u')", rows)
        conn.close()
        for since in range(995, 1025):
            expected = [row for row, given in rows if given >= since]
            assert engine.record.first_since(since) == (expected[0] if expected else None), since
            assert await engine.given_since(since) == len(expected), since
        monkeypatch.setattr(sqlite_engine, "FORGET_SLICE", 7)
        assert await engine.forget_clients(1010) == len([1 for _, given in rows if given < 1010])
        assert await engine.forget_clients(1010) == 0
        kept = [row for row in records_in_file(path).values() if row[2] is not None]
        assert sorted((row[2] >= 1010, row[3]) for row in kept) == sorted(
            (given >= 1010, "10.0.0.1" if given >= 1010 else None) for _, given in rows)
    finally:
        await engine.close()


async def test_a_server_counts_many_packages_between_requests_and_then_keeps_the_count(start_server, tmp_path,
                                                                                      monkeypatch):
    """130 packages: the status' first answer does not know (one step of 50 done), the
    engine's task counts the rest between requests, and a package added later counts.
    (The day's count is shown for ``FIGURE_SECONDS``, here 0, before it is taken again.)"""
    from prserv.server import web

    monkeypatch.setattr(web, "FIGURE_SECONDS", 0.0)
    path = str(tmp_path / "many.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                 "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, 'x', 'c', '0')", [("p%03d" % n,) for n in range(130)])
    conn.commit()
    conn.close()
    server = await start_server(db=path, http="127.0.0.1:0")
    address = server.http_addresses[0]
    first = (await get(address, "/api/v1/status")).json()["figures"]
    assert first == {"packages": None, "values": 130, "given_24h": 0}
    figures = {}

    async def counted() -> bool:
        figures.update((await get(address, "/api/v1/status")).json()["figures"])
        return figures["packages"] is not None

    for _ in range(200):
        if await counted():
            break
        await asyncio.sleep(0.01)
    assert figures == {"packages": 130, "values": 130, "given_24h": 0}
    async with await prserv.create_async_client(server.address) as client:
        await client.getPR("new-1.0", "x", "c")
        await client.getPR("p000", "x", "c2")
    assert (await get(address, "/api/v1/status")).json()["figures"] == {"packages": 131, "values": 132,
                                                                         "given_24h": 2}
