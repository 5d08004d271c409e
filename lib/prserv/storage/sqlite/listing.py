"""Which packages a listing shows, found a seek at a time (``SQLiteEngine.packages``).

A listing walks the primary key ``(version, pkgarch, ...)`` one package at a time (a
loose index scan): each step is one seek from the place the last one stopped, so a
page costs the packages it shows, wherever in the table it starts.  The place is the
cursor when there is one -- it is the lower bound of the index range, never a filter
of a range that starts at the prefix (which would read every package between the two,
more with each page).  With a ``pkgarch``, the walk goes a version at a time and looks
the package ``(version, pkgarch)`` up exactly, so the other architectures' rows are
never read.

``walk`` yields a package the filters take, or None after a step that found none (a
version without the pkgarch): the caller counts both, and lets the event loop run
other requests every few steps.  Queries are constant text around the checked table
name; every value is a parameter.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator, Optional, Tuple

from ..engine import prefix_end
from .schema import checked_identifier

Package = Tuple[str, str]

FIRST_PACKAGE = "SELECT version, pkgarch FROM %s WHERE version >= ? ORDER BY version, pkgarch LIMIT 1"
NEXT_PACKAGE = ("SELECT version, pkgarch FROM %s WHERE (version, pkgarch) > (?, ?) "
                "ORDER BY version, pkgarch LIMIT 1")
FIRST_VERSION = "SELECT version FROM %s WHERE version >= ? ORDER BY version LIMIT 1"
NEXT_VERSION = "SELECT version FROM %s WHERE version > ? ORDER BY version LIMIT 1"
HAS_PACKAGE = "SELECT 1 FROM %s WHERE version = ? AND pkgarch = ? LIMIT 1"


def walk(conn: sqlite3.Connection, table: str, prefix: str, pkgarch: Optional[str],
         after: Optional[Package]) -> Iterator[Optional[Package]]:
    """The packages after ``after`` in (version, pkgarch) order whose version starts
    with ``prefix`` (and of ``pkgarch``), interleaved with None for steps that found
    nothing to show."""
    table = checked_identifier(table)
    end = prefix_end(prefix)
    place = after if after is not None and after >= (prefix, "") else None
    if pkgarch is None:
        return _packages(conn, table, prefix, end, place)
    return _of_pkgarch(conn, table, prefix, end, pkgarch, place)


def _before(version: str, end: Optional[str]) -> bool:
    """Whether ``version`` is before the end of the prefix's range."""
    return end is None or version < end


def next_package(conn: sqlite3.Connection, table: str, after: Optional[Package],
                 prefix: str = "") -> Optional[Package]:
    """The first package after ``after`` (without it: the first whose version is
    ``prefix`` or after), by one seek; ``table`` is checked by the caller."""
    row = (conn.execute(FIRST_PACKAGE % table, (prefix,)) if after is None
           else conn.execute(NEXT_PACKAGE % table, after)).fetchone()
    return None if row is None else (row[0], row[1])


def _packages(conn: sqlite3.Connection, table: str, prefix: str, end: Optional[str],
              place: Optional[Package]) -> Iterator[Optional[Package]]:
    package = next_package(conn, table, place, prefix)
    while package is not None and _before(package[0], end):
        yield package
        package = next_package(conn, table, package)


def _of_pkgarch(conn: sqlite3.Connection, table: str, prefix: str, end: Optional[str], pkgarch: str,
                place: Optional[Package]) -> Iterator[Optional[Package]]:
    if place is None:
        version = _first_version(conn, table, prefix)
    elif place[1] < pkgarch:
        version = place[0]                          # the cursor's version may still hold it
    else:
        version = _next_version(conn, table, place[0])
    while version is not None and _before(version, end):
        found = conn.execute(HAS_PACKAGE % table, (version, pkgarch)).fetchone() is not None
        yield (version, pkgarch) if found else None
        version = _next_version(conn, table, version)


def _first_version(conn: sqlite3.Connection, table: str, prefix: str) -> Optional[str]:
    row = conn.execute(FIRST_VERSION % table, (prefix,)).fetchone()
    return None if row is None else row[0]


def _next_version(conn: sqlite3.Connection, table: str, version: str) -> Optional[str]:
    row = conn.execute(NEXT_VERSION % table, (version,)).fetchone()
    return None if row is None else row[0]
