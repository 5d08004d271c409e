"""How many packages a PR table holds, counted in small steps and then kept up to date.

bitbake's table has no count of packages, and counting them is a walk of the primary
key: one seek per package (a loose index scan), about a second for a hundred thousand
packages -- too long for the event loop the SQLite engine runs on.  So the count is
taken a slice at a time (``STEP`` seeks per call, about a millisecond), each call
going on where the last stopped -- the engine makes the calls from a task of its own,
between other requests -- and the figure is unknown (None) until the walk is done.
From then on only the rows committed since are read (by rowid, a range): a package
is new if none of its rows is at or below the rowid already counted.

The walk counts a package only if it has a row at or below the rowid reached when the
walk began (``start``): a package first stored during the walk is counted once, by the
rows that come after ``start``, wherever it sorts.  Rows are never removed from a PR
table; if the table shrinks (re-created), counting starts afresh.
"""

from __future__ import annotations

import sqlite3
from typing import Optional, Tuple

from .listing import next_package
from .schema import checked_identifier

STEP = 50
"""Seeks (packages walked, or new rows read) per call at most."""


class PackageCounter:
    """The package count of one table on one connection (``count`` per status view)."""

    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn = conn
        self.table = checked_identifier(table)
        self._begin()

    def _begin(self) -> None:
        self._start: Optional[int] = None
        """The rowid the walk counts up to; None before it begins."""
        self._after: Optional[Tuple[str, str]] = None
        self._walked = 0
        self._done = False
        self._counted = 0
        """Every package with a row at or below this rowid is counted (once done)."""
        self._packages = 0

    def count(self, committed: int, walk: bool = True) -> Optional[int]:
        """The number of packages in the rows up to rowid ``committed`` (what is
        committed), or None while the first walk is not done: one more step of it
        (unless not ``walk``)."""
        if committed < self._counted:
            self._begin()                               # the table shrank: count afresh
        if not self._done:
            if not walk:
                return None
            self._walk(committed)
            if not self._done:
                return None
        self._add_new(committed)
        return self._packages

    def _walk(self, committed: int) -> None:
        if self._start is None:
            self._start = committed
        for _ in range(STEP):
            package = next_package(self.conn, self.table, self._after)
            if package is None:
                self._done, self._counted, self._packages = True, self._start, self._walked
                return
            self._after = package
            if self._existed(package, self._start):
                self._walked += 1

    def _add_new(self, committed: int) -> None:
        """Count the packages first stored in rows ``_counted + 1`` .. ``committed`` (at
        most ``STEP`` rows per call: the rest on the next)."""
        upper = min(committed, self._counted + STEP)
        if upper <= self._counted:
            return
        packages = self.conn.execute(
            "SELECT DISTINCT version, pkgarch FROM %s WHERE rowid > ? AND rowid <= ?" % self.table,
            (self._counted, upper)).fetchall()
        self._packages += sum(1 for package in packages if not self._existed(package, self._counted))
        self._counted = upper

    def _existed(self, package: Tuple[str, str], rowid: int) -> bool:
        """Whether the package has a row at or below ``rowid``."""
        return self.conn.execute("SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? AND rowid <= ? LIMIT 1"
                                 % self.table, (package[0], package[1], rowid)).fetchone() is not None
