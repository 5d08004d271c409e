"""PRData / PRTable on real SQLite files (prserv.db)."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import sqlite3

import pytest

from prserv.storage.sqlite import checkpoint
from prserv.storage.sqlite import engine as sqlite_engine
from prserv.db import PRData
from prserv.errors import DatabaseError, InvalidRevisionError, ReadOnlyError

# The reference's schema, exactly as docs/semantics.md §9 gives it.
REFERENCE_DDL = ("CREATE TABLE IF NOT EXISTS PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
                 "checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
V, A = "zlib-1.3.1-r0", "cortexa53"


@pytest.fixture
def dbpath(tmp_path):
    return str(tmp_path / "sub" / "dir" / "pr.sqlite3")


@pytest.fixture
def table(dbpath):
    data = PRData(dbpath)
    yield data["PRMAIN"]
    data.disconnect()


def rows(path):
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))
    finally:
        conn.close()


def test_prdata_creates_directories_wal_and_reference_table(dbpath):
    data = PRData(dbpath)
    data["PRMAIN"]
    conn = sqlite3.connect(dbpath)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    info = conn.execute("PRAGMA table_info(PRMAIN)").fetchall()
    assert info == [(0, "version", "TEXT", 1, None, 1), (1, "pkgarch", "TEXT", 1, None, 2),
                    (2, "checksum", "TEXT", 1, None, 3), (3, "value", "TEXT", 0, None, 4)]
    objects = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    assert objects == [
        ("table", "PRMAIN", "CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum "
                            "TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))"),
        ("table", "prserv_PRMAIN_given",        # ours: when each value was given, to whom
         "CREATE TABLE prserv_PRMAIN_given (row INTEGER PRIMARY KEY, given INTEGER NOT NULL, "
         "address TEXT, user TEXT)"),
        ("index", "prserv_PRMAIN_high_values",  # ours: large packages' maxima without reading them
         "CREATE INDEX prserv_PRMAIN_high_values ON PRMAIN (version, pkgarch, CAST(value AS INTEGER)) "
         "WHERE +CAST(value AS INTEGER) >= 256"),
        ("table", "prserv_meta",                # ours: the history's identity (change feed)
         "CREATE TABLE prserv_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"),
        ("index", "sqlite_autoindex_PRMAIN_1", None),
        ("index", "sqlite_autoindex_prserv_meta_1", None)]
    conn.close()
    data.disconnect()


def test_table_object_is_cached_and_names_checked(dbpath):
    data = PRData(dbpath)
    assert data["PRMAIN"] is data["PRMAIN"]
    with pytest.raises(TypeError):
        data[1]
    with pytest.raises(DatabaseError):
        data["PRMAIN; DROP TABLE x"]
    data.disconnect()


def test_get_value_no_history_sequence(table):
    """basic-nohist.jsonl at the table level."""
    assert table.get_value(V, A, "a", False) == "0"
    assert table.get_value(V, A, "a", False) == "0"
    assert table.get_value(V, A, "b", False) == "1"
    assert table.get_value(V, A, "c", False) == "2"
    assert table.get_value(V, A, "b", False) == "3"
    assert table.find_value(V, A, "b", False) == "3"
    assert table.find_value(V, A, "b", True) == "1"
    assert table.get_value(V, A, "c", False) == "4"
    assert table.get_value(V, "other", "a", False) == "0"
    assert table.get_value("v2", A, "a", False) == "0"
    assert table.get_value(V, A, "a", False) == "5"


def test_get_value_history_sequence(table):
    """history.jsonl at the table level."""
    assert [table.get_value(V, A, c, True) for c in ("h1", "h2", "h1", "h3")] == ["0", "1", "0", "2"]
    assert table.get_value(V, A, "h1", False) == "3"
    assert table.get_value(V, A, "h1", True) == "0"
    assert table.get_value(V, A, "h2", False) == "4"
    assert table.get_value(V, A, "h4", True) == "5"
    assert table.find_min_value(V, A, "h1") == "0"
    assert table.find_max_value(V, A, "h1") == "3"


def test_d1_numeric_no_history_comparison(table):
    for i in range(11):
        assert table.get_value(V, A, "d1-%d" % i, False) == str(i)
    assert table.get_value(V, A, "d1-9", False) == "11"
    assert table.find_package_max_value(V, A) == "11"


def test_d3_max_independent_of_row_order(table):
    table.importone("pkg-x", A, "bbbb", "1")
    table.importone("pkg-x", A, "aaaa", "1.0")
    table.importone("pkg-y", A, "aaaa", "1")
    table.importone("pkg-y", A, "bbbb", "1.0")
    assert table.find_package_max_value("pkg-x", A) == "1.0"
    assert table.find_package_max_value("pkg-y", A) == "1.0"


def test_find_new_subvalue_counts_only_direct_children(table):
    """D5: 1.5.0 is not a child of 1."""
    assert table.find_new_subvalue(V, A, "1") == "1.0"
    table.importone(V, A, "q", "1.5.0")
    assert table.find_new_subvalue(V, A, "1") == "1.0"
    assert table.find_new_subvalue(V, A, "1.5") == "1.5.1"
    table.importone(V, A, "r", "1.3")
    table.importone(V, A, "s", "1.20")
    table.importone(V, A, "t", "10.7")
    assert table.find_new_subvalue(V, A, "1") == "1.21"
    assert table.find_new_subvalue(V, A, "10") == "10.8"
    with pytest.raises(InvalidRevisionError):
        table.find_new_subvalue(V, A, "1'")


def test_tests_and_finds(table):
    assert table.test_package(V, A) is False
    assert table.find_package_max_value(V, A) is None
    assert table.find_value(V, A, "x") is None
    table.store_value(V, A, "x", "2")
    table.store_value(V, A, "x", "2")          # an identical row is never stored twice
    table.store_value(V, A, "x", "1.9")
    assert table.test_package(V, A) is True
    assert table.test_package(V, "other") is False
    assert table.test_checksum_value(V, A, "x", "1.9") is True
    assert table.test_checksum_value(V, A, "x", "3") is False
    assert table.test_value(V, A, "2") is True
    assert table.test_value(V, A, "7") is False
    assert table.find_max_value(V, A, "x") == "2"
    assert table.find_min_value(V, A, "x") == "1.9"
    assert table.find_package_max_value(V, A) == "2"
    with pytest.raises(InvalidRevisionError):
        table.store_value(V, A, "x", "1'")


def test_importone_values(table, dbpath):
    assert table.importone(V, A, "k1", "3") == "3"
    assert table.importone(V, A, "k1", "3") == "3"
    assert table.importone(V, A, "k1", "1") == "1"
    assert table.importone(V, A, "k2", 7) == 7
    assert table.importone(V, A, "k3", "2.5") == "2.5"
    for bad in ("1'", "01", "+7", "", -1, True, 1.5, None, "1.a"):
        with pytest.raises(InvalidRevisionError):
            table.importone(V, A, "bad", bad)
    assert table.find_value(V, A, "k1") == "3"
    assert table.find_value(V, A, "k1", True) == "1"
    assert table.find_package_max_value(V, A) == "7"
    assert rows(dbpath) == [(V, A, "k1", "1"), (V, A, "k1", "3"), (V, A, "k2", "7"), (V, A, "k3", "2.5")]


def test_export_history_and_max_rows(table):
    table.importone(V, A, "a", "9")
    table.importone(V, A, "b", "10")
    table.importone(V, A, "c", "10")
    table.importone(V, "arm", "a", "1.0")
    table.importone(V, "arm", "b", "1")
    table.importone("", A, "empty", "99")
    meta, data = table.export(None, None, None, False, True)
    assert meta == {}
    assert len(data) == 5
    meta, data = table.export(None, None, None, True, False)
    assert meta["tbl_name"] == "PRMAIN"
    assert [c["name"] for c in meta["col_info"]] == ["version", "pkgarch", "checksum", "value"]
    assert sorted((r["pkgarch"], r["checksum"], r["value"]) for r in data) == \
        [("arm", "a", "1.0"), (A, "b", "10"), (A, "c", "10")]          # D2: 10 beats 9
    _, data = table.export(V, A, "a", False, False)
    assert data == []                        # "a" does not hold its package's max
    _, data = table.export("", "arm", "", False, False)
    assert data == [{"version": V, "pkgarch": "arm", "checksum": "a", "value": "1.0"}]
    _, data = table.export(None, None, "a", False, True)
    assert sorted(r["value"] for r in data) == ["1.0", "9"]


def test_dump_db(table):
    table.importone(V, A, "a", "1")
    out = io.StringIO()
    count = table.dump_db(out)
    assert count == len(out.getvalue())
    assert "CREATE TABLE" in out.getvalue() and "'%s','%s','a','1'" % (V, A) in out.getvalue()


def test_drop_table(dbpath):
    data = PRData(dbpath)
    data["PRMAIN"].importone(V, A, "a", "1")
    del data["PRMAIN"]
    assert data["PRMAIN"].test_package(V, A) is False
    data.disconnect()


def test_reference_database_opens_and_continues(tmp_path):
    """A file written by bitbake's prserv: same table, rows in the reference's shapes."""
    path = str(tmp_path / "ref.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(REFERENCE_DDL)
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", [
        (V, A, "c0", "0"), (V, A, "c1", "1"), (V, A, "c2", "9"), (V, A, "c3", "10"),
        (V, A, "bad", "1'"),                    # the reference accepted this (D6)
        ("up", A, "u1", "1.0"), ("up", A, "u2", "1.1"),
    ])
    conn.commit()
    conn.close()
    data = PRData(path)
    table = data["PRMAIN"]
    assert table.find_package_max_value(V, A) == "10"
    assert table.get_value(V, A, "new", False) == "11"
    assert table.get_value(V, A, "c2", False) == "12"
    assert table.get_value(V, A, "bad", False) == "13"
    assert table.find_new_subvalue("up", A, "1") == "1.2"
    data.disconnect()
    # Still the reference's table, and still readable by plain SQL the reference uses.
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM PRMAIN WHERE version=? AND pkgarch=? AND checksum=?",
                        (V, A, "new")).fetchall() == [("11",)]
    conn.execute("INSERT OR IGNORE INTO PRMAIN VALUES (?, ?, ?, ?)", (V, A, "refwrite", "14"))
    conn.commit()
    conn.close()
    data = PRData(path)
    assert data["PRMAIN"].get_value(V, A, "another", False) == "15"
    data.disconnect()


def test_invalid_stored_values_are_skipped_with_a_warning(tmp_path, caplog):
    path = str(tmp_path / "ref.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute(REFERENCE_DDL)
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", [(V, A, "a", "1'"), (V, A, "b", None)])
    conn.commit()
    conn.close()
    data = PRData(path)
    with caplog.at_level(logging.WARNING, logger="BitBake.PRserv"):
        assert data["PRMAIN"].test_package(V, A) is True
        assert data["PRMAIN"].find_package_max_value(V, A) is None
        assert data["PRMAIN"].get_value(V, A, "c", False) == "0"
    assert "not a revision" in caplog.text
    data.disconnect()


def test_read_only_sees_every_commit_at_once(dbpath):
    writer = PRData(dbpath)
    wtable = writer["PRMAIN"]
    reader = PRData(dbpath, read_only=True)
    rtable = reader["PRMAIN"]
    assert rtable.find_package_max_value(V, A) is None
    for i in range(5):
        assert wtable.get_value(V, A, "c%d" % i, False) == str(i)
        assert rtable.find_package_max_value(V, A) == str(i)
        assert rtable.find_value(V, A, "c%d" % i) == str(i)
    # Read-only: computes like a writer, stores nothing.
    assert rtable.get_value(V, A, "new", False) == "5"
    assert rtable.find_value(V, A, "new") is None
    assert rtable.importone(V, A, "x", "9") is None
    rtable.store_value(V, A, "x", "9")
    assert rtable.find_value(V, A, "x") is None
    with pytest.raises(ReadOnlyError):
        with rtable.transaction():
            pass
    assert wtable.get_value(V, A, "new", False) == "5"
    assert rtable.find_package_max_value(V, A) == "5"
    reader.disconnect()
    writer.disconnect()


def test_two_writers_share_state(dbpath):
    """A second connection's writes reach this connection's cached state."""
    one, two = PRData(dbpath), PRData(dbpath)
    t1, t2 = one["PRMAIN"], two["PRMAIN"]
    assert t1.get_value(V, A, "a", False) == "0"
    assert t2.get_value(V, A, "b", False) == "1"
    assert t1.get_value(V, A, "c", False) == "2"
    assert t2.find_package_max_value(V, A) == "2"
    assert t1.get_value(V, A, "a", False) == "3"
    assert t2.find_value(V, A, "a") == "3"
    del two["PRMAIN"]                         # the table re-created elsewhere starts afresh
    assert t1.find_package_max_value(V, A) is None
    one.disconnect()
    two.disconnect()


def test_read_only_requires_existing_file_and_tolerates_missing_table(tmp_path):
    with pytest.raises(DatabaseError):
        PRData(str(tmp_path / "missing.sqlite3"), read_only=True)
    path = str(tmp_path / "empty.sqlite3")
    sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.close()
    data = PRData(path, read_only=True)
    table = data["PRMAIN"]
    assert table.test_package(V, A) is False
    assert table.get_value(V, A, "a", False) == "0"
    assert table.export(None, None, None, False, True) == ({}, [])
    data.disconnect()


def test_path_with_uri_special_characters(tmp_path):
    path = str(tmp_path / "we?ird#na%me.sqlite3")
    data = PRData(path)
    data["PRMAIN"].importone(V, A, "a", "1")
    data.disconnect()
    assert rows(path) == [(V, A, "a", "1")]
    ro = PRData(path, read_only=True)
    assert ro["PRMAIN"].find_value(V, A, "a") == "1"
    ro.disconnect()


def _allocate(path, prefix, count, queue):
    data = PRData(path)
    table = data["PRMAIN"]
    queue.put([table.get_value(V, A, "%s-%d" % (prefix, i), False) for i in range(count)])
    data.disconnect()


def test_allocation_atomic_across_processes(dbpath):
    PRData(dbpath).disconnect()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate, args=(dbpath, "p%d" % n, 50, queue)) for n in range(4)]
    for p in procs:
        p.start()
    values = [v for _ in procs for v in queue.get(timeout=60)]
    for p in procs:
        p.join()
    assert sorted(values, key=int) == [str(i) for i in range(200)]


def test_export_pages_through_batches_in_order(table, monkeypatch):
    """Batches end on checksum boundaries; a checksum larger than a batch comes whole;
    no-history maxima are taken across batch ends; filters apply in every batch."""
    monkeypatch.setattr(sqlite_engine, "EXPORT_BATCH_ROWS", 4)
    expected = []
    for p in range(3):
        for c in range(5):
            values = ["1", "2", "3", "4", "5", "6", "1.10", "1.9"] if c == 2 else [str(p + c)]
            for value in values:
                table.importone("v%d" % p, A, "c%d" % c, value)
                expected.append(("v%d" % p, A, "c%d" % c, value))
    expected.sort()
    assert list(table.engine.export_rows(None, None, None, True)) == expected
    assert list(table.engine.export_rows("v1", None, None, True)) == [r for r in expected if r[0] == "v1"]
    assert list(table.engine.export_rows(None, None, "c2", True)) == [r for r in expected if r[2] == "c2"]
    # No history: v0's max is 6 (c2); v1's max is 6 (c2 and c4, 1+4=5 < 6); v2's is 6 (c4: 2+4).
    assert list(table.engine.export_rows(None, None, None, False)) == [
        ("v0", A, "c2", "6"), ("v1", A, "c2", "6"), ("v2", A, "c2", "6"), ("v2", A, "c4", "6")]
    _, data = table.export(None, None, "c4", False, False)
    assert data == [{"version": "v2", "pkgarch": A, "checksum": "c4", "value": "6"}]


def test_background_checkpointer_copies_the_wal_off_the_writers_thread(dbpath):
    """The writer's automatic checkpoint is off; the checkpointer thread copies the
    log into the file once it is past its threshold."""
    from prserv.storage.sqlite.checkpoint import WalCheckpointer

    data = PRData(dbpath, synchronous="FULL", background_checkpoints=True)
    try:
        assert data.connection.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert data.checkpointer is not None
        table = data["PRMAIN"]
        with table.transaction():
            for i in range(2000):
                table.importone(V, A, "c%d" % i, str(i))
        checkpointer = WalCheckpointer(data.filename, threshold_bytes=1, interval=0.01)
        assert checkpointer.checkpointed.wait(10)
        checkpointer.stop()
        busy, frames, copied = checkpointer.last_result
        assert (busy, copied) == (0, frames) and frames > 10
    finally:
        data.disconnect()
    assert data.checkpointer is None
    assert len(rows(dbpath)) == 2000


@pytest.mark.parametrize("tail", [True, False])
def test_the_log_starts_over_under_continuous_writes(dbpath, monkeypatch, tail):
    """SQLite starts the log over only when a write transaction begins with every frame
    copied; a background copy always misses the frames committed while it ran.  The
    writer's ``checkpoint_tail`` after a commit copies those, so the log stays small
    under writes that never pause; without it (``tail=False``) it grows for ever."""
    monkeypatch.setattr(checkpoint, "WAL_COPY_BYTES", 16 << 10)
    monkeypatch.setattr(checkpoint, "WAL_RESTART_BYTES", 64 << 10)
    monkeypatch.setattr(checkpoint, "WAL_CHECK_INTERVAL", 3600.0)     # the test makes the passes
    data = PRData(dbpath, background_checkpoints=True)
    assert data.connection.execute("PRAGMA journal_size_limit").fetchone() == (16 << 10,)
    table = data["PRMAIN"]
    other = sqlite3.connect(dbpath, isolation_level=None)
    wal_sizes = []

    def commit_rows_while_a_copy_runs(first: int) -> None:
        data.database.transactions.begin()
        for i in range(first, first + 100):
            table.importone(V, A, "checksum-%06d" % i, str(i))
        data.checkpointer.copy(other)           # a background pass sees the log up to here
        data.database.transactions.commit()

    try:
        for round in range(40):
            commit_rows_while_a_copy_runs(100 * round)
            if tail:
                data.checkpoint_tail()
            wal_sizes.append(os.path.getsize(dbpath + "-wal"))
        if tail:    # restart threshold + one round's frames (about 40 KiB)
            assert data.checkpointer.tails >= 10 and max(wal_sizes) < 192 << 10, wal_sizes
        else:
            assert data.checkpointer.tails == 0 and wal_sizes[-1] > 1 << 20, wal_sizes
    finally:
        other.close()
        data.disconnect()
    assert len(rows(dbpath)) == 4000


def test_no_background_checkpointer_for_read_only_or_exclusive_files(dbpath):
    PRData(dbpath).disconnect()
    for options in ({"read_only": True}, {"exclusive": True}):
        data = PRData(dbpath, background_checkpoints=True, **options)
        assert data.checkpointer is None
        data.disconnect()
