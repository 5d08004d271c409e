"""The SQLite engine's cache (prserv.storage.sqlite.cache): a request never reads a
whole large package, memory stays under the byte budget, and the answers stay exact
(tests/test_model.py compares every answer with a plain model, with tiny budgets and
every package shape)."""

from __future__ import annotations

import gc
import logging
import sqlite3
import tracemalloc

import pytest

from prserv.asyncrpc.eager import finish_now
from prserv.db import PRData
from prserv.storage.sqlite import cache as sqlite_cache
from prserv.storage.sqlite.database import SQLiteDatabase
from prserv.storage.sqlite.engine import SQLiteEngine

V, A = "big-1.0-r0", "core2-64"
DDL = ("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
       "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")


def fill(path: str, rows) -> None:
    """Rows written straight into bitbake's schema (as a foreign writer would)."""
    conn = sqlite3.connect(path)
    conn.execute(DDL)
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


@pytest.fixture
def dbpath(tmp_path):
    return str(tmp_path / "pr.sqlite3")


@pytest.fixture
def values_read(monkeypatch):
    """How many stored values the cache has parsed (each one read from the file)."""
    count = [0]
    real = sqlite_cache._key_of_stored

    def counting(value, version, pkgarch):
        count[0] += 1
        return real(value, version, pkgarch)

    monkeypatch.setattr(sqlite_cache, "_key_of_stored", counting)
    return count


def test_a_large_package_is_never_read_whole(dbpath, values_read):
    fill(dbpath, [(V, A, "c%05d" % i, str(i)) for i in range(20000)])
    table = PRData(dbpath)["PRMAIN"]
    assert table.find_package_max_value(V, A) == "19999"
    assert table.find_value(V, A, "c00007") == "7"
    assert table.get_value(V, A, "new", False) == "20000"
    assert table.get_value(V, A, "c00007", False) == "20001"      # below the maximum: bumped
    assert values_read[0] <= 4                                    # not 20,000


def test_a_small_package_is_read_whole_once(dbpath, values_read):
    fill(dbpath, [(V, A, "c%d" % i, str(i)) for i in range(100)])
    table = PRData(dbpath)["PRMAIN"]
    assert [table.find_value(V, A, "c%d" % i) for i in range(100)] == [str(i) for i in range(100)]
    assert table.find_value(V, A, "unknown") is None                # known absent, not asked
    assert values_read[0] == 100


@pytest.mark.parametrize("values, maximum", [
    (["7", "7.9", "7.10", "6.99"], "7.10"),                      # the top number's values compared
    (["5", "99abc", "1000x", "-3", "077"], "5"),                 # groups of non-revisions passed over
    (["9223372036854775807", "9223372036854775808", "123456789012345678901234567890.1"],
     "123456789012345678901234567890.1"),                         # beyond SQLite's integers
])
def test_the_maximum_of_a_large_package(dbpath, values, maximum, monkeypatch):
    monkeypatch.setattr(sqlite_cache, "COMPLETE_ROWS", 0)          # every package large
    fill(dbpath, [(V, A, "c%d" % i, value) for i, value in enumerate(values)])
    assert PRData(dbpath)["PRMAIN"].find_package_max_value(V, A) == maximum


def test_children_of_a_large_package(dbpath, monkeypatch):
    monkeypatch.setattr(sqlite_cache, "COMPLETE_ROWS", 0)
    fill(dbpath, [(V, A, "c%d" % i, value) for i, value in
                  enumerate(["5", "5.0", "5.3", "5.3.9", "5.10", "50.1", "4.7"])])
    table = PRData(dbpath)["PRMAIN"]
    assert table.find_new_subvalue(V, A, "5") == "5.11"
    assert table.find_new_subvalue(V, A, "5.3") == "5.3.10"
    assert table.find_new_subvalue(V, A, "6") == "6.0"


def test_a_large_packages_children_are_found_without_reading_it(dbpath):
    """The children of one number are sought through the value index (SQLite, left to
    itself, would walk the whole package through the primary key)."""
    fill(dbpath, [(V, A, "c%05d" % i, str(i)) for i in range(20000)] + [(V, A, "k", "19000.4")])
    table = PRData(dbpath)["PRMAIN"]
    assert table.find_package_max_value(V, A) == "19999"
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    table.engine.conn.set_progress_handler(count, 1000)   # called every 1,000 SQLite VM steps
    assert table.find_new_subvalue(V, A, "19000") == "19000.5"
    assert table.find_new_subvalue(V, A, "18000") == "18000.0"
    table.engine.conn.set_progress_handler(None, 0)
    assert steps[0] <= 2                                   # the package holds 200,000 steps' worth


def test_an_earlier_value_index_is_replaced(dbpath):
    fill(dbpath, [(V, A, "c%d" % i, str(i)) for i in range(300)])
    conn = sqlite3.connect(dbpath)
    old_index = "CREATE INDEX prserv_PRMAIN_value ON PRMAIN (version, pkgarch, CAST(value AS INTEGER))"
    conn.execute(old_index)
    conn.commit()
    data = PRData(dbpath)
    assert data["PRMAIN"].find_package_max_value(V, A) == "299"
    data.disconnect()
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'PRMAIN' ORDER BY name").fetchall()
    assert indexes == [("prserv_PRMAIN_high_values",), ("sqlite_autoindex_PRMAIN_1",)]
    conn.execute(old_index)                       # an older version ran on the file since
    conn.commit()
    data = PRData(dbpath)
    data["PRMAIN"]
    data.disconnect()
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'PRMAIN' ORDER BY name").fetchall()
    assert indexes == [("prserv_PRMAIN_high_values",), ("sqlite_autoindex_PRMAIN_1",)]
    assert conn.execute("SELECT count(*) FROM PRMAIN INDEXED BY prserv_PRMAIN_high_values "
                        "WHERE +CAST(value AS INTEGER) >= 256").fetchone() == (44,)
    conn.close()


def test_a_complete_package_that_grows_keeps_only_its_maximum(dbpath, monkeypatch):
    monkeypatch.setattr(sqlite_cache, "GROWN_ROWS", 10)
    database = SQLiteDatabase(dbpath)
    engine = SQLiteEngine(database)
    try:
        for i in range(10):
            finish_now(_get(engine, "c%d" % i))
        package = engine.cache.entries.peek((V, A))
        assert package.checksums is not None and len(package.checksums) == 10
        size_complete = engine.cache.size
        finish_now(_get(engine, "c10"))
        assert package.checksums is None and engine.cache.size < size_complete
        assert finish_now(engine.package(V, A, "c3")).checksum_value("c3", False) == (3,)
        assert finish_now(engine.package(V, A)).max_key == (10,)
    finally:
        database.close()


async def _get(engine, checksum: str) -> None:
    from prserv.server.allocator import Allocator

    await Allocator(engine).get_pr(V, A, checksum, False)


def test_memory_stays_under_the_budget(dbpath):
    fill(dbpath, [("pkg%d" % (i // 300), A, "%064x" % i, str(i % 300)) for i in range(60000)])
    budget = 256 * 1024
    table = PRData(dbpath, cache_size=budget)["PRMAIN"]
    for i in range(0, 60000, 7):
        table.find_value("pkg%d" % (i // 300), A, "%064x" % i)
    assert 0 < table.engine.cache.size <= budget


@pytest.mark.parametrize("rows, complete", [(100, True), (1000, False)])
def test_estimated_entry_sizes_cover_what_python_allocates(dbpath, rows, complete):
    """The budget counts estimated bytes: they must not be below the real ones."""
    packages = 40
    fill(dbpath, [("pkg-%03d-1.0-r0" % (i % packages), A, "%064x" % i, str(i)) for i in range(rows * packages)])
    table = PRData(dbpath)["PRMAIN"]
    cache = table.engine.cache
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(rows * packages):
        table.find_value("pkg-%03d-1.0-r0" % (i % packages), A, "%064x" % i)
    gc.collect()
    allocated = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    kinds = {entry.checksums is not None for key, entry in cache.entries.items() if len(key) == 2}
    assert kinds == {complete}
    assert allocated <= cache.size, (allocated, cache.size)


def test_an_unindexed_read_only_file_still_gives_the_right_maximum(dbpath, monkeypatch, caplog):
    monkeypatch.setattr(sqlite_cache, "COMPLETE_ROWS", 0)
    fill(dbpath, [(V, A, "c%d" % i, value) for i, value in enumerate(["3", "12", "9", "12.1"])])
    conn = sqlite3.connect(dbpath)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    caplog.set_level(logging.INFO)
    table = PRData(dbpath, read_only=True)["PRMAIN"]
    assert "not indexed by value" in caplog.text
    assert table.find_package_max_value(V, A) == "12.1"
    writer = PRData(dbpath)                       # a read-write open indexes the file once
    writer["PRMAIN"]
    writer.disconnect()
    assert "Indexed PRMAIN" in caplog.text
