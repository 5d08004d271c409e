"""The package cache of one PR table: lookups without scanning history per request.

Each package touched is loaded once through the primary-key index into a
``PackageState`` (largest value, each checksum's smallest and largest, largest
child per base), updated on every write made on this connection, and brought up to
date with rows other connections committed: those are detected with
``PRAGMA data_version`` and read with ``rowid > last seen``, which costs one cheap
pragma per request when nothing changed (or per event-loop turn, with
``recheck_later``).  Rows are never updated in place, and a writer holds SQLite's
write lock until it commits, so rowids grow in commit order.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any, Callable, List, Optional, Tuple

from ...log import logger
from ...revision import RevisionKey, optional_key
from ..engine import PackageState
from .connection import checked_identifier, table_exists

PackageId = Tuple[str, str]

DEFAULT_CACHED_PACKAGES = 20000


class PackageCache:
    """``PackageState`` per package of one table, coherent with every connection."""

    def __init__(self, conn: sqlite3.Connection, table: str,
                 cached_packages: int = DEFAULT_CACHED_PACKAGES) -> None:
        self.conn = conn
        self.table = checked_identifier(table)
        self.cached_packages = cached_packages
        self._packages: "collections.OrderedDict[PackageId, PackageState]" = collections.OrderedDict()
        self._touched: List[PackageId] = []
        self._mark = 0
        self._writing = False
        self.recheck_later: Optional[Callable[[Callable[[], None]], Any]] = None
        """If set, the pragma check is skipped until the callback given to it runs.

        A server passes ``loop.call_soon``: one check per event-loop turn serves
        every request of that turn.  Still linearizable: a turn's requests arrived
        before the check was made (the loop reads sockets before running
        callbacks).  Write transactions always check."""
        self._checked = False
        self.exists = table_exists(conn, table)
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
        max_rowid = self._max_rowid()
        if max_rowid < self.watermark:
            # Rows were deleted or the table re-created: start afresh.
            self._packages.clear()
            self.watermark = max_rowid
            return
        if max_rowid == self.watermark:
            return
        rows = self.conn.execute(
            "SELECT rowid, version, pkgarch, checksum, value FROM %s WHERE rowid > ?" % self.table,
            (self.watermark,))
        for rowid, version, pkgarch, checksum, value in rows:
            state = self._packages.get((version, pkgarch))
            if state is not None:
                state.add(checksum, _key_of_stored(value, version, pkgarch))
            if rowid > self.watermark:
                self.watermark = rowid

    # ------------------------------------------------------------------ lookups
    def state(self, version: str, pkgarch: str) -> PackageState:
        """The package's current state (loaded through the index on first use)."""
        self.sync()
        return self.loaded_state(version, pkgarch)

    def loaded_state(self, version: str, pkgarch: str) -> PackageState:
        """``state`` without the coherence check (the caller just made it)."""
        package = (version, pkgarch)
        state = self._packages.get(package)
        if state is not None:
            self._packages.move_to_end(package)
            return state
        state = PackageState()
        if self.exists:
            rows = self.conn.execute(
                "SELECT checksum, value FROM %s WHERE version = ? AND pkgarch = ?" % self.table,
                (version, pkgarch))
            for checksum, value in rows:
                state.add(checksum, _key_of_stored(value, version, pkgarch))
        self._packages[package] = state
        if len(self._packages) > self.cached_packages:
            self._packages.popitem(last=False)
        return state

    # ------------------------------------------------------------------ writes (inside a transaction)
    def stored(self, version: str, pkgarch: str, checksum: str, key: RevisionKey, rowid: int) -> None:
        """Account for a row this connection just inserted."""
        self.exists = True
        if rowid > self.watermark:
            self.watermark = rowid
        package = (version, pkgarch)
        self._touched.append(package)
        state = self._packages.get(package)
        if state is not None:
            state.add(checksum, key)

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
        """Forget what the transaction wrote (reloaded from the file when next asked)."""
        for package in self._touched:
            self._packages.pop(package, None)
        self.watermark = self._mark
        self._touched = []
        self._writing = False

    @property
    def committed_watermark(self) -> int:
        """The largest rowid known committed: rows above it, if any, belong to this
        connection's open transaction."""
        return self._mark if self._writing else self.watermark


def _key_of_stored(value: object, version: str, pkgarch: str) -> Optional[RevisionKey]:
    key = optional_key(value)  # type: ignore[arg-type]
    if key is None:
        logger.warning("Skipping stored value %r of %s/%s: not a revision", value, version, pkgarch)
    return key
