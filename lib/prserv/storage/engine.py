"""The storage interface: what the server asks of a database, whichever engine holds it.

A database holds bitbake's rows ``(version, pkgarch, checksum, value)``; a package
is one ``(version, pkgarch)``.  An engine (``prserv.storage.sqlite`` today) keeps
these promises, which the rest of the package relies on:

* **Coroutines that need not wait.**  Every method that may touch the database is a
  coroutine, because a networked engine has to wait for its server.  An engine
  whose work never waits (SQLite reads a local file in the calling thread) finishes
  them without suspending, so a request that only reads is answered in one step,
  without a task (``prserv.asyncrpc.eager``).
* **Plain calls where nothing waits.**  An engine that never waits also offers
  ``immediate`` (an ``ImmediateEngine``): ``package`` and ``write`` as plain calls.
  The allocator decides a request with them without creating a coroutine per step
  -- on SQLite, most of a get-pr's cost beside the wire is that bookkeeping.
* **Current state, as far as asked.**  ``package()`` gives what a decision needs
  (the package's largest value, one checksum's bounds, one base's largest child)
  with every row any process committed, plus this engine's own writes not yet
  committed; never the whole package, so a request costs the same in a package
  of any size.
* **A per-package write scope** (``write()``), atomic across every process using
  the database: inside it the caller re-reads the state, decides, and stores.  The
  engine decides when writes reach the disk (group commit, sync modes) and says
  what an answer given now must wait for (``answer_gate()``).
* **The allocator decides; storage stores.**  The allocation rules live in
  ``prserv.policy`` and are applied by ``prserv.server.allocator``; an engine reports
  state and stores what it is told, with one exception: when the allocator has
  decided that a checksum gets the package's next value, ``store_next`` stores
  ``revision.next_key`` of the largest value *as it is under the write lock* (so
  writers of new checksums on several servers never decide again).  The rule is
  ``revision.next_key``'s, written once (and once in SQL, held to it by a test).
* **A record of when each value was given.**  Every row a write scope stores is
  recorded, in the same transaction, with the time it was stored and the scope's
  ``Giver``: a value is never acknowledged without its record, and a record never
  outlives a rolled-back value.  ``history``, ``packages`` and ``recent`` read it;
  ``forget_clients`` erases the addresses and users of old records (times stay).
  Rows stored before (or by bitbake's server) have none: their time is unknown.
* **A change feed.**  ``changes()`` gives committed rows after an opaque position
  token, in a stable order, each with its position (and, when asked, the time its
  record says it was given: never the address or user), and names the history they
  belong to (an identity); ``wait_for_changes()`` returns once something was
  committed past a position.  Only the engine knows what a position is (a rowid
  for SQLite): callers store and return it unread.  A database that is a mirror of
  another serves its origin's identity and positions.
* **Read-only** is a property of the *session* (the server decides per request
  whether a value may be stored); an engine opened read-only refuses every write
  with ``ReadOnlyError``.

Errors: ``DatabaseError`` for anything the database reports; ``ReadOnlyError``.
"""

from __future__ import annotations

import abc
import types
from typing import (Any, AsyncContextManager, AsyncIterator, ContextManager, Dict, Iterable, Iterator, List,
                    Mapping, NamedTuple, Optional, Sequence, Tuple)

from ..revision import RevisionKey, next_key, optional_key
from ..asyncrpc.stats import Durations
from ..tokens import UserRecord

Position = str
"""An opaque place in the change feed, chosen by the engine."""


Row = Tuple[str, str, str, Optional[str]]
"""One row: (version, pkgarch, checksum, value).  A plain tuple, as the database
returns it: an export of millions of rows builds nothing more per row."""

PositionedRow = Tuple[Position, str, str, str, Optional[str]]
"""One row of the change feed: (position, version, pkgarch, checksum, value)."""

TimedRow = Tuple[Position, str, str, str, Optional[str], Optional[int]]
"""One row of the change feed with when it was given: (position, version, pkgarch,
checksum, value, time in microseconds since the epoch or None if unknown).  The time
only: a row's address and user never leave the database that recorded them (a public
mirror must not publish internal host names)."""


PackageSummary = Tuple[str, str, Optional[str], Optional[int]]
"""One package as a listing shows it: (version, pkgarch, its largest value, when that
value was first given, in microseconds since the epoch, None if unknown)."""


class Giver(NamedTuple):
    """Whom a value is given to, as the record of when each value was given keeps it:
    the client's address (the real one behind a trusted proxy) and the user it proved.
    None where not known or not recorded (``record_clients`` off, an import)."""
    address: Optional[str] = None
    user: Optional[str] = None


NOBODY = Giver()
"""A value stored for no client the record names (import-one, a copy)."""

Given = Tuple[Optional[int], Optional[str], Optional[str]]
"""A row's record: (when it was given, in microseconds since the epoch (UTC), the
address, the user); None where unknown -- rows stored before the record existed, or by
another server (bitbake's), have no record at all."""

HistoryRow = Tuple[str, Optional[str], Optional[int], Optional[str], Optional[str]]
"""One row of a package with its record: (checksum, value, time, address, user)."""

RecentRow = Tuple[Position, str, str, str, Optional[str], Optional[int], Optional[str], Optional[str]]
"""One row of ``Engine.recent``: (position, version, pkgarch, checksum, value, time,
address, user)."""


def prefix_end(prefix: str) -> Optional[str]:
    """The least string after every string that starts with ``prefix``, in code
    point order (which is UTF-8's byte order): ``prefix`` with its last character
    made the next one.  None when no string is after them all (an empty prefix, or
    one of U+10FFFF only).  ``version >= prefix AND version < prefix_end(prefix)``
    is a literal prefix match an index can serve."""
    text = prefix
    while text:
        last = ord(text[-1])
        if last < 0x10FFFF:
            following = last + 1 if last + 1 != 0xD800 else 0xE000     # past the surrogates
            return text[:-1] + chr(following)
        text = text[:-1]
    return None


class FeedPage(NamedTuple):
    """One answer of the change feed (``Engine.changes``)."""
    identity: Optional[str]
    """The history the rows belong to (None: an empty database nobody named yet)."""
    origin: bool
    """This database is the history's origin (False: a mirror of it, which may be behind)."""
    complete: bool
    """The database holds its whole history (False: a mirror before its first copy)."""
    reached: bool
    """The feed has reached the position asked after (always for the beginning)."""
    at: Optional[Row]
    """The row at that position, if it still exists."""
    rows: List[Any]
    """``PositionedRow``s, or ``TimedRow``s when asked for times."""
    pending: Optional[int]
    """Rows after these, when counted."""


class MirrorState(NamedTuple):
    """Where a mirror's copy stands."""
    identity: Optional[str]
    position: Optional[Position]
    complete: bool
    at: Optional[Row]
    """The row at ``position``."""


_NO_CHILDREN: Mapping[RevisionKey, int] = types.MappingProxyType({})


class PackageState:
    """What a decision about one package (version, pkgarch) needs, as far as one
    request asks: whether it has rows, its largest value, the bounds of the
    checksum asked about, and the largest child of the base asked about.  Never
    the whole package: a request costs the same in a package of any size.

    An engine may return a richer object with the same methods (one that knows
    every checksum of a small package); callers only read it."""

    __slots__ = ("has_rows", "max_key", "checksum", "bounds", "children")

    def __init__(self, has_rows: bool = False, max_key: Optional[RevisionKey] = None,
                 checksum: Optional[str] = None,
                 bounds: Optional[Tuple[RevisionKey, RevisionKey]] = None) -> None:
        self.has_rows = has_rows
        self.max_key = max_key
        self.checksum = checksum
        """The checksum asked about."""
        self.bounds = bounds
        """Its (smallest value, largest value), None if it has no value."""
        self.children: Mapping[RevisionKey, int] = _NO_CHILDREN
        """base asked about -> largest N such that base.N is a value, if any"""

    def checksum_value(self, checksum: str, history: bool) -> Optional[RevisionKey]:
        """The checksum's smallest value (history) or largest (no history), or None."""
        if checksum != self.checksum or self.bounds is None:
            return None
        return self.bounds[0] if history else self.bounds[1]

    def has_value(self, checksum: str, key: RevisionKey) -> bool:
        """Whether (checksum, key) is certainly stored (answers only min/max)."""
        return checksum == self.checksum and self.bounds is not None and key in self.bounds


class WriteConflict(Exception):
    """``WriteScope.store`` of a scope that trusted a state read before it: the package
    changed since, nothing was stored.  ``state`` is the package as it is now; the
    caller decides again.  (Not an error anyone sees: the allocator retries.)"""

    def __init__(self, state: PackageState) -> None:
        super().__init__("the package changed")
        self.state = state


class WriteInterrupted(Exception):
    """A write lost its database connection before its commit was confirmed: whether
    the row was stored is unknown.  ``state``: the package as it is now, when the
    engine knows it (else the caller reads it).  A value the checksum gained since
    the decision was read is then the checksum's answer -- the lost write stored it,
    or another request for the same checksum did meanwhile -- and deciding afresh
    would give the checksum a second value.  (Not an error anyone sees: the
    allocator handles it.)"""

    def __init__(self, state: Optional[PackageState] = None) -> None:
        super().__init__("the write's outcome is unknown")
        self.state = state


class WriteScope(abc.ABC):
    """Inside ``Engine.write``: the package's state read under the write lock (or the
    caller's ``known`` state, which ``store`` then checks)."""

    state: PackageState

    @abc.abstractmethod
    async def store(self, checksum: str, key: RevisionKey) -> bool:
        """Store (checksum, value) unless that row exists; True if a row was added.
        ``WriteConflict`` if the scope trusted ``known`` and the package changed."""

    async def store_next(self, checksum: str) -> RevisionKey:
        """Store ``checksum`` with the successor of the package's largest value as it
        is when stored (its last field plus one; 0 in an empty package), like a
        sequence: the caller decided that the next value is due, storage finds which
        number that is.  Returns it.  ``WriteConflict`` if the scope trusted ``known``
        and the checksum's own values changed (then the decision may change)."""
        key = next_key(self.state.max_key)      # read under the lock here
        await self.store(checksum, key)
        return key


class ImmediateWriteScope(abc.ABC):
    """``WriteScope`` as plain calls, inside ``with engine.immediate.write_now(...)``."""

    state: PackageState
    unchanged: bool
    """``state`` is the caller's ``known`` state: nothing changed it while the write
    lock was taken, so a decision made from it stands."""

    @abc.abstractmethod
    def store_now(self, checksum: str, key: RevisionKey) -> bool:
        """``WriteScope.store``, without waiting."""

    def store_next_now(self, checksum: str) -> RevisionKey:
        """``WriteScope.store_next``, without waiting."""
        key = next_key(self.state.max_key)      # read under the lock here
        self.store_now(checksum, key)
        return key


class ImmediateEngine(abc.ABC):
    """What an engine that never waits (it works in the calling thread) offers besides
    its coroutines: the same reads and writes, with the same meaning and errors, as
    plain calls."""

    @abc.abstractmethod
    def package_now(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                    children_of: Optional[RevisionKey] = None) -> PackageState:
        """``Engine.package``, without waiting."""

    @abc.abstractmethod
    def write_now(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                  known: Optional[PackageState] = None,
                  giver: Giver = NOBODY) -> ContextManager[ImmediateWriteScope]:
        """``Engine.write`` (``with``), without waiting.  ``known``: what ``package_now``
        returned just before, nothing having run in between; the scope keeps it as its
        state (``unchanged``) if taking the lock brought nothing new, else reads again."""


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


class MirrorTarget(abc.ABC):
    """A database a mirror writes: rows copied from a source's feed, stored together
    with the position after them."""

    @abc.abstractmethod
    def mirror_state(self) -> MirrorState:
        """The history followed and the position reached, as committed."""

    @abc.abstractmethod
    def audit_bound(self, after: Optional[Position], rows: int) -> Optional[Position]:
        """The position ``rows`` rows after ``after`` (or the last one held), None if
        nothing follows ``after``."""

    @abc.abstractmethod
    def reset_mirror(self) -> int:
        """Forget the copy (the next follow starts afresh); returns the rows removed."""

    @abc.abstractmethod
    async def apply_changes(self, identity: str, rows: Sequence[Any], complete: bool) -> None:
        """Store ``rows`` (validated by the caller) and the last one's position in one
        transaction; ``complete``: the copy has reached the source's end.  Rows are
        ``PositionedRow``s or ``TimedRow``s: a known time is stored as the row's record
        (no address, no user), in the same transaction.
        ``DivergedError`` / ``SourceError`` (nothing stored) if they cannot follow."""


class Engine(abc.ABC):
    """One table of PR values in one database."""

    read_only: bool
    """Opened read-only: every write raises ``ReadOnlyError``."""
    table_name: str
    commit_durations: Durations
    """How long its commits take (metrics)."""
    immediate: Optional[ImmediateEngine] = None
    """This engine's plain-call face, if it never waits."""

    def wal_bytes(self) -> Optional[int]:
        """The size of the write-ahead log, where the engine has one of its own (metrics)."""
        return None

    @abc.abstractmethod
    async def package(self, version: str, pkgarch: str, checksum: Optional[str] = None,
                      children_of: Optional[RevisionKey] = None) -> PackageState:
        """The package's current state: its largest value, and ``checksum``'s bounds
        and ``children_of``'s largest child when asked for."""

    @abc.abstractmethod
    def write(self, version: str, pkgarch: str, checksum: Optional[str] = None,
              children_of: Optional[RevisionKey] = None,
              known: Optional[PackageState] = None, giver: Giver = NOBODY) -> AsyncContextManager[WriteScope]:
        """The package's write scope (``async with``), atomic across processes; its
        ``state`` is ``package(...)`` read again under the write lock.  Each row it
        stores is recorded as given now to ``giver``.  ``known``: the
        state the caller has just read with the same arguments; an engine whose lock
        costs round trips may take it as the scope's state and check it when storing
        (``WriteConflict``), so that a write is one round trip when nothing changed.
        A scope whose connection is lost before its commit is confirmed raises
        ``WriteInterrupted``: the caller reads and decides again."""

    @abc.abstractmethod
    async def packages(self, prefix: str, pkgarch: Optional[str], after: Optional[Tuple[str, str]],
                       limit: int) -> List[PackageSummary]:
        """Up to ``limit`` packages after ``after`` in (version, pkgarch) byte order,
        those whose version starts with ``prefix`` (literally) and, if given, of
        ``pkgarch``; each with its largest value.  Each package costs an index seek
        (and its largest value a bounded read): a page reads what it shows."""

    @abc.abstractmethod
    async def history(self, version: str, pkgarch: str) -> List[HistoryRow]:
        """Every row of the package with its record (None where a row has none), in no
        particular order."""

    @abc.abstractmethod
    async def recent(self, since: Optional[int], after: Optional[Position], limit: int) -> List[RecentRow]:
        """Up to ``limit`` rows newest first (the change feed's order, backwards), those
        before position ``after`` when given; with ``since`` (microseconds since the
        epoch) only rows recorded as given at or after it.  Reads what it returns: the
        rows by position, from the first row given since then."""

    async def values_stored(self) -> Optional[int]:
        """How many values the table holds, from what the engine keeps counted (never a
        count of the table); None where it keeps no such figure."""
        return None

    async def packages_stored(self) -> Optional[int]:
        """How many packages the table holds, where the engine keeps that figure (or
        takes it a small step at a time: None until it has it)."""
        return None

    @abc.abstractmethod
    async def given_since(self, since: int) -> Optional[int]:
        """How many rows were given at or after ``since`` (a range of the record, not a
        table scan), None where the database has no record (a read-only open of a file
        no server of this version wrote)."""

    @abc.abstractmethod
    async def forget_clients(self, before: int) -> int:
        """Erase the address and user of every record older than ``before``
        (microseconds since the epoch); their times stay.  Returns how many records
        changed."""

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
    async def add_rows(self, rows: Sequence[Row]) -> int:
        """Store rows as they are (values already checked), skipping those held already,
        in one transaction; returns how many were added.  For copying a database."""

    @abc.abstractmethod
    async def add_rows_given(self, rows: Sequence[Row], given: Sequence[Optional[Given]]) -> int:
        """``add_rows``, keeping each row's record: ``given[i]`` (None, or a time of None:
        no record) becomes the record of ``rows[i]`` unless the row has one here already,
        in the same transaction.  For a copy that keeps the record."""

    @abc.abstractmethod
    async def records_of(self, rows: Sequence[Row]) -> List[Optional[Given]]:
        """The record of each of ``rows`` (None where it has none, or the row is not
        held), for a copy that keeps the record."""

    @abc.abstractmethod
    async def column_info(self) -> List[Dict[str, Any]]:
        """The table's columns (name, type, notnull, dflt_value, pk), for exports."""

    @abc.abstractmethod
    async def changes(self, since: Optional[Position], limit: int, count: bool = False,
                      given: bool = False) -> FeedPage:
        """Up to ``limit`` committed rows after ``since`` (None: the beginning), in a
        stable order, each with its position; ``count``: also count the rest;
        ``given``: each row a ``TimedRow``, with the time its record says it was given
        (None: unknown).
        ``InvalidRequestError`` for a position this engine cannot have made."""

    @abc.abstractmethod
    async def wait_for_changes(self, position: Optional[Position], timeout: float) -> bool:
        """Return True once rows are committed past ``position`` (or, where it is not
        held yet, past what is committed now); False after ``timeout`` seconds."""

    @abc.abstractmethod
    async def rows_between(self, after: Optional[Position], until: Position) -> Optional[List[PositionedRow]]:
        """The feed's rows after ``after`` up to ``until`` (an audit compares them),
        None if the feed has not reached either."""

    @abc.abstractmethod
    def answer_gate(self) -> Any:
        """What an answer given now must wait for (the commit of what it reports:
        an object with ``done``, ``exception`` and ``add_done_callback``), or None."""

    @abc.abstractmethod
    def open_dump(self) -> DumpSource:
        """A consistent snapshot of the whole database as SQL text."""

    # -- users (``prserv.tokens``), kept beside the PR table, never in dumps or feeds
    @abc.abstractmethod
    async def get_user(self, username: str) -> Optional[UserRecord]:
        """The user, or None (also when nobody ever added a user)."""

    @abc.abstractmethod
    async def list_users(self) -> List[UserRecord]:
        """Every user, by name."""

    @abc.abstractmethod
    async def put_user(self, record: UserRecord) -> None:
        """Add the user, or replace the one of that name; durable when this returns."""

    @abc.abstractmethod
    async def remove_user(self, username: str) -> bool:
        """False if there was no such user."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Commit whatever is buffered (before a shutdown)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the database."""


class RowDigest:
    """The count and a digest of rows that is the same whatever their order: the sum
    of each row's SHA-256 (first 16 bytes, fields joined by NUL) modulo 2**128."""

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0

    def add(self, row: Sequence[Optional[str]]) -> None:
        import hashlib

        text = "\0".join("" if part is None else str(part) for part in row)
        self._sum += int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16], "big")
        self.count += 1

    @property
    def hexdigest(self) -> str:
        return "%032x" % (self._sum % (1 << 128))


def feed_digest(rows: Iterable[Sequence[Optional[str]]]) -> Tuple[int, str]:
    """(count, digest) of feed rows (position included), as ``mirror-audit`` answers."""
    digest = RowDigest()
    for row in rows:
        digest.add(row)
    return digest.count, digest.hexdigest


def package_max_rows(rows: Iterable[Row]) -> Iterator[Row]:
    """Rows holding their package's max value (rows sorted by version, pkgarch).

    One pass, keeping only the rows of the largest value seen so far in the
    current package: memory does not grow with the package's size.
    """
    package: Optional[Tuple[str, str]] = None
    top: Optional[RevisionKey] = None
    best: List[Row] = []
    for row in rows:
        if row[:2] != package:
            yield from best
            package, top, best = row[:2], None, []
        key = optional_key(row[3])
        if key is None:
            continue
        if top is None or key > top:
            top, best = key, [row]
        elif key == top:
            best.append(row)
    yield from best
