"""The storage interface, on the SQLite engine (prserv.storage).

What the server relies on: methods that never suspend on SQLite (a lookup is
answered in one step, without a task), a change feed of committed rows only, with
opaque positions, and a wait for new commits that sees this process's and other
processes' commits.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import prserv
from prserv.asyncrpc.eager import finish_now, start_eagerly
from prserv.errors import InvalidRequestError, ReadOnlyError
from prserv.server.prserver import PRServer
from prserv.storage import open_engine
from prserv.storage.sqlite.database import SQLiteDatabase
from prserv.storage.sqlite.engine import SQLiteEngine

V, A = "zlib-1.3.1-r0", "core2-64"


@pytest.fixture
def dbpath(tmp_path):
    return str(tmp_path / "pr.sqlite3")


async def store(engine, checksum: str, key) -> bool:
    async with engine.write(V, A) as scope:
        return await scope.store(checksum, key)


async def first_batch(engine, history: bool):
    return await engine.export_batches(None, None, None, history).__anext__()


def test_every_method_finishes_without_suspending(dbpath):
    """No event loop here at all: each coroutine must finish in its first step."""
    database = SQLiteDatabase(dbpath)
    engine = SQLiteEngine(database)
    try:
        assert finish_now(store(engine, "c", (0,))) is True
        assert finish_now(store(engine, "c", (0,))) is False               # the row exists
        state = finish_now(engine.package(V, A, "c"))
        assert (state.max_key, state.checksum_value("c", False)) == ((0,), (0,))
        assert finish_now(engine.has_row(V, A, "0", "c")) is True
        assert finish_now(engine.has_row(V, A, "1")) is False
        assert [c["name"] for c in finish_now(engine.column_info())] == ["version", "pkgarch", "checksum", "value"]
        assert finish_now(first_batch(engine, True)) == [(V, A, "c", "0")]
        assert finish_now(engine.changes(None, 10)).rows == [("1", V, A, "c", "0")]
        finish_now(engine.flush())
    finally:
        finish_now(engine.close())


async def test_a_lookup_in_a_server_engine_needs_no_task(dbpath):
    engine = await open_engine(dbpath)
    try:
        result = start_eagerly(engine.package(V, A))
        assert not isinstance(result, asyncio.Future) and result.max_key is None
        written = start_eagerly(store(engine, "c", (0,)))     # joins the turn's group transaction
        assert written is True
    finally:
        await engine.close()


async def test_the_feed_gives_committed_rows_only_in_commit_order(dbpath):
    engine = await open_engine(dbpath)                                # group commit: immediate mode
    try:
        assert (await engine.changes(None, 10)).rows == []
        await store(engine, "c1", (0,))
        await store(engine, "c2", (1,))
        gate = engine.answer_gate()
        assert gate is not None and not gate.done()            # the turn's commit is pending
        assert (await engine.changes(None, 10)).rows == []      # not committed: not in the feed
        await asyncio.sleep(0)                                  # the loop's next turn commits
        assert gate.done() and gate.exception() is None
        page = await engine.changes(None, 1, count=True)
        assert page.rows == [("1", V, A, "c1", "0")] and page.pending == 1 and page.origin
        identity = page.identity
        assert identity.startswith("db-")                       # named at the first open
        page = await engine.changes("1", 10)
        assert page == (identity, True, True, True, (V, A, "c1", "0"), [("2", V, A, "c2", "1")], None)
        page = await engine.changes("2", 10)                    # nothing new
        assert page == (identity, True, True, True, (V, A, "c2", "1"), [], None)
        assert (await engine.changes("3", 10)).reached is False  # a position not reached yet
        for bad in ("x", "-1", "1.5", 7):
            with pytest.raises(InvalidRequestError, match="not a position of this database"):
                await engine.changes(bad, 10)
    finally:
        await engine.close()


async def test_the_feed_gives_each_rows_time_when_asked_and_unknown_ones_as_none(dbpath):
    """``given``: rows of six fields, the record's time last (None for a row stored by
    another server); the rows themselves are the same either way."""
    other = sqlite3.connect(dbpath, isolation_level=None)
    other.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                  "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    other.execute("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", (V, A, "bitbake", "0"))
    engine = await open_engine(dbpath)
    try:
        await store(engine, "c1", (1,))
        await asyncio.sleep(0)                                  # committed
        plain = (await engine.changes(None, 10)).rows
        timed = (await engine.changes(None, 10, given=True)).rows
        assert [row[:5] for row in timed] == plain == [("1", V, A, "bitbake", "0"), ("2", V, A, "c1", "1")]
        assert timed[0][5] is None and type(timed[1][5]) is int
        assert (await engine.history(V, A))[1][2] == timed[1][5]
        assert (await engine.changes("1", 10, given=True)).rows == timed[1:]
    finally:
        other.close()
        await engine.close()


async def test_a_copy_reads_and_keeps_each_rows_record(tmp_path):
    source = await open_engine(str(tmp_path / "a.sqlite3"))
    target = await open_engine(str(tmp_path / "b.sqlite3"))
    try:
        async with source.write(V, A, giver=prserv.storage.engine.Giver("10.0.0.1", "ci")) as scope:
            await scope.store("c", (0,))
        await asyncio.sleep(0)
        rows = [(V, A, "c", "0"), (V, A, "none", "1")]
        records = await source.records_of(rows)
        assert records[1] is None and records[0][1:] == ("10.0.0.1", "ci") and type(records[0][0]) is int
        assert await source.records_of(rows[::-1]) == records[::-1]             # not in key order: one by one
        assert await target.add_rows_given(rows, records) == 2
        assert await target.add_rows_given(rows, [(5, None, None), (6, "x", None)]) == 0
        assert await target.records_of(rows) == [records[0], (6, "x", None)]   # kept; gained
    finally:
        await source.close()
        await target.close()


async def test_waiting_for_changes_wakes_on_this_processes_commit(dbpath):
    engine = await open_engine(dbpath)
    try:
        waiting = asyncio.get_running_loop().create_task(engine.wait_for_changes("0", 30))
        await asyncio.sleep(0)
        assert not waiting.done()
        await store(engine, "c", (0,))
        for _ in range(5):                      # the commit's turn, then the waiter's: no polling
            await asyncio.sleep(0)
        assert waiting.done() and waiting.result() is True
        assert await engine.wait_for_changes("1", 0.05) is False        # nothing past 1: timeout
    finally:
        await engine.close()


async def test_waiting_for_changes_sees_another_processes_commit(dbpath):
    engine = await open_engine(dbpath)
    other = sqlite3.connect(dbpath, isolation_level=None)
    try:
        waiting = asyncio.get_running_loop().create_task(engine.wait_for_changes("0", 30))
        await asyncio.sleep(0)
        other.execute("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", (V, A, "elsewhere", "0"))
        assert await waiting is True
        assert (await engine.changes("0", 10)).rows == [("1", V, A, "elsewhere", "0")]
    finally:
        other.close()
        await engine.close()


def test_a_read_only_engine_refuses_to_write(dbpath):
    SQLiteDatabase(dbpath).close()
    engine = SQLiteEngine(SQLiteDatabase(dbpath, read_only=True))
    try:
        with pytest.raises(ReadOnlyError):
            finish_now(store(engine, "c", (0,)))
    finally:
        finish_now(engine.close())


class SessionsReadOnlyOnDemand(PRServer):
    """A read-write server whose next sessions are read-only while ``read_only_sessions``."""

    read_only_sessions = False

    def accept_client(self, connection):
        session = super().accept_client(connection)
        session.read_only = self.read_only_sessions
        return session


async def test_read_only_is_a_property_of_the_session(tmp_path):
    server = SessionsReadOnlyOnDemand(str(tmp_path / "pr.sqlite3"))
    server.start_server("127.0.0.1:0")
    await server.start_serving()
    try:
        server.read_only_sessions = True
        async with await prserv.create_async_client(server.address) as reader:
            assert await reader.is_readonly() is True
            assert await reader.getPR(V, A, "new") == "0"           # answered, not stored
            assert await reader.importone(V, A, "imp", "5") is None
        server.read_only_sessions = False
        async with await prserv.create_async_client(server.address) as writer:
            assert await writer.is_readonly() is False
            assert await writer.test_pr(V, A, "new") is None
            assert await writer.max_package_pr(V, A) is None
            assert await writer.getPR(V, A, "other") == "0"
    finally:
        await server.stop_serving()


def test_the_plain_call_path_decides_as_the_coroutine_path(tmp_path):
    """``Allocator.get_pr_now`` (SQLite's ``immediate`` face, what a server uses) and
    ``get_pr`` (every other engine's path) give the same answers and store the same
    rows, request by request: new checksums, repeats, history, a checksum bumped past
    others, and answers that store nothing."""
    from prserv.server.allocator import Allocator

    requests = [("a", False, True), ("b", False, True), ("a", False, True), ("a", True, True),
                ("c", True, True), ("b", False, True), ("d", False, False), ("b", True, False),
                ("d", False, True), ("a", False, False), ("e", True, True), ("e", False, True)]
    outcomes = []
    for name, immediate in (("now", True), ("awaited", False)):
        engine = SQLiteEngine(SQLiteDatabase(str(tmp_path / (name + ".sqlite3"))))
        allocator = Allocator(engine)
        try:
            assert (engine.immediate is engine) is True
            answers = []
            for checksum, history, write in requests:
                if immediate:
                    answers.append(allocator.get_pr_now(V, A, checksum, history, write))
                else:
                    answers.append(finish_now(allocator.get_pr(V, A, checksum, history, write)))
            rows = finish_now(first_batch(engine, True))
            outcomes.append((answers, rows, allocator.allocations))
        finally:
            finish_now(engine.close())
    assert outcomes[0] == outcomes[1]
    answers, rows, allocations = outcomes[0]
    assert answers == ["0", "1", "2", "0", "3", "4", "5", "1", "5", "6", "6", "6"]
    assert allocations == 7 and len(rows) == 7


@pytest.mark.parametrize("path", ["now", "awaited"])
def test_a_value_another_process_gave_the_checksum_is_found_under_the_write_lock(tmp_path, path):
    """A server looks at the file for other processes' commits once per event-loop turn
    (``recheck_later``), so the state a get-pr decides from first can be stale; the
    write scope reads the file again under the write lock, and the decision is made
    again from that: a checksum another process has just given a value gets that
    value, not a second one."""
    from prserv.server.allocator import Allocator

    filename = str(tmp_path / "shared.sqlite3")
    here, other = SQLiteEngine(SQLiteDatabase(filename)), SQLiteEngine(SQLiteDatabase(filename))
    turn_ends = []
    here.cache.recheck_later = turn_ends.append         # the turn does not end in this test
    try:
        def get_pr(engine, checksum):
            allocator = Allocator(engine)
            if path == "now":
                return allocator.get_pr_now(V, A, checksum, False)
            return finish_now(allocator.get_pr(V, A, checksum, False))

        assert get_pr(here, "first") == "0"             # this turn's one look at the file
        assert get_pr(other, "c") == "1"                 # another process, committed
        assert len(turn_ends) == 1                       # so the next read does not look again
        assert get_pr(here, "c") == "1"
        assert [row[2:] for row in finish_now(first_batch(here, True))] == [("c", "1"), ("first", "0")]
    finally:
        finish_now(here.close())
        finish_now(other.close())
