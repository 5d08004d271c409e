"""The record of when each value of a PR table was given, beside bitbake's table.

bitbake's ``PRMAIN`` has no time column, and this project keeps its file
byte-compatible, so the record is a table of its own (bitbake's server ignores it):
``prserv_<table>_given`` holds, per row of the PR table (by rowid, as the change feed
names rows), the time the row was stored in microseconds since the epoch (UTC), the
address it was given to and the user, each NULL where not recorded.

There is no index on the time: it would cost every new value a second B-tree insert
(and every commit one more page), for a question rows already answer -- values are
stored in time order (the time is taken under the write lock), so "the first value
given since T" is a binary search over the record's rows (``first_since``: a rowid
seek per step, about 24 for ten million rows).  Where times are not in row order (the
clock was set back) a value given near such a step may be left out of a "since"
answer; what is shown is always given at or after it (every row read is checked).

Records are written in the transaction of their rows, but not one by one: a write
scope queues its record (``Record.add``) and the queue is written in one
``executemany`` just before the transaction commits (``Record.flush``, a
``Transactions.before_commit`` hook) -- with group commit, one statement for every
value of a turn.  A rollback drops the queue with the rows.  Readers flush first, so
a row read inside the open transaction has its record too.

Rows without a record (stored before it existed, or by bitbake's server) are
"unknown": readers join with ``LEFT JOIN``.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, List, Optional, Sequence, Tuple

from ...timestamps import now_us
from ..engine import Given, Giver, HistoryRow, RecentRow, Row
from .schema import checked_identifier, indexed_values, is_indexed, table_exists, value_index_name

RECORD_DDL = ("CREATE TABLE IF NOT EXISTS %s (row INTEGER PRIMARY KEY, given INTEGER NOT NULL, "
              "address TEXT, user TEXT)")
OLD_TIME_INDEX = "prserv_%s_given_time"
"""An index an early form of the record had (dropped when seen)."""

Entry = Tuple[int, int, Optional[str], Optional[str]]
"""A queued record: (PR table rowid, time in microseconds, address, user)."""


def record_table(table: str) -> str:
    return "prserv_%s_given" % checked_identifier(table)


def create(conn: sqlite3.Connection, table: str) -> None:
    """The record's table, unless it exists (inside the caller's transaction, or in
    autocommit mode)."""
    conn.execute(RECORD_DDL % record_table(table))
    conn.execute("DROP INDEX IF EXISTS %s" % (OLD_TIME_INDEX % checked_identifier(table)))


class Record:
    """The record of one PR table on one connection: the queue of records of the open
    transaction, and the queries that read it."""

    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn = conn
        self.table = checked_identifier(table)
        self.name = record_table(table)
        self.queued: List[Entry] = []
        self._exists = table_exists(conn, self.name)

    def exists(self) -> bool:
        """Whether the file has the record (a read-only server on a file no read-write
        server of this version opened has none; asked again until it has)."""
        if not self._exists:
            self._exists = table_exists(self.conn, self.name)
        return self._exists

    # -- writing
    def add(self, row: int, giver: Giver) -> None:
        """Queue the record of a row stored now, in the open transaction."""
        self.queued.append((row, now_us(), giver.address, giver.user))

    def add_copied(self, times: Iterable[Tuple[int, Optional[int]]]) -> None:
        """Queue the records of rows a mirror copied, (rowid, time at the source): the
        time only -- no address or user ever leaves the origin; a row of unknown time
        gets no record."""
        self.queued.extend((row, given, None, None) for row, given in times if given is not None)

    def keep(self, rows: Sequence[Row], given: Sequence[Optional[Given]]) -> None:
        """Give each held row of ``rows`` that has no record here the one it had in the
        database copied (inside the copy's write transaction): one statement, each
        row found by its primary key."""
        entries = [tuple(record) + tuple(row) for row, record in zip(rows, given)
                   if record is not None and record[0] is not None]
        if entries:
            self.flush_if_writing()
            self.conn.executemany(
                "INSERT OR IGNORE INTO %s (row, given, address, user) SELECT rowid, ?, ?, ? FROM %s "
                "WHERE version = ? AND pkgarch = ? AND checksum = ? AND value = ?" % (self.name, self.table),
                entries)

    def flush(self) -> None:
        """Write the queued records (inside the open transaction: before COMMIT)."""
        if self.queued:
            entries, self.queued = self.queued, []
            self.conn.executemany("INSERT OR REPLACE INTO %s (row, given, address, user) VALUES (?, ?, ?, ?)"
                                  % self.name, entries)

    def discard(self) -> None:
        """Forget the queue (the transaction rolled back: its rows are gone too)."""
        self.queued = []

    def forget_clients(self, before: int, rows: Tuple[int, int]) -> int:
        """Erase addresses and users of the records older than ``before`` among
        ``rows`` (a range of rowids: the caller takes a table in slices, each its own
        transaction, so that no writer waits long); returns how many changed."""
        return self.conn.execute(
            "UPDATE %s SET address = NULL, user = NULL WHERE row >= ? AND row < ? AND given < ? AND "
            "(address IS NOT NULL OR user IS NOT NULL)" % self.name, (rows[0], rows[1], before)).rowcount

    def row_range(self) -> Tuple[int, int]:
        """(the first record's row, past the last one's); (0, 0) without records."""
        if not self.exists():
            return 0, 0
        first, last = self.conn.execute("SELECT (SELECT min(row) FROM %s), (SELECT max(row) FROM %s)"
                                        % (self.name, self.name)).fetchone()     # each one seek
        return (0, 0) if first is None else (first, last + 1)

    # -- reading
    def history(self, version: str, pkgarch: str) -> List[HistoryRow]:
        """Every row of the package with its record (the primary key's range)."""
        if not self.exists():
            return [(checksum, value, None, None, None) for checksum, value in self.conn.execute(
                "SELECT checksum, value FROM %s WHERE version = ? AND pkgarch = ?" % self.table,
                (version, pkgarch))]
        self.flush_if_writing()
        return self.conn.execute(
            "SELECT t.checksum, t.value, g.given, g.address, g.user FROM %s AS t LEFT JOIN %s AS g "
            "ON g.row = t.rowid WHERE t.version = ? AND t.pkgarch = ?" % (self.table, self.name),
            (version, pkgarch)).fetchall()

    def of_rows(self, rows: Sequence[Row]) -> List[Optional[Given]]:
        """The record of each row (None where it has none): what a copy carries over.
        Rows in primary-key order (an export's batch) are read as one range of the
        key; others one by one."""
        if not self.exists() or not rows:
            return [None] * len(rows)
        self.flush_if_writing()
        keys = [tuple(row) for row in rows]
        if all(None not in key for key in keys) and all(keys[n] < keys[n + 1] for n in range(len(keys) - 1)):
            found = {tuple(record[:4]): tuple(record[4:]) for record in self.conn.execute(
                "SELECT t.version, t.pkgarch, t.checksum, t.value, g.given, g.address, g.user FROM %s AS t "
                "JOIN %s AS g ON g.row = t.rowid WHERE (t.version, t.pkgarch, t.checksum, t.value) >= (?, ?, ?, ?) "
                "AND (t.version, t.pkgarch, t.checksum, t.value) <= (?, ?, ?, ?)" % (self.table, self.name),
                keys[0] + keys[-1])}
            return [found.get(key) for key in keys]           # type: ignore[misc]
        query = ("SELECT g.given, g.address, g.user FROM %s AS t JOIN %s AS g ON g.row = t.rowid "
                 "WHERE t.version = ? AND t.pkgarch = ? AND t.checksum = ? AND t.value = ?"
                 % (self.table, self.name))
        return [self.conn.execute(query, key).fetchone() for key in keys]

    def first_given(self, version: str, pkgarch: str, value: str, indexed: bool) -> Optional[int]:
        """When ``value`` was first given in the package (None: unknown).  A value the
        table's value index holds (``indexed``: the index exists and the value's
        leading number is in it) is found through it, not by reading the package (the
        unary ``+`` keeps SQLite from seeking the primary key by value instead)."""
        if not self.exists():
            return None
        self.flush_if_writing()
        number = int(value.split(".", 1)[0])
        if indexed and is_indexed(number):
            row = self.conn.execute(
                "SELECT min(g.given) FROM %s AS t INDEXED BY %s JOIN %s AS g ON g.row = t.rowid "
                "WHERE t.version = ? AND t.pkgarch = ? AND %s AND CAST(value AS INTEGER) = ? AND +t.value = ?"
                % (self.table, value_index_name(self.table), self.name, indexed_values()),
                (version, pkgarch, number, value)).fetchone()
        else:
            row = self.conn.execute(
                "SELECT min(g.given) FROM %s AS t JOIN %s AS g ON g.row = t.rowid "
                "WHERE t.version = ? AND t.pkgarch = ? AND t.value = ?" % (self.table, self.name),
                (version, pkgarch, value)).fetchone()
        return row[0]

    def recent(self, since: Optional[int], before: Optional[int], bound: int, limit: int) -> List[RecentRow]:
        """Up to ``limit`` rows of rowid <= ``bound`` (and < ``before``), newest first;
        with ``since``, only rows recorded as given at or after it: from the first
        one (``first_since``) on, read by rowid newest first.  A page reads what it
        shows."""
        upper = bound if before is None else min(bound, before - 1)
        if since is not None:
            if not self.exists():
                return []
            self.flush_if_writing()
            first = self.first_since(since)
            if first is None:
                return []
            rows = self.conn.execute(
                "SELECT g.row, t.version, t.pkgarch, t.checksum, t.value, g.given, g.address, g.user "
                "FROM %s AS g JOIN %s AS t ON t.rowid = g.row WHERE g.row >= ? AND g.row <= ? "
                "AND g.given >= ? ORDER BY g.row DESC LIMIT ?" % (self.name, self.table),
                (first, upper, since, limit)).fetchall()
        elif self.exists():
            self.flush_if_writing()
            rows = self.conn.execute(
                "SELECT t.rowid, t.version, t.pkgarch, t.checksum, t.value, g.given, g.address, g.user "
                "FROM %s AS t LEFT JOIN %s AS g ON g.row = t.rowid WHERE t.rowid <= ? "
                "ORDER BY t.rowid DESC LIMIT ?" % (self.table, self.name), (upper, limit)).fetchall()
        else:
            rows = [row + (None, None, None) for row in self.conn.execute(
                "SELECT rowid, version, pkgarch, checksum, value FROM %s WHERE rowid <= ? "
                "ORDER BY rowid DESC LIMIT ?" % self.table, (upper, limit))]
        return [(str(row[0]),) + tuple(row[1:]) for row in rows]      # type: ignore[misc]

    def given_since(self, since: int) -> Optional[int]:
        """Records of time ``since`` or later: those of the rows from ``first_since``
        on (a range of rowids, read without the rows before it)."""
        if not self.exists():
            return None
        self.flush_if_writing()
        first = self.first_since(since)
        if first is None:
            return 0
        return self.conn.execute("SELECT count(*) FROM %s WHERE row >= ? AND given >= ?" % self.name,
                                 (first, since)).fetchone()[0]

    def first_since(self, since: int) -> Optional[int]:
        """The row of the first record given at or after ``since`` (None: none is),
        by binary search over the rows: times grow with rows (module docstring)."""
        low, high = self.row_range()
        if low == high or self._record_at(high - 1)[1] < since:
            return None
        high -= 1
        while low < high:
            middle = (low + high) // 2
            if self._record_at(middle)[1] >= since:
                high = middle
            else:
                low = middle + 1
        return self._record_at(low)[0]

    def _record_at(self, row: int) -> Tuple[int, int]:
        """(row, time) of the first record at or after ``row`` (one must exist)."""
        return self.conn.execute("SELECT row, given FROM %s WHERE row >= ? ORDER BY row LIMIT 1" % self.name,
                                 (row,)).fetchone()

    def flush_if_writing(self) -> None:
        """Inside the open transaction the queued rows are visible: so are their records."""
        if self.queued and self.conn.in_transaction:
            self.flush()
