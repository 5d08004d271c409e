"""Databases of bitbake <= 2.8 (``PRMAIN_nohist`` / ``PRMAIN_hist``): migration into PRMAIN.

Legacy files are built here from the old DDL (copied from docs/semantics.md §9); results
are compared row by row, value by value.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

import prserv
from prserv.cli import output as exits
from prserv.storage.sqlite import migrate
from prserv.db import PRData
from prserv.errors import DatabaseError

# bitbake <= 2.8 (Yocto <= 5.0), from docs/semantics.md §9.  PRMAIN_hist had the same columns.
OLD_NOHIST_DDL = """CREATE TABLE IF NOT EXISTS PRMAIN_nohist (version TEXT NOT NULL, pkgarch TEXT NOT NULL,
    checksum TEXT NOT NULL, value INTEGER, PRIMARY KEY (version, pkgarch, checksum));"""
OLD_HIST_DDL = OLD_NOHIST_DDL.replace("PRMAIN_nohist", "PRMAIN_hist")
# The current table (bitbake >= 2.10), for files a newer bitbake already opened.
PRMAIN_DDL = """CREATE TABLE IF NOT EXISTS PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL,
    checksum TEXT NOT NULL, value TEXT,
    PRIMARY KEY (version, pkgarch, checksum, value));"""

Row = Tuple[str, str, str, object]
V, A = "zlib-1.3.1-r0", "cortexa53"

# Package zlib: legacy max 41.  curl: x.y values (old imports).  busybox: only in
# PRMAIN_nohist; openssl: only in PRMAIN_hist.
NOHIST_ROWS: List[Row] = [
    (V, A, "z0", 0), (V, A, "z1", 7), (V, A, "z2", 41), (V, A, "z3", 12),
    ("curl-8.7-r0", A, "c1", "1.2"),        # INTEGER affinity: stored as the REAL 1.2
    ("curl-8.7-r0", A, "c2", "2.0.3"),      # not a number: stays TEXT
    ("curl-8.7-r0", A, "c3", 3),
    ("busybox-1.36-r0", "x86_64", "b1", 5),
]
NOHIST_EXPECTED = {
    (V, A, "z0", "0"), (V, A, "z1", "7"), (V, A, "z2", "41"), (V, A, "z3", "12"),
    ("curl-8.7-r0", A, "c1", "1.2"), ("curl-8.7-r0", A, "c2", "2.0.3"), ("curl-8.7-r0", A, "c3", "3"),
    ("busybox-1.36-r0", "x86_64", "b1", "5"),
}
HIST_ROWS: List[Row] = [
    (V, A, "z1", 3),                         # history mode: z1's first value
    ("openssl-3.2-r0", A, "o1", 0), ("openssl-3.2-r0", A, "o2", 1),
]
HIST_EXPECTED = {(V, A, "z1", "3"), ("openssl-3.2-r0", A, "o1", "0"), ("openssl-3.2-r0", A, "o2", "1")}


def make_legacy(path, nohist: Optional[Iterable[Row]] = None, hist: Optional[Iterable[Row]] = None,
                prmain: Optional[Iterable[Row]] = None) -> str:
    """A file as bitbake <= 2.8 left it (None: table absent), plus PRMAIN rows if given."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = MEMORY")          # bitbake 2019-2024
    for ddl, rows, table in ((OLD_NOHIST_DDL, nohist, "PRMAIN_nohist"), (OLD_HIST_DDL, hist, "PRMAIN_hist"),
                             (PRMAIN_DDL, prmain, "PRMAIN")):
        if rows is not None:
            conn.execute(ddl)
            conn.executemany("INSERT INTO %s VALUES (?, ?, ?, ?)" % table, list(rows))
    conn.close()
    return str(path)


def rows_of(path: str, table: str) -> Set[Tuple[str, str, str, object]]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute("SELECT version, pkgarch, checksum, value FROM %s" % table))
    finally:
        conn.close()


def typed_rows(path: str, table: str) -> List[tuple]:
    """Rows with their SQLite storage class, in a fixed order: to prove nothing changed."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version, pkgarch, checksum, value, typeof(value) FROM %s "
                            "ORDER BY version, pkgarch, checksum" % table).fetchall()
    finally:
        conn.close()


def schema(path: str) -> Dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


def open_and_close(path: str, read_only: bool = False) -> Optional[migrate.MigrationSummary]:
    data = PRData(path, read_only=read_only)
    data.disconnect()
    return data.migration


# --------------------------------------------------------------------------- copying

def test_nohist_rows_copied_value_by_value_and_hist_ignored_with_warning(tmp_path, caplog):
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS, HIST_ROWS)
    assert typed_rows(path, "PRMAIN_nohist")[1] == ("curl-8.7-r0", A, "c1", 1.2, "real")   # fixture check
    with caplog.at_level(logging.INFO, logger="BitBake.PRserv"):
        summary = open_and_close(path)
    assert rows_of(path, "PRMAIN") == NOHIST_EXPECTED            # openssl (hist only) not copied
    assert summary is not None
    assert summary.tables_found == ["PRMAIN_nohist", "PRMAIN_hist"]
    assert summary.used_hist is False
    nohist, hist = summary.tables
    assert (nohist.table, nohist.rows, nohist.copied, nohist.rows_copied, nohist.rows_already_present,
            nohist.rows_invalid, nohist.rows_from_real) == ("PRMAIN_nohist", 8, True, 8, 0, 0, 1)
    assert (hist.table, hist.rows, hist.copied, hist.rows_copied) == ("PRMAIN_hist", 3, False, 0)
    assert summary.rows_copied == 8
    assert any("PRMAIN_hist: 3 rows ignored because PRMAIN_nohist has rows" in w for w in summary.warnings)
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(level == logging.INFO and "8 rows copied into PRMAIN" in message for level, message in logged)
    assert any(level == logging.WARNING and "PRMAIN_hist: 3 rows ignored" in message
               for level, message in logged)


@pytest.mark.parametrize("nohist", [None, []], ids=["nohist-absent", "nohist-empty"])
def test_hist_rows_copied_when_nohist_absent_or_empty(tmp_path, nohist):
    path = make_legacy(tmp_path / "old.sqlite3", nohist, HIST_ROWS)
    summary = open_and_close(path)
    assert rows_of(path, "PRMAIN") == HIST_EXPECTED
    assert summary is not None and summary.used_hist is True and summary.rows_copied == 3
    assert summary.warnings == []


def test_values_that_are_not_revisions_are_skipped_and_counted(tmp_path):
    junk: List[Row] = [(V, A, "n", None), (V, A, "neg", -3), (V, A, "t", "abc"), (V, A, "b", b"\x01"),
                       (V, A, "big", 1e20), (V, A, "q", "1'")]
    path = make_legacy(tmp_path / "old.sqlite3", junk + [(V, A, "ok", 4)])
    summary = open_and_close(path)
    assert rows_of(path, "PRMAIN") == {(V, A, "ok", "4")}
    assert summary is not None
    assert (summary.tables[0].rows_copied, summary.tables[0].rows_invalid) == (1, 6)
    assert any("6 rows skipped, their value is not a revision" in w and "-3" in w for w in summary.warnings)


@pytest.mark.parametrize("value, text", [
    (0, "0"), (41, "41"), (-1, None), (True, None), (1.2, "1.2"), (1.1, "1.1"), (1e20, None), (-1.5, None),
    ("2.0.3", "2.0.3"), ("01", None), ("", None), (None, None), (b"7", None),
])
def test_legacy_value_text(value, text):
    assert migrate.legacy_value_text(value)[0] == text


def test_trailing_zeros_lost_by_sqlite_affinity_are_reported(tmp_path):
    """'1.10' went into the INTEGER column as the REAL 1.1 and '1.0' as the INTEGER 1."""
    path = make_legacy(tmp_path / "old.sqlite3", [(V, A, "a", "1.10"), (V, A, "b", "1.0")])
    summary = open_and_close(path)
    assert rows_of(path, "PRMAIN") == {(V, A, "a", "1.1"), (V, A, "b", "1")}
    assert summary is not None and any("trailing zeros" in w for w in summary.warnings)


def test_rows_already_in_prmain_are_kept_and_counted(tmp_path):
    """A bitbake >= 2.10 server ran on the old file and restarted zlib at 0."""
    restarted = [(V, A, "z2", "0"), (V, A, "new", "1"),
                 (V, A, "z1", "7"), ("curl-8.7-r0", A, "c2", "2.0.3")]    # identical rows
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS, prmain=restarted)
    data = PRData(path)
    try:
        summary = data.migration
        assert summary is not None
        assert (summary.tables[0].rows_copied, summary.tables[0].rows_already_present) == (6, 2)
        table = data["PRMAIN"]
        assert table.find_value(V, A, "z2", history=False) == "41"    # both rows kept: max
        assert table.find_value(V, A, "z2", history=True) == "0"      # and min
        assert table.find_package_max_value(V, A) == "41"
        assert table.get_value(V, A, "new", history=False) == "42"   # 1 < 41: back on top
    finally:
        data.disconnect()
    assert rows_of(path, "PRMAIN") >= NOHIST_EXPECTED | {(V, A, "z2", "0"), (V, A, "new", "1")}


def test_migrated_prmain_has_bitbakes_schema(tmp_path):
    fresh = str(tmp_path / "fresh.sqlite3")
    data = PRData(fresh)
    data["PRMAIN"]
    data.disconnect()
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS)
    open_and_close(path)
    assert schema(path)["PRMAIN"] == schema(fresh)["PRMAIN"]


# --------------------------------------------------------------------------- once, untouched, atomic

def test_migrated_once_and_recorded(tmp_path):
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS)
    assert open_and_close(path) is not None
    conn = sqlite3.connect(path)
    (name, applied_at, copied, summary), = conn.execute("SELECT * FROM prserv_migrations")
    assert (name, copied, json.loads(summary)["rows_copied"]) == (migrate.MIGRATION_NAME, 8, 8)
    # An older bitbake keeps writing its table, and someone deletes a migrated row:
    # neither is touched by later opens.
    conn.execute("INSERT INTO PRMAIN_nohist VALUES ('late', 'x', 'l', 1)")
    conn.execute("DELETE FROM PRMAIN WHERE checksum = 'z0'")
    conn.commit()
    conn.close()
    assert open_and_close(path) is None
    assert rows_of(path, "PRMAIN") == NOHIST_EXPECTED - {(V, A, "z0", "0")}


def test_old_tables_left_untouched(tmp_path):
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS, HIST_ROWS)
    before = (typed_rows(path, "PRMAIN_nohist"), typed_rows(path, "PRMAIN_hist"))
    old_schema = schema(path)
    open_and_close(path)
    assert (typed_rows(path, "PRMAIN_nohist"), typed_rows(path, "PRMAIN_hist")) == before
    after = schema(path)
    assert {name: after[name] for name in old_schema} == old_schema
    assert set(after) == set(old_schema) | {"PRMAIN", "prserv_migrations"}


def test_modern_file_is_not_touched(tmp_path):
    path = make_legacy(tmp_path / "new.sqlite3", prmain=[(V, A, "x", "3")])
    assert open_and_close(path) is None
    assert set(schema(path)) == {"PRMAIN"}                      # no record table created


def test_empty_old_tables_need_nothing(tmp_path):
    path = make_legacy(tmp_path / "old.sqlite3", [], [])
    assert open_and_close(path) is None
    assert open_and_close(path, read_only=True) is None          # nothing to refuse
    assert set(schema(path)) == {"PRMAIN_nohist", "PRMAIN_hist"}


def test_interrupted_migration_leaves_nothing(tmp_path, monkeypatch):
    """Fails after the integer rows were inserted: the transaction takes them back."""
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS)
    before = schema(path)

    def fail(value):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(migrate, "legacy_value_text", fail)     # runs after the INSERT ... SELECT
    with pytest.raises(RuntimeError, match="interrupted"):
        PRData(path)
    assert schema(path) == before                               # no PRMAIN, no record
    monkeypatch.undo()
    assert open_and_close(path) is not None
    assert rows_of(path, "PRMAIN") == NOHIST_EXPECTED


def test_a_second_connection_does_not_migrate_again(tmp_path):
    """The decision is re-taken under the write lock."""
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS)
    late = sqlite3.connect(path, isolation_level=None)
    assert migrate.needs_migration(late)                        # decided before the other one ran
    assert open_and_close(path) is not None
    assert migrate.migrate(late, path) is None
    late.close()
    assert rows_of(path, "PRMAIN") == NOHIST_EXPECTED


# --------------------------------------------------------------------------- read-only

def test_read_only_open_of_unmigrated_file_refused_with_instructions(tmp_path):
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS)
    with pytest.raises(DatabaseError) as refused:
        PRData(path, read_only=True)
    message = str(refused.value)
    assert "bitbake <= 2.8" in message and "PRMAIN_nohist" in message
    assert "prserv migrate %s" % path in message and "read-write server" in message
    assert "PRMAIN" not in schema(path)                         # nothing written
    open_and_close(path)
    data = PRData(path, read_only=True)
    try:
        assert data["PRMAIN"].find_package_max_value(V, A) == "41"
    finally:
        data.disconnect()


# --------------------------------------------------------------------------- servers

async def test_server_on_legacy_file_continues_after_the_legacy_maximum(tmp_path, start_server):
    make_legacy(tmp_path / "pr.sqlite3", NOHIST_ROWS, HIST_ROWS)
    server = await start_server(db="pr.sqlite3")
    async with await prserv.create_async_client(server.address) as client:
        assert await client.test_package(V, A) is True
        assert await client.max_package_pr(V, A) == "41"
        assert await client.getPR(V, A, "z2") == "41"                 # known: its value
        assert await client.getPR(V, A, "brand-new") == "42"          # new: after the legacy max
        assert await client.getPR(V, A, "z1") == "43"                 # 7 < 42: no-history goes up
        assert await client.test_pr("curl-8.7-r0", A, "c2") == "2.0.3"
        assert await client.getPR("busybox-1.36-r0", "x86_64", "b2") == "6"


async def test_read_only_server_refuses_unmigrated_file_then_serves_it(tmp_path, start_server):
    make_legacy(tmp_path / "pr.sqlite3", NOHIST_ROWS)
    with pytest.raises(DatabaseError, match="prserv migrate"):
        await start_server(db="pr.sqlite3", read_only=True)
    open_and_close(str(tmp_path / "pr.sqlite3"))
    server = await start_server(db="pr.sqlite3", read_only=True)
    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR(V, A, "brand-new") == "42"


# --------------------------------------------------------------------------- prserv migrate

def test_cli_migrates_once_and_says_so(tmp_path, cli):
    path = make_legacy(tmp_path / "old.sqlite3", NOHIST_ROWS, HIST_ROWS)
    code, out, err = cli("migrate", path)
    assert (code, err) == (exits.EXIT_OK, "")
    lines = out.splitlines()
    assert lines[0] == ("Migrated %s: 8 rows copied into PRMAIN from the tables of bitbake <= 2.8: "
                        "PRMAIN_nohist (8 rows), PRMAIN_hist (3 rows)" % path)
    assert lines[1] == "  PRMAIN_nohist: 8 copied, 0 already present, 0 skipped (not a revision)"
    assert lines[2] == "  PRMAIN_hist: not copied (PRMAIN_nohist has rows)"
    assert any(line.startswith("warning: PRMAIN_hist: 3 rows ignored") for line in lines)
    assert rows_of(path, "PRMAIN") == NOHIST_EXPECTED
    code, out, err = cli("migrate", path)
    assert code == exits.EXIT_OK and "was already migrated on" in out and "(8 rows copied then)" in out
    assert rows_of(path, "PRMAIN") == NOHIST_EXPECTED


def test_cli_json(tmp_path, cli):
    path = make_legacy(tmp_path / "old.sqlite3", None, HIST_ROWS)
    code, out, _ = cli("migrate", path, "--json")
    document = json.loads(out)
    assert (code, document["status"], document["database"]) == (0, "migrated", path)
    assert document["summary"]["used_hist"] is True and document["summary"]["rows_copied"] == 3
    assert document["summary"]["tables"][0]["table"] == "PRMAIN_hist"
    code, out, _ = cli("--json", "migrate", path)
    again = json.loads(out)
    assert (code, again["status"], again["summary"]) == (0, "already-migrated", document["summary"])


def test_cli_nothing_to_migrate_and_missing_file(tmp_path, cli):
    modern = make_legacy(tmp_path / "new.sqlite3", prmain=[(V, A, "x", "3")])
    code, out, _ = cli("migrate", modern)
    assert code == exits.EXIT_OK and "nothing to migrate" in out
    assert set(schema(modern)) == {"PRMAIN"}
    missing = str(tmp_path / "missing.sqlite3")
    assert cli("migrate", missing) == (exits.EXIT_USAGE, "", "prserv: no database file %s\n" % missing)
    assert not (tmp_path / "missing.sqlite3").exists()
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_text("not a database, " * 100)
    code, out, err = cli("migrate", str(garbage))
    assert (code, out) == (exits.EXIT_USAGE, "") and "not a database" in err


def test_cli_exit_code_says_rows_were_skipped(tmp_path, cli):
    """Like import-file's skipped lines: exit 5 when this run left rows behind."""
    path = make_legacy(tmp_path / "old.sqlite3", [(V, A, "n", None), (V, A, "neg", -3), (V, A, "ok", 4)])
    code, out, err = cli("migrate", path)
    assert (code, err) == (exits.EXIT_INCOMPLETE, "")
    assert "  PRMAIN_nohist: 1 copied, 0 already present, 2 skipped (not a revision)" in out.splitlines()
    code, out, _ = cli("--json", "migrate", path)       # done before: nothing skipped now
    assert (code, json.loads(out)["status"]) == (exits.EXIT_OK, "already-migrated")


def test_migration_creates_prmain_exactly_as_the_engine_does():
    """Both create bitbake's DDL: a file one of them made is the file the other makes."""
    from prserv.storage.sqlite.schema import PRMAIN, TABLE_DDL

    assert migrate.TARGET_DDL == TABLE_DDL % PRMAIN
