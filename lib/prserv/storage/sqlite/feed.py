"""The change feed of one PR table: which history it holds, and positions in it.

Functions given a ``table`` are given ``SQLiteEngine.table``, a name that passed
``checked_identifier``; ``positions_table`` and ``FeedReader`` check it again.

Every table belongs to one *history*, named by an identity kept in ``prserv_meta``
(a table of this project beside bitbake's; bitbake's server ignores it):

* A table written by PR servers on this file is its own **origin**.  Its feed is
  its rows in rowid order and a row's position is its rowid, as text.  Its identity
  is set by the first read-write open: derived from the table's first row if it
  has one (so that a read-only server on a file bitbake wrote names it the same way
  before anyone stored it), else a random one.
* A **mirror** file holds rows copied from another server's feed, in feed order.
  Each row keeps the origin's position (``prserv_<table>_positions``: PRMAIN rowid
  -> position), so a mirror serves the origin's identity and positions, and a
  mirror of it can fail over to another mirror of the same origin.  The position
  reached, the origin's identity and whether a first copy completed are stored in
  the same transaction as the rows.  A row's time in the source's feed, when known,
  becomes its record here (``record``: address and user NULL, as they never leave
  the origin), so that a mirror of it passes the time on.

A mirror's file opened read-write as an ordinary database (disaster recovery)
becomes an origin of its own, with a new identity: its new rows have no position
in the old history.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ...errors import DatabaseError, DivergedError, InvalidRequestError, SourceError
from ...log import logger
from ..engine import Position, PositionedRow, Row
from .record import record_table
from .schema import checked_identifier, table_exists

META_DDL = "CREATE TABLE IF NOT EXISTS prserv_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
POSITIONS_DDL = ("CREATE TABLE IF NOT EXISTS %s (row INTEGER PRIMARY KEY, "
                 "position TEXT NOT NULL UNIQUE)")
ORIGIN, MIRROR = "origin", "mirror"

class FeedState(NamedTuple):
    """What a table's meta entries say."""
    identity: Optional[str]
    role: str
    position: Optional[Position]
    """A mirror's last applied position (None: nothing copied yet)."""
    complete: bool
    """A mirror completed a first copy."""


def positions_table(table: str) -> str:
    return "prserv_%s_positions" % checked_identifier(table)


def read_state(conn: sqlite3.Connection, table: str) -> FeedState:
    entries = {}
    if table_exists(conn, "prserv_meta"):
        entries = dict(conn.execute("SELECT name, value FROM prserv_meta WHERE name LIKE ? ESCAPE '!'",
                                    (table.replace("_", "!_") + ".%",)).fetchall())
    return FeedState(entries.get(table + ".identity"), entries.get(table + ".role", ORIGIN),
                     entries.get(table + ".position"), entries.get(table + ".complete") == "1")


def _write(conn: sqlite3.Connection, table: str, **entries: Optional[str]) -> None:
    for name, value in entries.items():
        if value is None:
            conn.execute("DELETE FROM prserv_meta WHERE name = ?", (table + "." + name,))
        else:
            conn.execute("INSERT OR REPLACE INTO prserv_meta (name, value) VALUES (?, ?)",
                         (table + "." + name, value))


def first_row_identity(conn: sqlite3.Connection, table: str) -> Optional[str]:
    """The identity of a history nobody named yet: a digest of its first row (None if
    the table is empty)."""
    row = conn.execute("SELECT rowid, version, pkgarch, checksum, value FROM %s "
                       "ORDER BY rowid LIMIT 1" % table).fetchone()
    if row is None:
        return None
    return "rows-" + hashlib.sha256("\0".join(map(str, row)).encode("utf-8")).hexdigest()[:32]


def open_origin(conn: sqlite3.Connection, table: str) -> FeedState:
    """A read-write open as an ordinary database: name the history if nobody did, and
    turn a mirror's file into an origin of its own (inside a write transaction)."""
    conn.execute(META_DDL)
    state = read_state(conn, table)
    if state.role == MIRROR:
        identity = "promoted-" + uuid.uuid4().hex
        logger.warning("%s was a mirror of %s at position %s; opened read-write it is now a "
                       "database of its own (identity %s): mirrors that followed it copy afresh",
                       table, state.identity, state.position, identity)
        conn.execute("DELETE FROM %s" % positions_table(table))
        _write(conn, table, identity=identity, role=None, position=None, complete=None)
    elif state.identity is None:
        identity = first_row_identity(conn, table) or "db-" + uuid.uuid4().hex
        _write(conn, table, identity=identity)
    return read_state(conn, table)


def open_mirror(conn: sqlite3.Connection, table: str, filename: str) -> FeedState:
    """A read-write open as a mirror: the file must be empty or a mirror's."""
    conn.execute(META_DDL)
    conn.execute(POSITIONS_DDL % positions_table(table))
    state = read_state(conn, table)
    if state.role != MIRROR and conn.execute("SELECT 1 FROM %s LIMIT 1" % table).fetchone():
        raise DivergedError("%s holds rows of its own (it is not a mirror's file): a mirror needs "
                            "an empty file or one it copied before" % filename)
    return state


def identity_of(conn: sqlite3.Connection, table: str, state: FeedState) -> Optional[str]:
    """The history's identity as a source reports it (derived if nobody stored one)."""
    if state.identity is not None:
        return state.identity
    return first_row_identity(conn, table)


class FeedReader:
    """The feed of one table as a source serves it, up to a committed rowid bound."""

    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn = conn
        self.table = checked_identifier(table)
        self.positions = positions_table(table)
        self.record = record_table(table)

    def is_mirror(self, state: FeedState) -> bool:
        return state.role == MIRROR

    def local_row(self, position: Optional[Position], state: FeedState) -> Optional[int]:
        """The rowid where ``position`` is (0 for the beginning), None if not held."""
        if position is None:
            return 0
        if not isinstance(position, str):
            raise InvalidRequestError("not a position of this database: %r" % (position,))
        if self.is_mirror(state):
            found = self.conn.execute("SELECT row FROM %s WHERE position = ?" % self.positions,
                                      (position,)).fetchone()
            return None if found is None else found[0]
        if position.isdigit() and position.isascii():
            return int(position)
        raise InvalidRequestError("not a position of this database: %r" % (position,))

    def changes(self, since: Optional[Position], limit: int, bound: int,
                state: FeedState, times: bool = False) -> Optional[List[Any]]:
        """Up to ``limit`` rows after ``since`` with rowid <= ``bound``; None if this
        mirror does not hold ``since``.  ``times`` (the record's table exists): each
        row ends with the time its record holds (``TimedRow``)."""
        after = self.local_row(since, state)
        if after is None:
            return None
        if times:
            return self._timed_rows(after, bound, limit, state)
        if self.is_mirror(state):
            return self.conn.execute(
                "SELECT m.position, t.version, t.pkgarch, t.checksum, t.value FROM %s AS m "
                "JOIN %s AS t ON t.rowid = m.row WHERE m.row > ? AND m.row <= ? ORDER BY m.row LIMIT ?"
                % (self.positions, self.table), (after, bound, max(0, limit))).fetchall()
        return [(str(rowid),) + tuple(rest) for rowid, *rest in self.conn.execute(
            "SELECT rowid, version, pkgarch, checksum, value FROM %s "
            "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?" % self.table,
            (after, bound, max(0, limit)))]

    def _timed_rows(self, after: int, bound: int, limit: int, state: FeedState) -> List[Any]:
        """``changes`` with each row's time (None where the row has no record): the
        record is keyed by the rowid, as the feed is, so it is one join more."""
        params = (after, bound, max(0, limit))
        if self.is_mirror(state):
            return self.conn.execute(
                "SELECT m.position, t.version, t.pkgarch, t.checksum, t.value, g.given FROM %s AS m "
                "JOIN %s AS t ON t.rowid = m.row LEFT JOIN %s AS g ON g.row = m.row "
                "WHERE m.row > ? AND m.row <= ? ORDER BY m.row LIMIT ?"
                % (self.positions, self.table, self.record), params).fetchall()
        return [(str(rowid),) + tuple(rest) for rowid, *rest in self.conn.execute(
            "SELECT t.rowid, t.version, t.pkgarch, t.checksum, t.value, g.given FROM %s AS t "
            "LEFT JOIN %s AS g ON g.row = t.rowid WHERE t.rowid > ? AND t.rowid <= ? "
            "ORDER BY t.rowid LIMIT ?" % (self.table, self.record), params)]

    def at(self, position: Position, bound: int, state: FeedState) -> Tuple[bool, Optional[Row]]:
        """(whether the feed has reached ``position``, the row there if it still exists)."""
        local = self.local_row(position, state)
        if local is None or local > bound:
            return False, None
        row = self.conn.execute("SELECT version, pkgarch, checksum, value FROM %s WHERE rowid = ?"
                                % self.table, (local,)).fetchone()
        return True, row

    def between(self, after: Optional[Position], until: Position, bound: int,
                state: FeedState) -> Optional[Iterator[PositionedRow]]:
        """The rows after ``after`` up to ``until`` (None if either is not held)."""
        start, end = self.local_row(after, state), self.local_row(until, state)
        if start is None or end is None or end > bound:
            return None
        if self.is_mirror(state):
            return iter(self.conn.execute(
                "SELECT m.position, t.version, t.pkgarch, t.checksum, t.value FROM %s AS m "
                "JOIN %s AS t ON t.rowid = m.row WHERE m.row > ? AND m.row <= ?"
                % (self.positions, self.table), (start, end)))
        return ((str(rowid),) + tuple(rest) for rowid, *rest in self.conn.execute(
            "SELECT rowid, version, pkgarch, checksum, value FROM %s WHERE rowid > ? AND rowid <= ?"
            % self.table, (start, end)))

    def bound_after(self, after: Optional[Position], rows: int, state: FeedState) -> Optional[Position]:
        """A mirror's position ``rows`` rows after ``after``, or its last one; None if
        nothing follows (or ``after`` is not held)."""
        start = self.local_row(after, state)
        if start is None or not self.is_mirror(state):
            return None
        found = self.conn.execute("SELECT position FROM %s WHERE row > ? ORDER BY row LIMIT 1 OFFSET ?"
                                  % self.positions, (start, max(0, rows - 1))).fetchone()
        if found is None:
            found = self.conn.execute("SELECT position FROM %s WHERE row > ? ORDER BY row DESC LIMIT 1"
                                      % self.positions, (start,)).fetchone()
        return None if found is None else found[0]

    def count_after(self, since: Optional[Position], bound: int, state: FeedState) -> Optional[int]:
        """How many rows follow ``since`` (None if not held)."""
        after = self.local_row(since, state)
        if after is None:
            return None
        return self.conn.execute("SELECT count(*) FROM %s WHERE rowid > ? AND rowid <= ?"
                                 % self.table, (after, bound)).fetchone()[0]


def apply(conn: sqlite3.Connection, table: str, identity: str, rows: Sequence[Any],
          complete: bool) -> range:
    """Store a source's rows and the position after them (inside the caller's write
    transaction, which must roll back on an exception).  Returns the new rowids.
    ``rows``: ``PositionedRow``s or ``TimedRow``s (their times are the caller's: it
    queues their records).

    ``DivergedError`` if the file follows another history or already holds a row;
    ``SourceError`` if a position is already held (the feed went backwards).  Rows go
    in with ``executemany``; their rowids follow the largest one, since a mirror's
    file has one writer (checked)."""
    state = read_state(conn, table)
    if state.identity is not None and state.identity != identity and state.role == MIRROR:
        raise DivergedError("the source's history is %s, this mirror holds %s"
                            % (identity, state.identity))
    positions = positions_table(table)
    before = conn.execute("SELECT max(rowid) FROM %s" % table).fetchone()[0] or 0
    try:
        conn.executemany("INSERT INTO %s (version, pkgarch, checksum, value) VALUES (?, ?, ?, ?)" % table,
                         [row[1:5] for row in rows])
    except sqlite3.IntegrityError:
        raise DivergedError("the source sent a row this mirror already holds: %s"
                            % _first_held(conn, table, rows)) from None
    # One writer, in one transaction: SQLite numbers the new rows on from the largest.
    rowids = range(before + 1, before + 1 + len(rows))
    if rows and conn.execute("SELECT max(rowid) FROM %s" % table).fetchone()[0] != rowids[-1]:
        raise DatabaseError("%s: rows were not numbered in order (another writer?)" % table)
    try:
        conn.executemany("INSERT INTO %s (row, position) VALUES (?, ?)" % positions,
                         zip(rowids, (row[0] for row in rows)))
    except sqlite3.IntegrityError:
        held = [row[0] for row in rows if conn.execute(
            "SELECT 1 FROM %s WHERE position = ? AND row <= ?" % positions, (row[0], before)).fetchone()]
        raise SourceError("position %r is held already (the feed went backwards)"
                          % (held[0] if held else "?")) from None
    last = rows[-1][0] if rows else state.position
    _write(conn, table, identity=identity, role=MIRROR, position=last,
           complete="1" if complete or state.complete else None)
    return rowids


def _first_held(conn: sqlite3.Connection, table: str, rows: Sequence[Any]) -> str:
    """The first of ``rows`` the table holds already, for the error message."""
    for version, pkgarch, checksum, value in (row[1:5] for row in rows):
        if conn.execute("SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? AND checksum = ? AND value = ?"
                        % table, (version, pkgarch, checksum, value)).fetchone():
            return "%s %s %s = %s" % (version, pkgarch, checksum, value)
    return "?"


def reset(conn: sqlite3.Connection, table: str) -> int:
    """Forget a mirror's copy (inside a write transaction): its rows, positions and
    state; returns the rows removed."""
    state = read_state(conn, table)
    if state.role != MIRROR:
        raise DivergedError("%s is not a mirror's table: nothing reset" % table)
    removed = conn.execute("DELETE FROM %s" % table).rowcount
    conn.execute("DELETE FROM %s" % positions_table(table))
    _write(conn, table, identity=None, position=None, complete=None)
    return removed
