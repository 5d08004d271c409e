"""The record of when each value was given, on PostgreSQL (schema version 3): every
row a write scope stores carries its time, address and user from the same statement;
``history``, ``recent``, ``given_since``, ``forget_clients`` and the listing read it;
a version 2 database is upgraded with its old rows unknown."""

from __future__ import annotations

import time

import pytest

import prserv
from prserv import tokens
from prserv.client import PRAsyncClient
from prserv.errors import InvalidRequestError, ReadOnlyError
from prserv.storage import open_engine
from prserv.storage.engine import NOBODY, Giver, WriteConflict

from pgcluster import schema_as_of

V, A = "zlib-1.3-r0", "core2-64"
ALICE = Giver("10.1.2.3", "alice")


def now_us() -> int:
    return time.time_ns() // 1000


def db_name(url: str) -> str:
    return url.split("/")[3].split("?")[0]


@pytest.fixture
async def engine(pg_cluster):
    engine = await open_engine(pg_cluster.new_database())
    yield engine
    await engine.close()


async def checked_next(engine, version, checksum, giver):
    async with engine.write(version, A, checksum, known=await engine.package(version, A, checksum),
                            giver=giver) as scope:
        return await scope.store_next(checksum)


async def set_times(pg_cluster, engine, times):
    """Give rows chosen times: {checksum: microseconds}."""
    for checksum, micros in times.items():
        pg_cluster.psql("UPDATE prmain SET given = to_timestamp(0) + interval '%d microseconds' "
                        "WHERE checksum = '%s'" % (micros, checksum), db_name(engine.url))


# --------------------------------------------------------------------------- writing

async def test_both_write_scopes_store_each_row_with_its_time_address_and_user(engine):
    before = now_us()
    assert await checked_next(engine, V, "c0", ALICE) == (0,)                          # CheckedWrite.store_next
    async with engine.write(V, A, "c1", known=await engine.package(V, A, "c1"),
                            giver=Giver("10.1.2.4", None)) as scope:
        assert await scope.store("c1", (5,)) is True                                   # CheckedWrite.store
    async with engine.write(V, A, "c2", giver=Giver("::1", "bob")) as scope:
        assert await scope.store_next("c2") == (6,)                                    # LockedWrite.store_next
        assert await scope.store("c2", (6, 1)) is True                                 # LockedWrite.store
    async with engine.write(V, A, "c3") as scope:                                      # NOBODY
        assert await scope.store("c3", (7,)) is True
    after = now_us()
    history = sorted(await engine.history(V, A), key=lambda row: row[:2])
    assert [(c, v, address, user) for c, v, _, address, user in history] == [
        ("c0", "0", "10.1.2.3", "alice"), ("c1", "5", "10.1.2.4", None), ("c2", "6", "::1", "bob"),
        ("c2", "6.1", "::1", "bob"), ("c3", "7", None, None)]
    times = [row[2] for row in history]
    assert all(isinstance(t, int) and before <= t <= after for t in times), (before, times, after)
    assert times == sorted(times)                   # stored one after another: their times in that order
    assert await engine.history(V, "other") == []


async def test_a_write_that_stores_nothing_leaves_no_record(engine, pg_cluster):
    await checked_next(engine, V, "c0", ALICE)
    stale = await engine.package(V, A, "late")
    with pytest.raises(RuntimeError):
        async with engine.write(V, A, "rolled", giver=ALICE) as scope:                # LockedWrite rolled back
            await scope.store_next("rolled")
            raise RuntimeError("the caller failed")
    await checked_next(engine, V, "c1", ALICE)
    with pytest.raises(WriteConflict):                                                # CheckedWrite refused
        async with engine.write(V, A, "late", known=stale, giver=Giver("10.9.9.9", "mallory")) as scope:
            await scope.store("late", (1,))
    async with engine.write(V, A, "c0", known=await engine.package(V, A, "c0"),
                            giver=Giver("10.9.9.9", "mallory")) as scope:
        assert await scope.store("c0", (0,)) is False                                 # there already
    assert sorted((c, v, a, u) for c, v, _, a, u in await engine.history(V, A)) == [
        ("c0", "0", "10.1.2.3", "alice"), ("c1", "1", "10.1.2.3", "alice")]
    assert pg_cluster.psql("SELECT count(*), count(given) FROM prmain", db_name(engine.url)).split() == ["2|2"]


async def test_copied_rows_have_no_record(engine):
    assert await engine.add_rows([(V, A, "copied", "3")]) == 1
    assert await engine.history(V, A) == [("copied", "3", None, None, None)]
    assert await engine.given_since(0) == 0


# --------------------------------------------------------------------------- reading

async def test_recent_newest_first_by_position_after_and_since(engine, pg_cluster):
    for i in range(5):
        await checked_next(engine, "p%d" % (i % 2), "c%d" % i, Giver("10.0.0.%d" % i, "u%d" % i))
    await engine.add_rows([("p9", A, "unknown", "0")])                               # no record
    await set_times(pg_cluster, engine, {"c%d" % i: 1000 * (i + 1) for i in range(5)})
    rows = await engine.recent(None, None, 10)
    assert [row[1:] for row in rows] == [("p9", A, "unknown", "0", None, None, None)] + [
        ("p%d" % (i % 2), A, "c%d" % i, str(i // 2), 1000 * (i + 1), "10.0.0.%d" % i, "u%d" % i)
        for i in reversed(range(5))]
    page = await engine.changes(None, 10)                                             # the feed's positions
    assert sorted(row[0] for row in rows) == sorted(row[0] for row in page.rows)
    assert await engine.recent(None, rows[1][0], 2) == rows[2:4]                      # after: exclusive
    assert await engine.recent(None, rows[-1][0], 2) == []
    assert await engine.recent(3000, None, 10) == rows[1:4]                           # given at or after 3000
    assert await engine.recent(3000, rows[1][0], 1) == rows[2:3]
    assert await engine.recent(3001, None, 10) == rows[1:3]
    assert await engine.recent(10 ** 6, None, 10) == []
    assert await engine.recent(None, None, 0) == []
    with pytest.raises(InvalidRequestError):
        await engine.recent(None, "12", 10)
    assert await engine.given_since(3000) == 3
    assert await engine.given_since(0) == 5                                           # unknown times uncounted
    assert await engine.given_since(10 ** 20) == 0                                    # past any time: held


async def test_the_feed_can_give_each_row_s_time_in_the_same_read(engine, pg_cluster):
    from prserv.storage.postgresql import feed

    for i in range(3):
        await checked_next(engine, V, "c%d" % i, ALICE)
    await engine.add_rows([(V, A, "copied", "7")])
    await set_times(pg_cluster, engine, {"c0": 10, "c1": 20, "c2": 30})
    async with engine.pool.acquire() as connection:
        plain = await feed.read_page(connection, None, 10, True)
        timed = await feed.read_page(connection, plain.rows[0][0], 10, True, with_given=True)
    assert [row[:5] for row in timed.rows] == plain.rows[1:] and timed.pending == plain.pending == 0
    assert [row[5] for row in timed.rows] == [20, 30, None]


async def test_recent_and_given_since_read_the_time_index_with_the_servers_generic_plans(engine, pg_cluster):
    from prserv.storage.postgresql import record

    name = db_name(engine.url)
    pg_cluster.psql("INSERT INTO prmain (version, pkgarch, checksum, value, key, given) SELECT 'p' || (i %% 50), "
                    "'a', 'c' || i, i::text, ARRAY[i]::numeric[], to_timestamp(i) FROM generate_series(1, 20000) "
                    "AS i; ANALYZE prmain".replace("%%", "%"), name)
    for query, types in ((record.RECENT_SINCE, "bigint, bigint, timestamptz"), (record.GIVEN_SINCE, "timestamptz"),
                         (record.FORGET_CLIENTS, "timestamptz")):
        arguments = {"bigint, bigint, timestamptz": "(9223372036854775807, 10, to_timestamp(19990))",
                     "timestamptz": "(to_timestamp(19990))"}[types]
        plan = pg_cluster.psql("SET plan_cache_mode = force_generic_plan; PREPARE q (%s) AS %s; "
                               "EXPLAIN EXECUTE q %s" % (types, query, arguments), name)
        assert "prmain_given" in plan and "Seq Scan" not in plan, plan


async def test_forget_clients_erases_old_addresses_and_users_and_keeps_the_times(engine, pg_cluster):
    for i in range(4):
        await checked_next(engine, V, "c%d" % i, ALICE if i != 2 else NOBODY)
    await set_times(pg_cluster, engine, {"c%d" % i: 1000 * (i + 1) for i in range(4)})
    assert await engine.forget_clients(1000) == 0            # strictly older only
    assert await engine.forget_clients(3000) == 2            # c0 and c1
    assert await engine.forget_clients(3001) == 0            # c2 had no client: nothing to erase
    history = sorted(await engine.history(V, A))
    assert history == [("c0", "0", 1000, None, None), ("c1", "1", 2000, None, None),
                       ("c2", "2", 3000, None, None), ("c3", "3", 4000, "10.1.2.3", "alice")]
    reader = await open_engine(engine.url, read_only=True)
    try:
        with pytest.raises(ReadOnlyError):
            await reader.forget_clients(10 ** 17)
        assert sorted(await reader.history(V, A)) == history
    finally:
        await reader.close()


async def test_a_listing_gives_when_each_package_s_largest_value_was_first_given(engine, pg_cluster):
    await checked_next(engine, "a-1", "c0", ALICE)                          # 0
    await checked_next(engine, "a-1", "c1", ALICE)                          # 1
    async with engine.write("a-1", A, "c2", known=await engine.package("a-1", A, "c2")) as scope:
        await scope.store("c2", (1,))                                       # 1 again, later
    await checked_next(engine, "b-1", "d0", ALICE)
    await engine.add_rows([("b-1", A, "d1", "1"), ("c-1", A, "e0", "0")])   # copied: unknown
    await set_times(pg_cluster, engine, {"c0": 100, "c1": 300, "c2": 200, "d0": 50})
    assert await engine.packages("", None, None, 10) == [
        ("a-1", A, "1", 200), ("b-1", A, "1", None), ("c-1", A, "0", None)]
    assert await engine.packages("a", A, None, 10) == [("a-1", A, "1", 200)]
    assert await engine.packages("", None, ("a-1", A), 1) == [("b-1", A, "1", None)]


# --------------------------------------------------------------------------- the schema

async def test_a_version_2_database_is_upgraded_with_its_rows_unknown_and_then_recorded(pg_cluster):
    import asyncpg

    url = pg_cluster.new_database()
    name = db_name(url)
    await schema_as_of(url, 2)
    connection = await asyncpg.connect(url)
    try:
        for checksum in ("old0", "old1"):
            await connection.fetchval("SELECT stored FROM prserv_store_next($1, $2, $3, NULL, NULL)", V, A, checksum)
        engine = await open_engine(url)                                     # 2 -> 3
        try:
            assert pg_cluster.psql("SELECT version FROM prserv_schema", name).split() == ["3"]
            assert sorted(await engine.history(V, A)) == [("old0", "0", None, None, None),
                                                          ("old1", "1", None, None, None)]
            before = now_us()
            assert await checked_next(engine, V, "new", ALICE) == (2,)
            # A server of version 2 still running (a rolling upgrade) calls the functions
            # it knows, which stay: its rows get their time, their client is unknown.
            assert await connection.fetchval("SELECT stored FROM prserv_store_next($1, $2, $3, NULL, NULL)",
                                             V, A, "from-v2") == "3"
            after = now_us()
            history = {row[0]: row[1:] for row in await engine.history(V, A)}
            assert history["new"][0] == "2" and history["new"][2:] == ("10.1.2.3", "alice")
            assert history["from-v2"][0] == "3" and history["from-v2"][2:] == (None, None)
            assert before <= history["new"][1] <= history["from-v2"][1] <= after
            assert await engine.packages("", None, None, 10) == [(V, A, "3", history["from-v2"][1])]
        finally:
            await engine.close()
    finally:
        await connection.close()


async def test_a_fresh_schema_is_the_upgraded_one(pg_cluster):
    """Creating version 3 and upgrading 1 to 3 give the same tables, indexes and functions."""
    catalog = ("SELECT string_agg(x, E'\\n' ORDER BY x) FROM ("
               "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || "
               "coalesce(column_default, '') AS x FROM information_schema.columns WHERE table_schema = 'public' "
               "UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
               "UNION ALL SELECT p.oid::regprocedure::text || md5(p.prosrc) FROM pg_proc p "
               "WHERE p.proname LIKE 'prserv%') AS c")
    fresh, old = pg_cluster.new_database(), pg_cluster.new_database()
    await (await open_engine(fresh)).close()
    await schema_as_of(old, 1)
    await (await open_engine(old)).close()
    assert pg_cluster.psql(catalog, db_name(fresh)) == pg_cluster.psql(catalog, db_name(old))
    assert "given timestamp with time zone YES clock_timestamp()" in pg_cluster.psql(catalog, db_name(fresh))


# --------------------------------------------------------------------------- through a server

async def test_a_get_pr_through_a_server_is_recorded_when_it_was_asked(pg_cluster):
    server = prserv.create_server("127.0.0.1:0", pg_cluster.new_database())
    await server.start_serving()
    try:
        record, token = tokens.make_user("alice", ["write"], time.time())
        await server.engine.put_user(record)
        client = PRAsyncClient(credentials=("alice", token))
        await client.connect_address(server.address)
        async with client:
            before = now_us()
            assert await client.getPR(V, A, "built") == "0"
            after = now_us()
        [(checksum, value, given, address, user)] = await server.engine.history(V, A)
        assert (checksum, value) == ("built", "0") and before <= given <= after
        assert (address, user) == ("127.0.0.1", "alice")
    finally:
        await server.stop_serving()
