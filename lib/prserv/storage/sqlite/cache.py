"""The package cache of one PR table: the few facts per package and per checksum a
request needs, read from the file on first use and kept coherent with its writers.

A request needs a package's largest value and one checksum's smallest and largest
value; never the whole package.  What it needs is read on first use through an
index and kept in one ``lru.BudgetedLRU`` of entries whose estimated sizes stay
under ``budget`` bytes:

* a package of at most ``COMPLETE_ROWS`` rows is read whole (one short query) and
  kept *complete*: its largest value and every checksum's bounds, so a new
  checksum is known to be new without asking the database.  It stays complete
  while it grows by this connection's writes, up to ``GROWN_ROWS`` checksums;
* a larger package keeps only its largest value, read through
  ``schema.VALUE_INDEX_DDL`` ordered by the value's leading number (only the few
  rows sharing the top number are read; the index holds only rows of numbers from
  ``VALUE_INDEX_FROM`` up, which a package of more than ``COMPLETE_ROWS`` checksums
  has unless its values are children of a smaller number); its checksums are read
  one by one through the primary key and kept as entries of their own.

So the cost of a request does not grow with its package, and memory does not grow
with the database.  Rows other connections commit are detected with ``PRAGMA
data_version`` and read with ``rowid > last seen`` (one cheap pragma per request
when nothing changed, or per event-loop turn with ``recheck_later``); they update
the entries they concern.  Rows are never updated in place, and a writer holds
SQLite's write lock until it commits, so rowids grow in commit order.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from ...log import logger
from ...revision import RevisionKey, optional_key
from ..engine import PackageState
from .lru import BudgetedLRU
from .schema import (checked_identifier, has_value_index, indexed_values, is_indexed, table_exists,
                         value_index_name)

Bounds = Tuple[RevisionKey, RevisionKey]

DEFAULT_BUDGET = 64 * 1024 * 1024
"""Bytes of cache entries kept (the ``cache_size`` setting's default)."""
COMPLETE_ROWS = 256
"""A package of at most this many rows is read whole on first use."""
GROWN_ROWS = 4096
"""A complete package keeps every checksum up to this many; then only its maximum."""
PACKAGE_ENTRY_BYTES = 600
CHECKSUM_ENTRY_BYTES = 600
"""Estimated bytes of an entry besides its strings: key tuple, strings' headers, value
tuples and the LRU's slot (``tests/test_cache.py`` holds these above what Python
allocates)."""
COMPLETE_CHECKSUM_BYTES = 400
"""Estimated bytes of one checksum inside a complete package, besides its string."""
SQLITE_MAX_INTEGER = 2 ** 63 - 1
"""What ``CAST(... AS INTEGER)`` gives for a larger leading number."""

ABSENT = ()
"""A checksum entry for a checksum the package does not hold."""


def _bounds_with(bounds: Union[Bounds, Tuple[()], None], key: RevisionKey) -> Bounds:
    if not bounds:
        return (key, key)
    low, high = bounds
    if key < low:
        return (key, high)
    if key > high:
        return (low, key)
    return bounds  # type: ignore[return-value]


class _Package(PackageState):
    """What is known about one package: whether it has rows, its largest value, and,
    while it is complete, every checksum's bounds and every base's largest child --
    then it answers a request itself, as a ``PackageState``, with nothing to build."""

    __slots__ = ("checksums", "size")

    def __init__(self, size: int) -> None:
        super().__init__()
        self.checksums: Optional[Dict[str, Bounds]] = None
        self.children: Dict[RevisionKey, int] = {}
        self.size = size
        """Estimated bytes, the checksums of a complete package included."""

    def checksum_value(self, checksum: str, history: bool) -> Optional[RevisionKey]:
        bounds = self.checksums.get(checksum)                  # type: ignore[union-attr]
        if bounds is None:
            return None
        return bounds[0] if history else bounds[1]

    def has_value(self, checksum: str, key: RevisionKey) -> bool:
        bounds = self.checksums.get(checksum)                  # type: ignore[union-attr]
        return bounds is not None and key in bounds

    def add(self, checksum: str, key: Optional[RevisionKey]) -> int:
        """Account for a row (``key`` None: a stored value that is not a revision);
        returns the bytes the package's estimate grew by."""
        self.has_rows = True
        if key is None:
            return 0
        if self.max_key is None or key > self.max_key:
            self.max_key = key
        checksums = self.checksums
        if checksums is None:
            return 0
        bounds = checksums.get(checksum)
        grown = 0
        if bounds is None:
            checksums[checksum] = (key, key)
            grown = COMPLETE_CHECKSUM_BYTES + len(checksum)
            self.size += grown
        elif key < bounds[0]:
            checksums[checksum] = (key, bounds[1])
        elif key > bounds[1]:
            checksums[checksum] = (bounds[0], key)
        if key[1:] and self.children.get(key[:-1], -1) < key[-1]:
            self.children[key[:-1]] = key[-1]
        return grown

    def forget_checksums(self, fixed_size: int) -> None:
        """Keep only the maximum from now on (the package grew too large)."""
        self.checksums = None
        self.children = {}
        self.size = fixed_size


class PackageCache:
    """Package and checksum facts of one table, coherent with every connection."""

    def __init__(self, conn: sqlite3.Connection, table: str, budget: int = DEFAULT_BUDGET) -> None:
        self.conn = conn
        self.table = checked_identifier(table)
        self.entries = BudgetedLRU(budget, _entry_bytes)
        """Packages by ``(version, pkgarch)``, checksums of large packages by
        ``(version, pkgarch, checksum)``."""
        self._touched: List[tuple] = []
        self._mark = 0
        self._writing = False
        self.recheck_later: Optional[Callable[[Callable[[], None]], Any]] = None
        """If set, the pragma check is skipped until the callback given to it runs.

        A server passes ``loop.call_soon``: one check per event-loop turn serves
        every request of that turn.  Still linearizable: a turn's requests arrived
        before the check was made (the loop reads sockets before running
        callbacks).  Write transactions always check."""
        self._checked = False
        self.changes = 0
        """Counts what changed this cache's facts other than this connection's own
        inserts: rows of other connections applied, entries cleared or forgotten.  A
        write scope compares it across its BEGIN to tell whether a state read just
        before still holds (``engine._WriteScope``)."""
        self.exists = table_exists(conn, table)
        self.indexed = self.exists and has_value_index(conn, self.table)
        """Whether a large package's maximum is read through ``VALUE_INDEX_DDL`` (else by a
        scan of the package, on a read-only file nobody indexed yet)."""
        self._data_version = self._read_data_version()
        self.watermark = self._max_rowid()
        """The largest rowid this cache has accounted for."""

    # ------------------------------------------------------------------ coherence
    def _read_data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def _max_rowid(self) -> int:
        if not self.exists:
            return 0
        row = self.conn.execute("SELECT max(rowid) FROM %s" % self.table).fetchone()
        return row[0] or 0

    def sync(self) -> None:
        """Apply rows other connections committed since the last look (if any)."""
        if self._checked:
            return
        if self.recheck_later is not None:
            self._checked = True
            self.recheck_later(self._expire_check)
        self.sync_now()

    def _expire_check(self) -> None:
        self._checked = False

    def sync_now(self) -> None:
        version = self._read_data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self.exists = table_exists(self.conn, self.table)
        self.indexed = self.exists and has_value_index(self.conn, self.table)
        max_rowid = self._max_rowid()
        if max_rowid < self.watermark:
            # Rows were deleted or the table re-created: start afresh.
            self.clear()
            self.watermark = max_rowid
            return
        if max_rowid == self.watermark:
            return
        rows = self.conn.execute(
            "SELECT rowid, version, pkgarch, checksum, value FROM %s WHERE rowid > ?" % self.table,
            (self.watermark,))
        self._apply(rows)

    def _apply(self, rows: Iterable[Tuple[int, str, str, str, Any]]) -> None:
        self.changes += 1
        for rowid, version, pkgarch, checksum, value in rows:
            self._account(version, pkgarch, checksum, _key_of_stored(value, version, pkgarch))
            if rowid > self.watermark:
                self.watermark = rowid

    def _account(self, version: str, pkgarch: str, checksum: str, key: Optional[RevisionKey]) -> None:
        """A row was added: update the entries it concerns (a complete package that
        grew past ``GROWN_ROWS`` keeps only its maximum from now on)."""
        package = self.entries.peek((version, pkgarch))
        if package is not None:
            grown = package.add(checksum, key)
            if package.checksums is not None:
                if grown <= 0 or len(package.checksums) <= GROWN_ROWS:
                    if grown:
                        self.entries.resized(grown)
                    return                      # complete: no checksum entries of its own
                before = package.size - grown
                package.forget_checksums(_package_bytes(version, pkgarch))
                self.entries.resized(package.size - before)
        bounds = self.entries.peek((version, pkgarch, checksum))
        if bounds is not None and key is not None:
            self.entries.replace((version, pkgarch, checksum), _bounds_with(bounds, key))

    def clear(self) -> None:
        self.changes += 1
        self.entries.clear()

    @property
    def size(self) -> int:
        """Estimated bytes of the entries held."""
        return self.entries.size

    # ------------------------------------------------------------------ lookups
    def state(self, version: str, pkgarch: str, checksum: Optional[str] = None,
              children_of: Optional[RevisionKey] = None) -> PackageState:
        """What a decision about the package needs: its largest value, ``checksum``'s
        bounds and the largest child of ``children_of``, if asked for."""
        if not self._checked:                   # sync's own first test, without its call
            self.sync()
        return self.loaded_state(version, pkgarch, checksum, children_of)

    def loaded_state(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                     children_of: Optional[RevisionKey] = None) -> PackageState:
        """``state`` without the coherence check (the caller just made it)."""
        package = self.entries.get((version, pkgarch))
        if package is None:
            package = self._read_package(version, pkgarch)
            self.entries.put((version, pkgarch), package)
        if package.checksums is not None:
            return package                      # complete: it knows every checksum and child
        bounds = self._checksum(version, pkgarch, checksum) or None if checksum is not None else None
        state = PackageState(package.has_rows, package.max_key, checksum, bounds)
        if children_of is not None:
            largest = self._largest_child(version, pkgarch, children_of)
            if largest is not None:
                state.children = {children_of: largest}
        return state

    def largest(self, version: str, pkgarch: str) -> Optional[RevisionKey]:
        """The package's largest value, from its entry if it has one, else read without
        keeping it (a listing must not push out the entries requests use) and without
        reading the package into Python: the rows of its largest leading number only,
        found by one seek of ``VALUE_INDEX_DDL`` for a large package, by SQLite's own
        ``max`` over the package's rows for a small one.  The caller has just made the
        coherence check."""
        package = self.entries.peek((version, pkgarch))
        if package is not None:
            return package.max_key
        parameters = (version, pkgarch, version, pkgarch)
        if self.indexed:
            high = _largest_key(self.conn.execute(
                "SELECT value FROM %s WHERE version = ? AND pkgarch = ? AND %s AND CAST(value AS INTEGER) = "
                "(SELECT max(CAST(value AS INTEGER)) FROM %s WHERE version = ? AND pkgarch = ? AND %s)"
                % (self._by_value(), indexed_values(), self._by_value(), indexed_values()), parameters))
            if high is not None:
                return high
        low = _largest_key(self.conn.execute(
            "SELECT value FROM %s WHERE version = ? AND pkgarch = ? AND CAST(value AS INTEGER) = "
            "(SELECT max(CAST(value AS INTEGER)) FROM %s WHERE version = ? AND pkgarch = ?)"
            % (self.table, self.table), parameters))
        if low is not None:
            return low
        return self._read_package(version, pkgarch).max_key     # no revision leads: read it all

    def _read_package(self, version: str, pkgarch: str) -> _Package:
        package = _Package(_package_bytes(version, pkgarch))
        if not self.exists:
            package.checksums = {}
            return package
        # One query for a small package (nearly all of them, and every package's first
        # value): its rows, or the first COMPLETE_ROWS + 1 of a large one, which are
        # then dropped for its maximum.
        rows = self.conn.execute(
            "SELECT checksum, value FROM %s WHERE version = ? AND pkgarch = ? LIMIT ?" % self.table,
            (version, pkgarch, COMPLETE_ROWS + 1)).fetchall()
        if len(rows) <= COMPLETE_ROWS:
            package.checksums = {}
            for checksum, value in rows:
                package.add(checksum, _key_of_stored(value, version, pkgarch))
            return package
        self._read_maximum(package, version, pkgarch)
        return package

    def _read_maximum(self, package: _Package, version: str, pkgarch: str) -> None:
        """A large package's largest value, from the rows sharing the largest leading
        number (descending through ``VALUE_INDEX_DDL``): values that are not revisions
        are skipped, so a group holding only those passes on to the next.  Only if no
        indexed row holds a revision (a package of many children of a small number,
        or imported low values) is the rest of the package read."""
        rows = self.conn.execute(
            "SELECT CAST(value AS INTEGER), value FROM %s WHERE version = ? AND pkgarch = ? "
            "AND %s ORDER BY CAST(value AS INTEGER) DESC" % (self._by_value(), indexed_values()),
            (version, pkgarch))
        group = None
        for number, value in rows:
            if package.max_key is not None and number != group:
                break                           # the largest valid value is in the group read
            group = number
            package.add("", _key_of_stored(value, version, pkgarch))
        rows.close()
        if package.max_key is not None:
            return
        for (value,) in self.conn.execute(
                "SELECT value FROM %s WHERE version = ? AND pkgarch = ? AND NOT (%s)"
                % (self.table, indexed_values()), (version, pkgarch)):
            package.add("", _key_of_stored(value, version, pkgarch))

    def _checksum(self, version: str, pkgarch: str, checksum: str) -> Union[Bounds, Tuple[()]]:
        """A checksum's bounds in a large package (an entry of its own)."""
        key = (version, pkgarch, checksum)
        bounds = self.entries.get(key)
        if bounds is not None:
            return bounds
        bounds = ABSENT
        for (value,) in self.conn.execute(
                "SELECT value FROM %s WHERE version = ? AND pkgarch = ? AND checksum = ?" % self.table,
                key):
            stored = _key_of_stored(value, version, pkgarch)
            if stored is not None:
                bounds = _bounds_with(bounds, stored)
        self.entries.put(key, bounds)
        return bounds

    def _largest_child(self, version: str, pkgarch: str, base: RevisionKey) -> Optional[int]:
        """The largest N such that ``base.N`` is a value of a large package (only values
        with exactly one more field count), from the rows sharing base's leading number."""
        largest = None
        number = min(base[0], SQLITE_MAX_INTEGER)
        if is_indexed(number):                  # the same rows, read through the index
            sql = ("SELECT value FROM %s WHERE version = ? AND pkgarch = ? "
                   "AND CAST(value AS INTEGER) = ? AND %s" % (self._by_value(), indexed_values()))
        else:
            sql = ("SELECT value FROM %s WHERE version = ? AND pkgarch = ? "
                   "AND CAST(value AS INTEGER) = ?" % self.table)
        rows = self.conn.execute(sql, (version, pkgarch, number))
        for (value,) in rows:
            key = optional_key(value)
            if key is not None and len(key) == len(base) + 1 and key[:-1] == base:
                if largest is None or key[-1] > largest:
                    largest = key[-1]
        return largest

    def _by_value(self) -> str:
        """The table, read through ``VALUE_INDEX_DDL`` if it exists."""
        if self.indexed:
            return "%s INDEXED BY %s" % (self.table, value_index_name(self.table))
        return self.table

    # ------------------------------------------------------------------ writes (inside a transaction)
    def stored(self, version: str, pkgarch: str, checksum: str, key: RevisionKey, rowid: int) -> None:
        """Account for a row this connection just inserted."""
        self.exists = True
        if rowid > self.watermark:
            self.watermark = rowid
        self._account(version, pkgarch, checksum, key)
        self._touched.append((version, pkgarch, checksum))
        entries = self.entries
        if entries.size > entries.budget:       # trim's own test, without its call
            entries.trim()

    def begin(self) -> None:
        """A write transaction has started (under the write lock): read what others
        committed, and remember where this transaction's own rows will begin."""
        self.sync_now()
        self._mark = self.watermark
        self._writing = True

    def committed(self) -> None:
        self._touched = []
        self._writing = False

    def rolled_back(self) -> None:
        """Forget what the transaction wrote (read from the file again when next asked)."""
        self.changes += 1
        for key in self._touched:                   # (version, pkgarch, checksum)
            self.entries.pop(key[:2])
            self.entries.pop(key)
        self.watermark = self._mark
        self._touched = []
        self._writing = False

    @property
    def committed_watermark(self) -> int:
        """The largest rowid known committed: rows above it, if any, belong to this
        connection's open transaction."""
        return self._mark if self._writing else self.watermark


def _largest_key(values: Iterable[Tuple[Any, ...]]) -> Optional[RevisionKey]:
    """The largest of ``values`` (rows of one column) that is a revision, if any."""
    keys = [key for key in (optional_key(value) for (value,) in values) if key is not None]
    return max(keys) if keys else None


def _package_bytes(version: str, pkgarch: str) -> int:
    return PACKAGE_ENTRY_BYTES + len(version) + len(pkgarch)


def _entry_bytes(key: tuple, entry: Any) -> int:
    """Estimated bytes of an entry: a package counts its own (it grows while complete);
    a checksum's bounds, ``CHECKSUM_ENTRY_BYTES`` and its key's strings."""
    if len(key) == 2:
        return entry.size
    return CHECKSUM_ENTRY_BYTES + sum(len(part) for part in key)


def _key_of_stored(value: object, version: str, pkgarch: str) -> Optional[RevisionKey]:
    key = optional_key(value)  # type: ignore[arg-type]
    if key is None:
        logger.warning("Skipping stored value %r of %s/%s: not a revision", value, version, pkgarch)
    return key
