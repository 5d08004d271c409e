"""Several servers on one PostgreSQL database: atomic, linearizable, and what happens
when PostgreSQL, a server or a lock misbehaves.

The engine-independent behaviour runs in test_server.py and test_upstream.py on both
engines; this module holds what only a shared database has.  Servers are real
processes where a fault needs one; PostgreSQL is the session's (``pg_cluster``), or
a cluster of the test's own when the test stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from prserv.errors import DatabaseError
from prserv.storage import open_engine

from pgcluster import Cluster, schema_as_of
from processes import BIN, start_process

V, A = "zlib-1.3-r0", "core2-64"


def stop(process, sig=signal.SIGTERM):
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(15)


async def get_prs(address, requests):
    """get-pr of each (version, checksum) on its own connection, all at once."""
    async def one(version, checksum):
        async with await prserv.create_async_client(address) as client:
            return await client.getPR(version, A, checksum)
    return await asyncio.gather(*(one(version, checksum) for version, checksum in requests))


# --------------------------------------------------------------------------- several servers

async def test_three_server_processes_never_give_one_value_to_two_checksums(tmp_path, pg_cluster):
    url = pg_cluster.new_database().replace("postgres@", "postgres:n0tsh0wn@")   # trust: any password
    servers = [start_process(tmp_path, "-f", url) for _ in range(3)]
    try:
        addresses = [address for _, address, _ in servers]
        results = await asyncio.gather(*(get_prs(addresses[i % 3], [(V, "c%d" % i)]) for i in range(60)))
        initial = {"c%d" % i: result[0] for i, result in enumerate(results)}
        assert sorted(map(int, initial.values())) == list(range(60))
        # Linearizable: a value acknowledged by one server counts at once on another.
        async with await prserv.create_async_client(addresses[0]) as first, \
                await prserv.create_async_client(addresses[1]) as second:
            assert await first.getPR(V, A, "c0") == "60"          # no history: c0 is not the max
            assert await second.test_pr(V, A, "c0") == "60"
            assert await second.getPR(V, A, "c1") == "61"
            assert await first.max_package_pr(V, A) == "61"
            assert await second.getPR(V, A, "c1", history=True) == initial["c1"]  # history: its first
    finally:
        for process, _, _ in servers:
            stop(process)
    logged = "".join(line for _, _, lines in servers for line in lines)
    assert "postgres:***@" in logged and "n0tsh0wn" not in logged
    assert pg_cluster.psql("SELECT count(*), count(DISTINCT value) FROM prmain",
                           url.split("/")[3].split("?")[0]).split() == ["62|62"]


async def test_read_write_and_read_only_servers_mixed_each_with_an_upstream(tmp_path, pg_cluster, start_server):
    upstream = await start_server(db="upstream.sqlite3")
    url = pg_cluster.new_database()
    writer = prserv.create_server("127.0.0.1:0", url, upstream=upstream.address)
    reader = prserv.create_server("127.0.0.1:0", url, upstream=upstream.address, read_only=True)
    await writer.start_serving()
    await reader.start_serving()
    try:
        async with await prserv.create_async_client(upstream.address) as up:
            assert await up.getPR(V, A, "u") == "0"
        async with await prserv.create_async_client(writer.address) as w, \
                await prserv.create_async_client(reader.address) as r:
            assert await w.getPR(V, A, "local") == "0.0"
            assert await r.test_pr(V, A, "local") == "0.0"
            assert await r.getPR(V, A, "other") == "0.1"           # answered, not stored
            assert await r.is_readonly() is True
            assert await w.getPR(V, A, "other") == "0.1"
    finally:
        await reader.stop_serving()
        await writer.stop_serving()


# --------------------------------------------------------------------------- schema

async def test_the_schema_is_created_once_refused_when_newer_and_indexes_serve_every_lookup(pg_cluster):
    url = pg_cluster.new_database()
    name = url.split("/")[3].split("?")[0]
    with pytest.raises(DatabaseError, match="has no prserv schema .a read-only server never creates it"):
        await open_engine(url, read_only=True)
    engines = await asyncio.gather(*(open_engine(url) for _ in range(4)))      # side by side
    for engine in engines:
        await engine.close()
    assert pg_cluster.psql("SELECT version FROM prserv_schema", name).split() == ["3"]
    pg_cluster.psql("ALTER TABLE prmain SET (autovacuum_enabled = false)", name)     # no statistics
    pg_cluster.psql("INSERT INTO prmain (version, pkgarch, checksum, value, key) SELECT 'p' || (i %% 8), "
                    "'a', 'c' || i, (i / 8)::text || '.' || (i %% 7), ARRAY[i / 8, i %% 7]::numeric[] "
                    "FROM generate_series(1, 20000) AS i".replace("%%", "%"), name)
    await (await open_engine(url)).close()              # gathers the statistics nobody gathered
    from prserv.storage.postgresql.state import STATE as _STATE
    plan = pg_cluster.psql("EXPLAIN " + _STATE.replace("$1", "'p7'").replace("$2", "'a'").replace(
        "$3", "'c7'").replace("$4::numeric[]", "'{3}'::numeric[]").replace("$5::numeric[]", "'{4}'::numeric[]")
        .replace("$6", "2"), name)
    assert "Seq Scan" not in plan, plan
    # The checksum's bounds through its own index, not its package's rows one by one:
    assert plan.count("using prmain_row") == 2 and plan.count("prmain_package_key") == 2, plan
    pg_cluster.psql("UPDATE prserv_schema SET version = 4", name)
    with pytest.raises(DatabaseError, match=r"has prserv schema version 4, newer than this server knows \(3\)"):
        await open_engine(url)


async def test_a_table_growing_from_empty_is_analyzed_by_the_server_itself(pg_cluster):
    """autovacuum would analyze it only after its naptime; until then an empty table's
    statistics have PostgreSQL read a checksum's whole package to find it."""
    from prserv.storage.postgresql.engine import ANALYZE_MIN_ROWS
    url = pg_cluster.new_database()
    name = url.split("/")[3].split("?")[0]
    engine = await open_engine(url)
    try:
        pg_cluster.psql("ALTER TABLE prmain SET (autovacuum_enabled = false)", name)
        for i in range(ANALYZE_MIN_ROWS - 1):
            async with engine.write("p%d" % (i % 8), A, "c%d" % i, known=await engine.package(
                    "p%d" % (i % 8), A, "c%d" % i)) as scope:
                await scope.store_next("c%d" % i)
        assert engine._analysis is None
        rows = [("p%d" % (i % 8), A, "c%d" % i, str(i)) for i in range(ANALYZE_MIN_ROWS, 20000)]
        assert await engine.add_rows(rows) == len(rows)
        assert engine._analysis is not None
        await engine._analysis
        assert pg_cluster.psql("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                               "WHERE relname = 'prmain'", name).strip() == "t"
        assert engine._analyze_after == pytest.approx(0.1 * 20000 - 1, rel=0.05)
    finally:
        await engine.close()
    plan = pg_cluster.psql("EXPLAIN SELECT value FROM prmain WHERE version = 'p7' AND pkgarch = '%s' "
                           "AND checksum = 'c7' ORDER BY key LIMIT 1" % A, name)
    assert "using prmain_row" in plan, plan


# --------------------------------------------------------------------------- the feed

async def test_the_feed_never_skips_a_transaction_that_commits_after_a_later_one(pg_cluster):
    import asyncpg

    url = pg_cluster.new_database()
    engine = await open_engine(url)
    early, late = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        insert = ("INSERT INTO prmain (version, pkgarch, checksum, value, key) "
                  "VALUES ($1, 'a', $2, '0', '{0}')")
        first = early.transaction()
        await first.start()
        await early.execute(insert, "early", "e")               # the smaller id and txid
        async with late.transaction():
            await late.execute(insert, "late", "l")              # commits first
        page = await engine.changes(None, 10)
        assert page.rows == []                                   # held back: "early" still runs
        await first.commit()
        page = await engine.changes(None, 10)
        assert [row[1] for row in page.rows] == ["early", "late"]
        assert (await engine.changes(page.rows[-1][0], 10)).rows == []
    finally:
        await early.close()
        await late.close()
        await engine.close()


async def test_the_feed_orders_transactions_by_number_across_a_power_of_ten(pg_cluster):
    """Transaction ids are fed in numeric order: 999 before 1000 (as text, "1000" sorts
    first, and a page of the feed skipped every row of a shorter transaction id)."""
    import asyncpg

    url = pg_cluster.new_database()
    engine = await open_engine(url)
    connection = await asyncpg.connect(url)
    try:
        insert = ("INSERT INTO prmain (version, pkgarch, checksum, value, key) "
                  "VALUES ('v', 'a', $1, $2, string_to_array($2, '.')::numeric[])")
        await connection.execute(insert, "short", "0")
        current = int(await connection.fetchval("SELECT pg_current_xact_id()::text"))
        boundary = 10 ** len(str(current))                       # the next power of ten
        for _ in range(boundary - current):
            await connection.fetchval("SELECT pg_current_xact_id()")    # one transaction id each
        await connection.execute(insert, "long", "1")
        page = await engine.changes(None, 1)
        assert [row[3] for row in page.rows] == ["short"]
        page = await engine.changes(page.rows[-1][0], 10)
        assert [row[3] for row in page.rows] == ["long"]
        assert int(page.rows[0][0].partition(":")[0]) >= boundary
        assert [row[3] for row in await engine.rows_between(None, page.rows[-1][0])] == ["short", "long"]
    finally:
        await connection.close()
        await engine.close()


async def test_a_mirror_follows_a_postgresql_backed_source(tmp_path, pg_cluster):
    url = pg_cluster.new_database()
    source, source_address, _ = start_process(tmp_path, "-f", url)
    mirror, mirror_address, _ = start_process(tmp_path, "--mirror", source_address, "--mirror-timeout", "1",
                                              db="mirror.sqlite3")
    try:
        async with await prserv.create_async_client(source_address) as writer:
            for i in range(30):
                await writer.getPR(V, A, "m%d" % i)
        async with await prserv.create_async_client(mirror_address) as reader:
            deadline = time.monotonic() + 20
            while await reader.max_package_pr(V, A) != "29":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await reader.test_pr(V, A, "m7") == "7"
    finally:
        stop(mirror)
        stop(source)


# --------------------------------------------------------------------------- faults

async def test_a_lock_held_elsewhere_gets_an_invoke_error_after_the_lock_timeout(pg_cluster, start_server):
    import asyncpg

    url = pg_cluster.new_database()
    server = prserv.create_server("127.0.0.1:0", url, postgresql={"lock_timeout": 0.5})
    await server.start_serving()
    stuck = await asyncpg.connect(url)
    try:
        transaction = stuck.transaction()
        await transaction.start()
        await stuck.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))", V, A)
        async with await prserv.create_async_client(server.address) as client:
            started = time.monotonic()
            with pytest.raises(InvokeError, match="database error: LockNotAvailableError: canceling "
                                                  "statement due to lock timeout"):
                await client.getPR(V, A, "blocked")
            assert 0.5 <= time.monotonic() - started < 3
        await transaction.rollback()
        async with await prserv.create_async_client(server.address) as client:
            assert await client.getPR(V, A, "blocked") == "0"      # served again
    finally:
        await stuck.close()
        await server.stop_serving()


async def test_the_pool_is_bounded(pg_cluster):
    url = pg_cluster.new_database()
    server = prserv.create_server("127.0.0.1:0", url, postgresql={"pool_size": 3})
    await server.start_serving()
    try:
        values = await get_prs(server.address, [(V, "p%d" % i) for i in range(40)])
        assert sorted(map(int, values)) == list(range(40))
        name = url.split("/")[3].split("?")[0]
        count = pg_cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND "
                                "application_name = 'prserv'" % name)
        assert 1 <= int(count) <= 3
    finally:
        await server.stop_serving()


async def test_postgresql_not_up_yet_then_gone_then_restarted_under_load(tmp_path):
    cluster = Cluster()
    url_holder = {}
    try:
        # Not up: the server retries for db_connect_timeout, then exits 1 naming the URL.
        result = subprocess.run([sys.executable, BIN, "-F", "-f",
                                 "postgresql://prserv:hush@/x?host=%s" % tmp_path, "--bind", "127.0.0.1:0",
                                 "--db-connect-timeout", "1"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "hush" not in result.stderr
        assert "cannot connect to postgresql://prserv:***@/x?host=%s within 1 s" % tmp_path in result.stderr
        cluster.start()
        url = url_holder["url"] = cluster.new_database()
        server, address, _ = start_process(tmp_path, "-f", url)
        try:
            acknowledged = {}
            async with await prserv.create_async_client(address) as client:
                for i in range(20):
                    acknowledged["k%d" % i] = await client.getPR(V, A, "k%d" % i)
            cluster.restart()                                   # under the server's feet
            async with await prserv.create_async_client(address) as client:
                assert await client.getPR(V, A, "after") == "20"   # waited out; none lost, none repeated
            async with await prserv.create_async_client(address) as client:
                for checksum, value in acknowledged.items():
                    assert await client.test_pr(V, A, checksum) == value
            # SIGKILL under load: every acknowledged value is in the database.
            async def write(n):
                async with await prserv.create_async_client(address) as client:
                    for i in range(200):
                        acknowledged["w%d-%d" % (n, i)] = await client.getPR(V, A, "w%d-%d" % (n, i))
            writers = [asyncio.ensure_future(write(n)) for n in range(4)]
            await asyncio.sleep(0.3)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            await asyncio.gather(*writers, return_exceptions=True)
        finally:
            stop(server)
        server, address, _ = start_process(tmp_path, "-f", url)
        try:
            async with await prserv.create_async_client(address) as client:
                for checksum, value in acknowledged.items():
                    assert await client.test_pr(V, A, checksum) == value
        finally:
            stop(server)
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- moving a database

def run_cli(*argv):
    result = subprocess.run([sys.executable, "-m", "prserv", *argv], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(BIN), "..", "lib")),
                            timeout=120)
    return result.returncode, result.stdout, result.stderr


def sqlite_rows(path):
    import sqlite3

    conn = sqlite3.connect(str(path))
    try:
        return sorted(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))
    finally:
        conn.close()


async def test_copy_between_sqlite_and_postgresql_both_ways_adds_only_what_is_missing(tmp_path, pg_cluster):
    import json
    import sqlite3

    from test_migrate import make_legacy

    legacy = tmp_path / "old.sqlite3"
    make_legacy(str(legacy), nohist=[(V, A, "c%d" % i, i) for i in range(2500)] + [(V, A, "bad", "x1")])
    before = os.path.getsize(legacy)
    url = pg_cluster.new_database()
    code, out, err = run_cli("--json", "copy", str(legacy), url)
    summary = json.loads(out)
    assert (code, err) == (0, "")
    assert (summary["rows_read"], summary["rows_added"], summary["rows_skipped"], summary["verified"]) == \
        (2500, 2500, 0, True)                                   # "x1" was left behind by the migration
    assert os.path.getsize(legacy) == before                    # the source is only read
    back = tmp_path / "back.sqlite3"
    conn = sqlite3.connect(str(back))
    conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                 "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", [(V, A, "c%d" % i, str(i)) for i in range(1000)]
                     + [("own-1.0", A, "o", "3")])
    conn.commit()
    conn.close()
    code, out, err = run_cli("copy", url, str(back))
    assert code == 0 and "2500 rows read, 1500 added, 1000 there already" in out and "verified: ok" in out
    assert sqlite_rows(back) == sorted([(V, A, "c%d" % i, str(i)) for i in range(2500)] + [("own-1.0", A, "o", "3")])
    # A destination that drops a row: the verification says so, exit 6.
    lossy = tmp_path / "lossy.sqlite3"
    conn = sqlite3.connect(str(lossy))
    conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                 "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.execute("CREATE TRIGGER lose BEFORE INSERT ON PRMAIN WHEN NEW.checksum = 'c7' BEGIN SELECT RAISE(IGNORE); END")
    conn.commit()
    conn.close()
    code, out, err = run_cli("copy", url, str(lossy))
    assert code == 6 and "verified: FAILED" in out
    assert err == "prserv: %s lacks 1 of the source's rows, or holds them otherwise\n" % lossy
    code, out, err = run_cli("backup", "postgresql://prserv:hush@db/prs", str(tmp_path / "x"))
    assert code == 2 and err.startswith("prserv: postgresql://prserv:***@db/prs is a PostgreSQL database: "
                                        "back it up with pg_dump") and "hush" not in err


async def test_dump_db_of_a_postgresql_database_restores_as_a_sqlite_file(tmp_path, pg_cluster):
    import io

    url = pg_cluster.new_database()
    server = prserv.create_server("127.0.0.1:0", url)
    await server.start_serving()
    try:
        async with await prserv.create_async_client(server.address) as client:
            for i in range(5):
                await client.getPR(V, A, "d%d" % i)
            await client.importone("o'brien-1.0", A, "q'uote", "1.20")
            out = io.StringIO()
            await client.dump_db(out)
    finally:
        await server.stop_serving()
    text = out.getvalue()
    assert text.startswith("BEGIN TRANSACTION;\nCREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT "
                           "NULL, checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, "
                           "value));\nINSERT INTO \"PRMAIN\" VALUES('zlib-1.3-r0','core2-64','d0','0');\n")
    assert text.endswith("INSERT INTO \"PRMAIN\" VALUES('o''brien-1.0','core2-64','q''uote','1.20');\nCOMMIT;\n")
    (tmp_path / "dump.sql").write_text(text)
    code, out, err = run_cli("restore", str(tmp_path / "dump.sql"), str(tmp_path / "restored.sqlite3"))
    assert code == 0, err
    assert sqlite_rows(tmp_path / "restored.sqlite3") == sorted(
        [(V, A, "d%d" % i, str(i)) for i in range(5)] + [("o'brien-1.0", A, "q'uote", "1.20")])


async def test_an_older_schema_is_upgraded_in_one_transaction(pg_cluster, monkeypatch):
    from prserv.storage.postgresql import schema

    url = pg_cluster.new_database()
    name = url.split("/")[3].split("?")[0]
    await schema_as_of(url, 1)
    await (await open_engine(url)).close()                          # 1 -> 2 -> 3: users, the record
    assert pg_cluster.psql("SELECT version FROM prserv_schema", name).split() == ["3"]
    assert pg_cluster.psql("SELECT count(*) FROM prserv_users", name).split() == ["0"]
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(schema, "UPGRADES", schema.UPGRADES + [["ALTER TABLE prmain ADD COLUMN note text",
                                                               "SELECT 1 / 0"]])
    with pytest.raises(DatabaseError, match="division by zero"):
        await open_engine(url)
    assert pg_cluster.psql("SELECT version FROM prserv_schema", name).split() == ["3"]
    assert pg_cluster.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'prmain' "
                           "AND column_name = 'note'", name).split() == ["0"]       # rolled back whole
    monkeypatch.setattr(schema, "UPGRADES", schema.UPGRADES[:2] + [["ALTER TABLE prmain ADD COLUMN note text"]])
    await (await open_engine(url)).close()
    assert pg_cluster.psql("SELECT version FROM prserv_schema", name).split() == ["4"]
    with pytest.raises(DatabaseError, match="version 4; this server needs 5 .a read-write server upgrades"):
        monkeypatch.setattr(schema, "SCHEMA_VERSION", 5)
        monkeypatch.setattr(schema, "UPGRADES", [[], [], [], []])
        await open_engine(url, read_only=True)                       # a reader never upgrades


async def test_a_write_that_trusted_a_stale_state_stores_nothing_and_reports_the_package_now(pg_cluster):
    from prserv.storage.engine import WriteConflict

    engine = await open_engine(pg_cluster.new_database())
    try:
        stale = await engine.package(V, A, "mine")
        async with engine.write(V, A, "other") as scope:            # another server, meanwhile
            assert await scope.store("other", (0,)) is True
        with pytest.raises(WriteConflict) as conflict:
            async with engine.write(V, A, "mine", known=stale) as scope:
                await scope.store("mine", (0,))
        assert conflict.value.state.max_key == (0,) and conflict.value.state.bounds is None
        assert not await engine.has_row(V, A, "0", "mine")
        async with engine.write(V, A, "mine", known=conflict.value.state) as scope:
            assert await scope.store("mine", (1,)) is True           # decided again: stored
        async with engine.write(V, A, "mine", known=await engine.package(V, A, "mine")) as scope:
            assert await scope.store("mine", (1,)) is False          # there already: no conflict
    finally:
        await engine.close()


def serve_once(url, env):
    """Start a server on ``url``: (True, its log so far) once it serves (then stopped),
    (False, its log) if it exits first."""
    process = subprocess.Popen([sys.executable, BIN, "-F", "-f", url, "--bind", "127.0.0.1:0",
                                "--db-connect-timeout", "1"], env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if " serving " in line:
            stop(process)
            return True, "".join(lines)
    process.wait(30)
    return False, "".join(lines) + "exit %d" % process.returncode


async def test_the_password_comes_from_the_url_pgpassword_or_pgpass_and_is_never_shown(tmp_path, pg_cluster):
    url = pg_cluster.new_database()
    name = url.split("/")[3].split("?")[0]
    pg_cluster.psql("CREATE ROLE prs_user LOGIN PASSWORD 'pw-8Jq'; GRANT ALL ON SCHEMA public TO prs_user; "
                    "GRANT ALL ON ALL TABLES IN SCHEMA public TO "
                    "prs_user; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO prs_user", name)
    hba = os.path.join(pg_cluster.data_dir, "pg_hba.conf")
    with open(hba) as f:
        rules = f.read()
    with open(hba, "w") as f:
        f.write("local all prs_user scram-sha-256\n" + rules)
    pg_cluster.psql("SELECT pg_reload_conf()")
    try:
        plain = url.replace("postgres@", "prs_user@")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PRSERV_"))}
        env["HOME"] = str(tmp_path)
        served, log = serve_once(plain.replace("prs_user@", "prs_user:pw-8Jq@"), env)
        assert served, log
        assert serve_once(plain, dict(env, PGPASSWORD="pw-8Jq"))[0]
        (tmp_path / ".pgpass").write_text("*:*:*:prs_user:pw-8Jq\n")
        os.chmod(str(tmp_path / ".pgpass"), 0o600)
        assert serve_once(plain, env)[0]
        served, log = serve_once(plain.replace("prs_user@", "prs_user:wr0ng-pw@"), env)
        assert not served and log.endswith("exit 1") and "password authentication failed" in log
        assert "wr0ng-pw" not in log and "prs_user:***@" in log
    finally:
        with open(hba, "w") as f:
            f.write(rules)
        pg_cluster.psql("SELECT pg_reload_conf()")


async def test_one_new_checksum_asked_of_two_servers_at_once_gets_one_value(pg_cluster):
    url = pg_cluster.new_database()
    servers = [prserv.create_server("127.0.0.1:0", url) for _ in range(2)]
    for server in servers:
        await server.start_serving()
    try:
        clients = [await prserv.create_async_client(server.address) for server in servers for _ in range(2)]
        for i in range(30):
            answers = await asyncio.gather(*(client.getPR(V, A, "same%d" % i) for client in clients))
            assert len(set(answers)) == 1 and answers[0] == str(i), answers
        for client in clients:
            await client.close()
    finally:
        for server in servers:
            await server.stop_serving()
    name = url.split("/")[3].split("?")[0]
    assert pg_cluster.psql("SELECT count(*) FROM prmain", name).split() == ["30"]


async def test_two_servers_with_an_upstream_never_give_one_local_value_twice(pg_cluster, start_server):
    upstream = await start_server(db="upstream.sqlite3")
    async with await prserv.create_async_client(upstream.address) as up:
        assert await up.getPR(V, A, "u") == "0"
    url = pg_cluster.new_database()
    servers = [prserv.create_server("127.0.0.1:0", url, upstream=upstream.address) for _ in range(2)]
    for server in servers:
        await server.start_serving()
    try:
        values = await asyncio.gather(*(get_prs(servers[i % 2].address, [(V, "local%d" % i)]) for i in range(40)))
        assert sorted(int(value[0].split(".")[1]) for value in values) == list(range(40))
        assert {value[0].split(".")[0] for value in values} == {"0"}
    finally:
        for server in servers:
            await server.stop_serving()


async def test_prserv_store_next_computes_the_next_value_as_revision_next_key_does(pg_cluster):
    """The next-value rule has one home, ``revision.next_key``; the PL/pgSQL function
    writes it again in SQL, and this holds the two to the same cases."""
    import asyncpg

    from prserv.revision import key_to_revision, next_key, revision_key

    url = pg_cluster.new_database()
    engine = await open_engine(url)                              # creates the schema
    connection = await asyncpg.connect(url)
    try:
        for n, maximum in enumerate([None, "0", "9", "1.9", "2.0.3", "1.20", "99999999999"]):
            version = "v%d" % n
            if maximum is not None:
                await connection.execute("INSERT INTO prmain (version, pkgarch, checksum, value, key) "
                                         "VALUES ($1, 'a', 'old', $2, string_to_array($2, '.')::numeric[])",
                                         version, maximum)
            stored = await connection.fetchval("SELECT stored FROM prserv_store_next($1, 'a', 'new', NULL, NULL)",
                                               version)
            expected = next_key(None if maximum is None else revision_key(maximum))
            assert stored == key_to_revision(expected), (maximum, stored)
    finally:
        await connection.close()
        await engine.close()
