"""Databases of older bitbake releases (``PRMAIN_nohist`` / ``PRMAIN_hist``): migration.

Up to bitbake 2.8 (Yocto 5.0) prserv kept its values in ``PRMAIN_nohist`` (INTEGER
values, one row per checksum) and, for callers asking for history mode,
``PRMAIN_hist``.  The current schema has one ``PRMAIN`` table with TEXT values;
bitbake's own server ignores the old tables and restarts every package at 0, which
breaks package upgrades (docs/semantics.md §9).  Here the old rows are copied into
``PRMAIN`` once:

- on a read-write open, automatically; ``prserv migrate DB`` does the same
  explicitly and prints the summary;
- in one ``BEGIN IMMEDIATE`` transaction: an interrupted migration leaves nothing
  half-copied, and two processes opening the file at once migrate it once;
- ``INSERT OR IGNORE``: a row already in ``PRMAIN`` is counted, not duplicated;
- values become canonical revision text (``12`` -> ``"12"``); values that are not
  revisions (NULL, negative, junk text) are counted and skipped, never stored;
- ``PRMAIN_hist`` is copied only when ``PRMAIN_nohist`` is absent or empty: bitbake's
  cooker never asked for history mode, so ``PRMAIN_nohist`` holds what builds got,
  and merging both would give checksums values they were never handed out;
- the old tables are left untouched (an older bitbake can still use the file), and
  completion is recorded in a table of our own, ``prserv_migrations``, which
  bitbake's server never reads.  Rows an older bitbake adds to the old tables after
  the migration are not copied again.

When ``PRMAIN`` already holds a row for the same (version, pkgarch, checksum) with
another value -- a bitbake >= 2.10 server ran on the file and restarted the package
at 0 -- both rows are kept (``PRMAIN``'s primary key includes the value).  That is
the current schema's model (docs/semantics.md §1: a checksum may own several values): the
checksum's no-history value becomes the larger one, the package max is back at or
above the legacy max, and the next new checksum continues after it, so upgrades work
again; history mode keeps answering the first value.  Nothing handed out is lost.

A read-only server cannot migrate, and serving an unmigrated legacy file would hand
out values from 0 again: it refuses to start and says how to migrate.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sqlite3
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from ...errors import DatabaseError
from ...log import logger
from ...revision import is_revision
from .errors import translated
from .schema import table_exists

NOHIST_TABLE = "PRMAIN_nohist"
HIST_TABLE = "PRMAIN_hist"
LEGACY_TABLES = (NOHIST_TABLE, HIST_TABLE)
TARGET_TABLE = "PRMAIN"
RECORD_TABLE = "prserv_migrations"
MIGRATION_NAME = "bitbake-2.8-legacy-tables"
"""Key of this migration's row in ``prserv_migrations``."""
MAX_EXAMPLES = 5
"""Invalid rows quoted in the summary's warning, at most."""

# Identical to ``connection.TABLE_DDL`` for PRMAIN (bitbake's own DDL): the file stays
# openable by bitbake's server.
TARGET_DDL = ("CREATE TABLE IF NOT EXISTS PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
              "checksum TEXT NOT NULL, value TEXT, "
              "PRIMARY KEY (version, pkgarch, checksum, value))")
RECORD_DDL = ("CREATE TABLE IF NOT EXISTS prserv_migrations (name TEXT PRIMARY KEY NOT NULL, "
              "applied_at TEXT NOT NULL, rows_copied INTEGER NOT NULL, summary TEXT NOT NULL)")

# Old rows whose value is a non-negative INTEGER (everything bitbake <= 2.8 wrote
# itself) are copied by SQL alone: CAST gives canonical digits.  The rest is checked
# one by one in Python.  Each old table has its own constant queries (the SQL audit
# of tests/test_hardening.py accepts no table name from a variable).
_PLAIN = "typeof(value) = 'integer' AND value >= 0"
_STATS = "SELECT count(*), count(CASE WHEN %s THEN 1 END) FROM %%s" % _PLAIN
_COPY_PLAIN = ("INSERT OR IGNORE INTO PRMAIN (version, pkgarch, checksum, value) "
               "SELECT version, pkgarch, checksum, CAST(value AS TEXT) FROM %%s WHERE %s" % _PLAIN)
_OTHERS = "SELECT version, pkgarch, checksum, value FROM %%s WHERE NOT (%s)" % _PLAIN
_NOHIST_STATS = _STATS % NOHIST_TABLE
_NOHIST_COPY_PLAIN = _COPY_PLAIN % NOHIST_TABLE
_NOHIST_OTHERS = _OTHERS % NOHIST_TABLE
_HIST_STATS = _STATS % HIST_TABLE
_HIST_COPY_PLAIN = _COPY_PLAIN % HIST_TABLE
_HIST_OTHERS = _OTHERS % HIST_TABLE
_INSERT = "INSERT OR IGNORE INTO PRMAIN (version, pkgarch, checksum, value) VALUES (?, ?, ?, ?)"


@dataclasses.dataclass
class TableCopy:
    """What happened to one old table."""

    table: str
    rows: int
    copied: bool = True
    """False: ignored (``PRMAIN_hist`` next to a non-empty ``PRMAIN_nohist``)."""
    rows_copied: int = 0
    rows_already_present: int = 0
    rows_invalid: int = 0
    rows_from_real: int = 0
    """Copied values SQLite had stored as floating-point numbers (``1.2``)."""


@dataclasses.dataclass
class MigrationSummary:
    """The result of one migration, logged, printed by ``prserv migrate`` and recorded."""

    database: str
    applied_at: str
    tables_found: List[str]
    tables: List[TableCopy]
    used_hist: bool
    warnings: List[str]

    @property
    def rows_copied(self) -> int:
        return sum(table.rows_copied for table in self.tables)

    @property
    def rows_invalid(self) -> int:
        return sum(table.rows_invalid for table in self.tables)

    def as_dict(self) -> Dict[str, Any]:
        document = dataclasses.asdict(self)
        document["rows_copied"] = self.rows_copied
        return document

    def lines(self) -> List[str]:
        """The summary as text, one line per old table (warnings not included)."""
        found = ", ".join("%s (%d rows)" % (table.table, table.rows) for table in self.tables)
        lines = ["Migrated %s: %d rows copied into %s from the tables of bitbake <= 2.8: %s"
                 % (self.database, self.rows_copied, TARGET_TABLE, found)]
        for table in self.tables:
            if not table.copied:
                lines.append("  %s: not copied (%s has rows)" % (table.table, NOHIST_TABLE))
                continue
            lines.append("  %s: %d copied, %d already present, %d skipped (not a revision)"
                         % (table.table, table.rows_copied, table.rows_already_present, table.rows_invalid))
        return lines


# --------------------------------------------------------------------------- inspecting

def _stats(conn: sqlite3.Connection, table: str) -> Tuple[int, int]:
    """(rows, rows whose value is a non-negative INTEGER) of an existing old table."""
    if table == NOHIST_TABLE:
        sql = _NOHIST_STATS
    elif table == HIST_TABLE:
        sql = _HIST_STATS
    else:
        raise ValueError("not a table of bitbake <= 2.8: %r" % table)
    rows, plain = conn.execute(sql).fetchone()
    return rows, plain


def legacy_row_counts(conn: sqlite3.Connection) -> Dict[str, int]:
    """Rows of each old table present in the file (absent tables are not listed)."""
    return {table: _stats(conn, table)[0] for table in LEGACY_TABLES if table_exists(conn, table)}


def completion_record(conn: sqlite3.Connection) -> Optional[Dict[str, Any]]:
    """The recorded migration (``applied_at``, ``rows_copied``, ``summary``), or None."""
    if not table_exists(conn, RECORD_TABLE):
        return None
    row = conn.execute("SELECT applied_at, rows_copied, summary FROM %s WHERE name = ?" % RECORD_TABLE,
                       (MIGRATION_NAME,)).fetchone()
    if row is None:
        return None
    return {"applied_at": row[0], "rows_copied": row[1], "summary": json.loads(row[2])}


def needs_migration(conn: sqlite3.Connection) -> bool:
    """Old tables with rows and no completion record.

    Empty old tables do not count: there is nothing to copy, and a modern file is
    left as it is (no record table is created on it)."""
    if completion_record(conn) is not None:
        return False
    return any(legacy_row_counts(conn).values())


# --------------------------------------------------------------------------- copying

def legacy_value_text(value: object) -> Tuple[Optional[str], bool]:
    """``(text, from_real)``: the revision text of an old value, None if it is not one.

    SQLite's INTEGER affinity stored old text values that look like numbers as
    numbers: ``'1.2'`` as the REAL 1.2 (``'1.10'`` as 1.1 and ``'1.0'`` as the
    INTEGER 1: those trailing zeros are gone from the file already), so a REAL is
    read back in its shortest decimal form.  Text stayed text (``'2.0.3'``).
    """
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int):
        return (str(value) if value >= 0 else None), False
    if isinstance(value, float):
        text = repr(value)
        return (text if is_revision(text) else None), True
    if isinstance(value, str) and is_revision(value):
        return value, False
    return None, False


def _copy_table(conn: sqlite3.Connection, table: str, warnings: List[str]) -> TableCopy:
    """Copy one old table into PRMAIN (inside the caller's transaction)."""
    if table == NOHIST_TABLE:
        copy_sql, others_sql = _NOHIST_COPY_PLAIN, _NOHIST_OTHERS
    elif table == HIST_TABLE:
        copy_sql, others_sql = _HIST_COPY_PLAIN, _HIST_OTHERS
    else:
        raise ValueError("not a table of bitbake <= 2.8: %r" % table)
    rows, plain = _stats(conn, table)
    result = TableCopy(table, rows)
    result.rows_copied = conn.execute(copy_sql).rowcount
    result.rows_already_present = plain - result.rows_copied

    valid: List[Tuple[Any, Any, Any, str]] = []
    examples: List[str] = []
    others = conn.execute(others_sql).fetchall()
    for version, pkgarch, checksum, value in others:
        text, from_real = legacy_value_text(value)
        if text is None:
            result.rows_invalid += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append("%s/%s/%s: %r" % (version, pkgarch, checksum, value))
            continue
        result.rows_from_real += from_real
        valid.append((version, pkgarch, checksum, text))
    if valid:
        inserted = conn.executemany(_INSERT, valid).rowcount
        result.rows_copied += inserted
        result.rows_already_present += len(valid) - inserted
    if result.rows_invalid:
        warnings.append("%s: %d rows skipped, their value is not a revision (for example %s)"
                        % (table, result.rows_invalid, "; ".join(examples)))
    if result.rows_from_real:
        warnings.append("%s: %d values were stored by SQLite as floating-point numbers and copied "
                        "in their shortest form (1.2); trailing zeros (1.10, 1.0) were already lost "
                        "in the old file" % (table, result.rows_from_real))
    return result


def _copy_all(conn: sqlite3.Connection, database: str) -> MigrationSummary:
    """Decide what to copy and copy it (inside the caller's transaction)."""
    counts = legacy_row_counts(conn)
    found = list(counts)
    use_hist = counts.get(NOHIST_TABLE, 0) == 0
    warnings: List[str] = []
    conn.execute(TARGET_DDL)
    tables = []
    for table in found:
        if table == HIST_TABLE and not use_hist:
            tables.append(TableCopy(table, counts[table], copied=False))
            if counts[table]:
                warnings.append("%s: %d rows ignored because %s has rows (bitbake's server used %s; "
                                "%s held values only for callers asking for history mode)"
                                % (HIST_TABLE, counts[table], NOHIST_TABLE, NOHIST_TABLE, HIST_TABLE))
            continue
        tables.append(_copy_table(conn, table, warnings))
    applied_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return MigrationSummary(database, applied_at, found, tables,
                            used_hist=use_hist and HIST_TABLE in found, warnings=warnings)


def _record(conn: sqlite3.Connection, summary: MigrationSummary) -> None:
    conn.execute(RECORD_DDL)
    conn.execute("INSERT INTO %s (name, applied_at, rows_copied, summary) VALUES (?, ?, ?, ?)"
                 % RECORD_TABLE, (MIGRATION_NAME, summary.applied_at, summary.rows_copied,
                                  json.dumps(summary.as_dict())))


def migrate(conn: sqlite3.Connection, database: str) -> Optional[MigrationSummary]:
    """Migrate if needed, in one transaction; None if there was nothing to do.

    ``conn`` is in autocommit mode (``isolation_level=None``), outside a
    transaction.  The decision is taken again under the write lock: another
    process may have migrated the file meanwhile."""
    with translated("cannot migrate the tables of an older bitbake in %s" % database):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not needs_migration(conn):
                conn.execute("ROLLBACK")
                return None
            summary = _copy_all(conn, database)
            _record(conn, summary)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return summary


def log_summary(summary: MigrationSummary) -> None:
    for line in summary.lines():
        logger.info("%s", line)
    for warning in summary.warnings:
        logger.warning("Migration of %s: %s", summary.database, warning)


def refuse_unmigrated(conn: sqlite3.Connection, database: str) -> None:
    """Raise ``DatabaseError`` if a read-only open finds an unmigrated legacy file."""
    if not needs_migration(conn):
        return
    raise DatabaseError(
        "database %s holds PR values of bitbake <= 2.8 (tables %s) that are not migrated yet; "
        "a read-only server would restart every package at 0. Migrate it first: run "
        "'prserv migrate %s', or start a read-write server on it once"
        % (database, ", ".join(t for t in LEGACY_TABLES if table_exists(conn, t)), database))


def on_open(conn: sqlite3.Connection, database: str, read_only: bool) -> Optional[MigrationSummary]:
    """What opening a database does: migrate (read-write) or refuse (read-only)."""
    with translated("cannot inspect database %s" % database):
        if read_only:
            refuse_unmigrated(conn, database)
            return None
        if not needs_migration(conn):          # cheap: no write lock taken
            return None
    summary = migrate(conn, database)
    if summary is not None:
        log_summary(summary)
    return summary


def migrated_copy(path: str) -> Optional[str]:
    """A scratch copy of a file of bitbake <= 2.8 (in a directory of its own, for the
    caller to remove), to be migrated when opened read-write; None if it needs none.
    The file itself is only read."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        with translated("cannot read %s" % path):
            if not needs_migration(conn):
                return None
            scratch = os.path.join(tempfile.mkdtemp(prefix="prserv-copy-"), "migrated.sqlite3")
            target = sqlite3.connect(scratch)
            try:
                conn.backup(target)
            finally:
                target.close()
            return scratch
    finally:
        conn.close()
