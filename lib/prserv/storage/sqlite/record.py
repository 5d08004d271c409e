"""The record of when each value of a PR table was given, beside bitbake's table.

bitbake's ``PRMAIN`` has no time column, and this project keeps its file
byte-compatible, so the record is a table of its own (bitbake's server ignores it):
``prserv_<table>_given`` holds, per row of the PR table (by rowid, as the change feed
names rows), the time the row was stored in microseconds since the epoch (UTC), the
address it was given to and the user, each NULL where not recorded.  An index on the
time serves "what was given since" without reading the table.

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
import time
from typing import Iterable, List, Optional, Sequence, Tuple

from ..engine import Given, Giver, HistoryRow, RecentRow, Row
from .schema import checked_identifier, table_exists

RECORD_DDL = ("CREATE TABLE IF NOT EXISTS %s (row INTEGER PRIMARY KEY, given INTEGER NOT NULL, "
              "address TEXT, user TEXT)")
TIME_INDEX_DDL = "CREATE INDEX IF NOT EXISTS %s ON %s (given)"

Entry = Tuple[int, int, Optional[str], Optional[str]]
"""A queued record: (PR table rowid, time in microseconds, address, user)."""


def record_table(table: str) -> str:
    return "prserv_%s_given" % checked_identifier(table)


def time_index(table: str) -> str:
    return "prserv_%s_given_time" % checked_identifier(table)


def now_us() -> int:
    """The time a value is given, in microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


def create(conn: sqlite3.Connection, table: str) -> None:
    """The record's table and its time index, unless they exist (inside the caller's
    transaction, or in autocommit mode)."""
    conn.execute(RECORD_DDL % record_table(table))
    conn.execute(TIME_INDEX_DDL % (time_index(table), record_table(table)))


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

    def forget_clients(self, before: int) -> int:
        """Erase addresses and users of records older than ``before`` (inside a write
        transaction); returns how many changed."""
        if not self.exists():
            return 0
        return self.conn.execute(
            "UPDATE %s SET address = NULL, user = NULL WHERE given < ? AND "
            "(address IS NOT NULL OR user IS NOT NULL)" % self.name, (before,)).rowcount

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
        """The record of each row (None where it has none), each found by its primary
        key: what a copy carries over."""
        if not self.exists():
            return [None] * len(rows)
        self.flush_if_writing()
        query = ("SELECT g.given, g.address, g.user FROM %s AS t JOIN %s AS g ON g.row = t.rowid "
                 "WHERE t.version = ? AND t.pkgarch = ? AND t.checksum = ? AND t.value = ?"
                 % (self.table, self.name))
        return [self.conn.execute(query, tuple(row)).fetchone() for row in rows]

    def first_given(self, version: str, pkgarch: str, value: str) -> Optional[int]:
        """When ``value`` was first given in the package (None: unknown)."""
        if not self.exists():
            return None
        self.flush_if_writing()
        row = self.conn.execute(
            "SELECT min(g.given) FROM %s AS t JOIN %s AS g ON g.row = t.rowid "
            "WHERE t.version = ? AND t.pkgarch = ? AND t.value = ?" % (self.table, self.name),
            (version, pkgarch, value)).fetchone()
        return row[0]

    def recent(self, since: Optional[int], before: Optional[int], bound: int, limit: int) -> List[RecentRow]:
        """Up to ``limit`` rows of rowid <= ``bound`` (and < ``before``), newest first;
        with ``since``, only rows recorded as given at or after it.  Rowids grow with
        time, so the time index finds the first row given since then (one seek) and
        the rows from it on are read by rowid, newest first: a page reads what it
        shows."""
        upper = bound if before is None else min(bound, before - 1)
        if since is not None:
            if not self.exists():
                return []
            self.flush_if_writing()
            first = self.conn.execute("SELECT row FROM %s WHERE given >= ? ORDER BY given LIMIT 1"
                                      % self.name, (since,)).fetchone()
            if first is None:
                return []
            rows = self.conn.execute(
                "SELECT g.row, t.version, t.pkgarch, t.checksum, t.value, g.given, g.address, g.user "
                "FROM %s AS g JOIN %s AS t ON t.rowid = g.row WHERE g.row >= ? AND g.row <= ? "
                "AND +g.given >= ? ORDER BY g.row DESC LIMIT ?" % (self.name, self.table),
                (first[0], upper, since, limit)).fetchall()
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
        """Records of time ``since`` or later (a range of the time index)."""
        if not self.exists():
            return None
        self.flush_if_writing()
        return self.conn.execute("SELECT count(*) FROM %s WHERE given >= ?" % self.name, (since,)).fetchone()[0]

    def flush_if_writing(self) -> None:
        """Inside the open transaction the queued rows are visible: so are their records."""
        if self.queued and self.conn.in_transaction:
            self.flush()
