"""The storage interface: what the server asks of a database, whichever engine holds it.

A database holds bitbake's rows ``(version, pkgarch, checksum, value)``; a package
is one ``(version, pkgarch)``.  An engine (``prserv.storage.sqlite`` today) keeps
these promises, which the rest of the package relies on:

* **Coroutines that need not wait.**  Every method that may touch the database is a
  coroutine, because a networked engine has to wait for its server.  An engine
  whose work never waits (SQLite reads a local file in the calling thread) finishes
  them without suspending, so a request that only reads is answered in one step,
  without a task (``prserv.asyncrpc.eager``).
* **Current state.**  ``package()`` gives the package's state with every row any
  process committed, plus this engine's own writes not yet committed.
* **A per-package write scope** (``write()``), atomic across every process using
  the database: inside it the caller re-reads the state, decides, and stores.  The
  engine decides when writes reach the disk (group commit, sync modes) and says
  what an answer given now must wait for (``answer_gate()``).
* **Storage never decides a value.**  The allocation rules live in
  ``prserv.policy`` and are applied by ``prserv.server.allocator``; an engine only
  reports state and stores what it is told.
* **A change feed.**  ``changes()`` gives committed rows after an opaque position
  token, in a stable order, with the position after them; ``wait_for_changes()``
  returns once something was committed past a position.  Only the engine knows what
  a position is (a rowid for SQLite): callers store and return it unread.
* **Read-only** is a property of the *session* (the server decides per request
  whether a value may be stored); an engine opened read-only refuses every write
  with ``ReadOnlyError``.

Errors: ``DatabaseError`` for anything the database reports; ``ReadOnlyError``.
"""

from __future__ import annotations

import abc
from typing import Any, AsyncContextManager, AsyncIterator, Dict, Iterator, List, Optional, Tuple

from ..revision import RevisionKey

Position = str
"""An opaque place in the change feed, chosen by the engine."""


Row = Tuple[str, str, str, Optional[str]]
"""One row: (version, pkgarch, checksum, value).  A plain tuple, as the database
returns it: an export of millions of rows builds nothing more per row."""


class PackageState:
    """Everything a decision needs about one package (version, pkgarch).

    Built from the package's rows (``add``), kept up to date by the engine: the
    package's largest value, each checksum's smallest and largest value, and for
    each base value the largest N such that ``base.N`` is a value of the package.
    """

    __slots__ = ("has_rows", "max_key", "checksums", "children")

    def __init__(self) -> None:
        self.has_rows = False
        self.max_key: Optional[RevisionKey] = None
        self.checksums: Dict[str, Tuple[RevisionKey, RevisionKey]] = {}
        """checksum -> (smallest value, largest value)"""
        self.children: Dict[RevisionKey, int] = {}
        """base value -> largest N such that base.N is a value of the package"""

    def add(self, checksum: str, key: Optional[RevisionKey]) -> None:
        """Account for one row (``key`` None: a stored value that is not a revision)."""
        self.has_rows = True
        if key is None:
            return
        bounds = self.checksums.get(checksum)
        if bounds is None:
            self.checksums[checksum] = (key, key)
        elif key < bounds[0] or key > bounds[1]:
            self.checksums[checksum] = (min(bounds[0], key), max(bounds[1], key))
        if self.max_key is None or key > self.max_key:
            self.max_key = key
        if len(key) > 1:
            base, last = key[:-1], key[-1]
            if self.children.get(base, -1) < last:
                self.children[base] = last

    def checksum_value(self, checksum: str, history: bool) -> Optional[RevisionKey]:
        """The checksum's smallest value (history) or largest (no history), or None."""
        bounds = self.checksums.get(checksum)
        if bounds is None:
            return None
        return bounds[0] if history else bounds[1]

    def has_value(self, checksum: str, key: RevisionKey) -> bool:
        """Whether (checksum, key) is certainly stored (answers only min/max)."""
        bounds = self.checksums.get(checksum)
        return bounds is not None and key in bounds


class WriteScope(abc.ABC):
    """Inside ``Engine.write``: the package's state read under the write lock."""

    state: PackageState

    @abc.abstractmethod
    async def store(self, checksum: str, key: RevisionKey) -> bool:
        """Store (checksum, value) unless that row exists; True if a row was added."""


class DumpSource(abc.ABC):
    """One consistent snapshot of the database as SQL text, read line by line."""

    description: str
    """What the snapshot is, for the log."""

    @abc.abstractmethod
    def lines(self) -> Iterator[str]:
        """The dump's statements; ``DatabaseError`` if reading fails half-way."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the snapshot (also half-way through ``lines``)."""


class Engine(abc.ABC):
    """One table of PR values in one database."""

    read_only: bool
    """Opened read-only: every write raises ``ReadOnlyError``."""
    table_name: str

    @abc.abstractmethod
    async def package(self, version: str, pkgarch: str) -> PackageState:
        """The package's current state (do not modify it)."""

    @abc.abstractmethod
    def write(self, version: str, pkgarch: str) -> AsyncContextManager[WriteScope]:
        """The package's write scope (``async with``), atomic across processes."""

    @abc.abstractmethod
    async def has_row(self, version: str, pkgarch: str, value: str,
                      checksum: Optional[str] = None) -> bool:
        """Whether the package holds ``value`` (for ``checksum``, when given)."""

    @abc.abstractmethod
    def export_batches(self, version: Optional[str], pkgarch: Optional[str],
                       checksum: Optional[str], history: bool) -> AsyncIterator[List[Row]]:
        """The rows an export gives, ordered by (version, pkgarch, checksum, value
        text), in batches: every row (``history``), else the rows holding their
        package's largest value, that largest value taken over all of the package's
        rows before the checksum filter.  Filters apply when truthy."""

    @abc.abstractmethod
    async def column_info(self) -> List[Dict[str, Any]]:
        """The table's columns (name, type, notnull, dflt_value, pk), for exports."""

    @abc.abstractmethod
    async def changes(self, since: Optional[Position], limit: int) -> Tuple[List[Row], Position]:
        """Up to ``limit`` committed rows after ``since`` (None: the beginning), in a
        stable order, and the position after the last one returned."""

    @abc.abstractmethod
    async def wait_for_changes(self, position: Position, timeout: float) -> bool:
        """Return True once rows are committed past ``position``; False after
        ``timeout`` seconds without any."""

    @abc.abstractmethod
    def answer_gate(self) -> Any:
        """What an answer given now must wait for (the commit of what it reports:
        an object with ``done``, ``exception`` and ``add_done_callback``), or None."""

    @abc.abstractmethod
    def open_dump(self) -> DumpSource:
        """A consistent snapshot of the whole database as SQL text."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Commit whatever is buffered (before a shutdown)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the database."""
