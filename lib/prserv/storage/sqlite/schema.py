"""The schema of a PR database file: bitbake's PR table and this project's value index.

The file stays byte-compatible with bitbake's own prserv (the same ``PRMAIN``
table, no functions or collations of our own), so either server can open what the
other wrote.  Table names pasted into SQL pass ``checked_identifier`` first.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import List

from ...errors import DatabaseError
from ...log import logger

PRMAIN = "PRMAIN"
"""The table bitbake's server uses."""
TABLE_DDL = ("CREATE TABLE IF NOT EXISTS %s (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
             "checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
"""bitbake's DDL of a PR table (``%s``: a name passed through ``checked_identifier``)."""

VALUE_INDEX_FROM = 256
"""The smallest leading number ``VALUE_INDEX_DDL`` holds.  A package's values grow one
by one, so only a package of more than this many checksums has rows in the index: a
small package's rows cost no index write, and a small package is read whole anyway."""
VALUE_INDEX_DDL = "CREATE INDEX %s ON %s (version, pkgarch, CAST(value AS INTEGER)) WHERE %s"
"""An index of this project's (``%s``: its name, the table, ``indexed_values()``): a
package's rows of high values ordered by their value's leading number, so that a large
package's largest value is found without reading the package (bitbake's server
ignores it; SQLite keeps it up to date for any writer).  A query reads it only if it
repeats the ``WHERE`` term literally, and names it (``INDEXED BY``): without
statistics SQLite prefers the primary key."""
OLD_VALUE_INDEX = "prserv_%s_value"
"""An earlier form of the index that held every row (dropped when seen)."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def checked_identifier(name: str) -> str:
    """``name`` if it can be pasted into SQL as a table name; ``DatabaseError`` if not."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise DatabaseError("invalid table name %r" % (name,))
    return name


def create_table(conn: sqlite3.Connection, table: str) -> None:
    """bitbake's PR table named ``table``, unless it exists."""
    conn.execute(TABLE_DDL % checked_identifier(table))


def value_index_name(table: str) -> str:
    return "prserv_%s_high_values" % checked_identifier(table)


def indexed_values() -> str:
    """The ``WHERE`` term of ``VALUE_INDEX_DDL``: the unary ``+`` keeps SQLite from
    taking it for a range of the index's last column (it would scan from
    ``VALUE_INDEX_FROM`` up instead of seeking one number)."""
    return "+CAST(value AS INTEGER) >= %d" % VALUE_INDEX_FROM


def is_indexed(number: int) -> bool:
    """Whether rows whose value leads with ``number`` are in ``VALUE_INDEX_DDL``."""
    return number >= VALUE_INDEX_FROM


def value_index_ddl(table: str) -> str:
    """``VALUE_INDEX_DDL`` for ``table``, as ``sqlite_master`` keeps it."""
    return VALUE_INDEX_DDL % (value_index_name(table), checked_identifier(table), indexed_values())


def has_value_index(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` has ``VALUE_INDEX_DDL`` as this version defines it (a query
    naming an index whose ``WHERE`` term differs fails)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                       (value_index_name(table),)).fetchone()
    return row is not None and row[0] == value_index_ddl(table)


def create_value_index(conn: sqlite3.Connection, table: str) -> None:
    """``VALUE_INDEX_DDL`` on ``table`` unless it exists (once per file: a large
    table takes a while, about a second per million rows, which is logged).  Earlier
    forms of the index are dropped."""
    old_index = OLD_VALUE_INDEX % checked_identifier(table)
    if has_value_index(conn, table) and not _exists(conn, "index", old_index):
        return
    conn.execute("BEGIN IMMEDIATE")             # another server may be starting on the file
    try:
        conn.execute("DROP INDEX IF EXISTS %s" % old_index)   # an older version may have run
        if not has_value_index(conn, table):
            started = time.monotonic()
            logger.info("Indexing %s by value for package maxima (once per database)...", table)
            conn.execute("DROP INDEX IF EXISTS %s" % value_index_name(table))
            conn.execute(value_index_ddl(table))
            logger.info("Indexed %s in %.1f s", table, time.monotonic() - started)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _exists(conn: sqlite3.Connection, kind: str, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?",
                        (kind, name)).fetchone() is not None


def table_names(conn: sqlite3.Connection) -> List[str]:
    """The file's tables by name, SQLite's own (``sqlite_sequence``...) left out."""
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name")]


def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    """Whether the file holds a table named ``table`` (the one place that asks)."""
    return _exists(conn, "table", table)
