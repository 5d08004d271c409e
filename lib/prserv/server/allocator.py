"""Deciding a get-pr's value: state from storage, the rules of ``prserv.policy``,
an optional upstream, and a write only when the value is new.

The allocator reads the package's state, decides with the pure policy, and asks
storage to store the decision inside the package's write scope -- where it reads
the state again and decides again, so that a row another process committed in
between is taken into account.  Storage decides nothing, except which number is
"the next value" once the allocator has decided a checksum gets it
(``WriteScope.store_next``: ``revision.next_key`` of the maximum under the lock).

Without an upstream nothing waits but storage, and the SQLite engine never
suspends: a request is decided and answered in one step.

With an upstream (docs/semantics.md §7) the decision needs network round trips.
The reference awaits them between reading and writing its table (defect D9).  Here:

1. requests for one package queue on a per-package lock held across the whole
   decision, so this process never interleaves two of them;
2. upstream questions are asked *before* the write scope, never inside it (a
   database write lock held across a network wait would stall every writer);
3. inside the write scope the state is read again and the decision re-made from it;
   if it now needs an upstream fact not yet asked (another process wrote
   meanwhile), the scope ends without writing and the fact is fetched.

A write that lost its database connection (``WriteInterrupted``: a PostgreSQL
failover, say) may or may not have stored its row.  The package is then read as the
database holds it once it is back: a value the checksum gained since the decision
was read is the answer (the lost write stored it, or another request for the
checksum did); otherwise nothing was stored and the value is decided afresh.
Deciding afresh in the first case would, without history, give the checksum a
second value (its first is no longer the package's largest).  Never a second value
for one checksum, never one that went backwards.
"""

from __future__ import annotations

import asyncio
from typing import Dict, Optional, Tuple, Union

from ..errors import PRServiceError, UpstreamError
from ..log import logger
from ..policy import (UPSTREAM_CHECKSUM, UPSTREAM_HAS_PACKAGE, UPSTREAM_MAX, UPSTREAM_MAX_AGAIN,
                      Facts, Need, chained_value, degraded_value, standing_value)
from ..revision import RevisionKey, key_to_revision, next_key, revision_key
from ..storage.engine import NOBODY, Engine, Giver, PackageState, WriteConflict, WriteInterrupted
from .upstream import Upstream

MAX_DECISION_ROUNDS = 16
OPTIMISTIC_ROUNDS = 3
"""Writes that trust the state just read (then check it) before one that locks first."""


class PackageLocks:
    """One ``asyncio.Lock`` per package, dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: Dict[Tuple[str, str], asyncio.Lock] = {}
        self._users: Dict[Tuple[str, str], int] = {}

    def __call__(self, package: Tuple[str, str]) -> "_PackageLock":
        return _PackageLock(self, package)


    def _acquire_entry(self, package: Tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(package)
        if lock is None:
            lock = self._locks[package] = asyncio.Lock()
        self._users[package] = self._users.get(package, 0) + 1
        return lock

    def _release_entry(self, package: Tuple[str, str]) -> None:
        self._users[package] -= 1
        if not self._users[package]:
            del self._users[package]
            del self._locks[package]


class _PackageLock:
    def __init__(self, locks: PackageLocks, package: Tuple[str, str]) -> None:
        self._locks = locks
        self._package = package
        self._lock: Optional[asyncio.Lock] = None

    async def __aenter__(self) -> None:
        self._lock = self._locks._acquire_entry(self._package)
        try:
            await self._lock.acquire()
        except BaseException:
            self._locks._release_entry(self._package)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._locks._release_entry(self._package)


def _child_base(facts: Facts) -> Optional[RevisionKey]:
    """The base whose children a chained decision numbers after (the upstream's
    maximum, asked again), once known."""
    return facts.get(UPSTREAM_MAX_AGAIN)  # type: ignore[return-value]


def _trusted(state: PackageState, attempt: int) -> Optional[PackageState]:
    """The state a write may trust and check when storing (one round trip on an engine
    that can), for the first ``OPTIMISTIC_ROUNDS`` attempts; then None: the write reads
    again under the package's lock, which cannot lose a race."""
    return state if attempt < OPTIMISTIC_ROUNDS else None


def _gained(before: PackageState, after: PackageState, checksum: str, history: bool) -> Optional[RevisionKey]:
    """The checksum's value in ``after`` if it gained one since ``before``: after a
    write whose outcome is unknown, that value is the checksum's answer."""
    if after.checksum != checksum or after.bounds is None:
        return None
    if before.checksum == checksum and before.bounds == after.bounds:
        return None
    return after.checksum_value(checksum, history)


def _standing(state: PackageState, checksum: str, history: bool) -> Optional[RevisionKey]:
    return standing_value(state.max_key, state.checksum_value(checksum, history), history)


class Allocator:
    """Answers get-pr and stores import-one for one engine, with or without an upstream."""

    def __init__(self, engine: Engine, upstream: Optional[Upstream] = None) -> None:
        self.engine = engine
        self.upstream = upstream
        self._locks = PackageLocks()
        self.allocations = 0
        """Values get-pr stored (new checksums; not imports)."""

    def get_pr_now(self, version: str, pkgarch: str, checksum: str, history: bool,
                   store: bool = True, giver: Giver = NOBODY) -> Optional[str]:
        """``get_pr`` decided with plain calls when nothing can wait (no upstream, an
        ``immediate`` engine); None when it has to be awaited."""
        engine = self.engine.immediate
        if engine is None or self.upstream is not None:
            return None
        state = engine.package_now(version, pkgarch, checksum)
        standing = standing_value(state.max_key, state.checksum_value(checksum, history), history)
        if standing is None:
            if not store:
                return key_to_revision(next_key(state.max_key))
            with engine.write_now(version, pkgarch, checksum, known=state, giver=giver) as scope:
                if not scope.unchanged:
                    standing = _standing(scope.state, checksum, history)    # re-read under the lock
                if standing is None:
                    standing = scope.store_next_now(checksum)
                    self.allocations += 1
        return key_to_revision(standing)

    async def get_pr(self, version: str, pkgarch: str, checksum: str, history: bool,
                     store: bool = True, giver: Giver = NOBODY) -> str:
        """The checksum's value; a new one is stored if ``store`` (a read-only session
        gets the value it would have been given, and nothing is written), recorded as
        given to ``giver``."""
        if self.upstream is not None:
            async with self._locks((version, pkgarch)):
                key = await self._chained(version, pkgarch, checksum, history, store, giver)
            return key_to_revision(key)
        state = await self.engine.package(version, pkgarch, checksum)
        standing = standing_value(state.max_key, state.checksum_value(checksum, history), history)
        if standing is not None:
            return key_to_revision(standing)            # the usual case: nothing to write
        if not store:
            return key_to_revision(next_key(state.max_key))
        return key_to_revision(await self._store_next(version, pkgarch, checksum, history, state, giver))

    async def _store_next(self, version: str, pkgarch: str, checksum: str, history: bool,
                          state: PackageState, giver: Giver) -> RevisionKey:
        """Store the next value for a checksum that ``state`` gives none that stands,
        deciding again under the write lock, and again while other writers come first.

        Without an upstream a decision has two outcomes (``standing_value``): the
        checksum's own value, answered as it is, or the package's next value."""
        for attempt in range(MAX_DECISION_ROUNDS):
            decided_from = state
            try:
                async with self.engine.write(version, pkgarch, checksum, known=_trusted(state, attempt),
                                             giver=giver) as scope:
                    decided_from = scope.state
                    standing = _standing(scope.state, checksum, history)    # re-read under the lock
                    if standing is not None:
                        return standing
                    key = await scope.store_next(checksum)      # whichever number is next by then
                    self.allocations += 1
                    return key
            except WriteConflict as conflict:
                state = conflict.state                  # another writer came first: decide again
            except WriteInterrupted as interrupted:
                state, gained = await self._after(interrupted, decided_from, version, pkgarch, checksum, history)
                if gained is not None:
                    return gained                       # the lost write stored it
            standing = _standing(state, checksum, history)
            if standing is not None:
                return standing
        raise PRServiceError("get-pr for %s/%s did not settle after %d rounds"
                             % (version, pkgarch, MAX_DECISION_ROUNDS))

    async def import_one(self, version: str, pkgarch: str, checksum: str, value: str) -> None:
        """Store the row as given (no ordering check); ``value`` is a revision text."""
        key = revision_key(value)
        for _ in range(MAX_DECISION_ROUNDS):
            try:
                async with self.engine.write(version, pkgarch) as scope:      # nothing to decide
                    await scope.store(checksum, key)
                return
            except WriteInterrupted:
                continue                        # storing a row held already changes nothing
        raise PRServiceError("import-one for %s/%s did not settle after %d rounds"
                             % (version, pkgarch, MAX_DECISION_ROUNDS))

    def _decide(self, state: PackageState, checksum: str, history: bool,
                facts: Facts) -> Union[RevisionKey, Need]:
        return chained_value(state.checksum_value(checksum, history), state.max_key,
                             state.children, history, facts)

    async def _chained(self, version: str, pkgarch: str, checksum: str, history: bool,
                       store: bool, giver: Giver) -> RevisionKey:
        facts: Facts = {}
        for attempt in range(MAX_DECISION_ROUNDS):
            state = await self.engine.package(version, pkgarch, checksum, _child_base(facts))
            decision = self._decide(state, checksum, history, facts)
            while isinstance(decision, Need):
                try:
                    facts[decision.fact] = await self._ask(decision.fact, version, pkgarch, checksum)
                except UpstreamError as error:
                    return await self._degraded(version, pkgarch, checksum, history, store, error, giver)
                state = await self.engine.package(version, pkgarch, checksum, _child_base(facts))
                decision = self._decide(state, checksum, history, facts)
            if not store or state.has_value(checksum, decision):
                return decision
            decided_from = state
            try:
                async with self.engine.write(version, pkgarch, checksum, _child_base(facts),
                                             known=_trusted(state, attempt), giver=giver) as scope:
                    decided_from = scope.state
                    decision = self._decide(scope.state, checksum, history, facts)  # under the lock
                    if isinstance(decision, Need):
                        continue                # someone else wrote: ask what is missing
                    if not scope.state.has_value(checksum, decision):
                        if await scope.store(checksum, decision):
                            self.allocations += 1
            except WriteConflict:
                continue                        # someone else wrote: read and decide again
            except WriteInterrupted as interrupted:
                _, gained = await self._after(interrupted, decided_from, version, pkgarch, checksum, history)
                if gained is not None:
                    return gained                       # the lost write stored it
                continue
            return decision
        raise PRServiceError("get-pr for %s/%s did not settle after %d rounds"
                             % (version, pkgarch, MAX_DECISION_ROUNDS))

    async def _ask(self, fact: str, version: str, pkgarch: str, checksum: str) -> object:
        assert self.upstream is not None
        if fact in (UPSTREAM_MAX, UPSTREAM_MAX_AGAIN):
            return await self.upstream.max_package_pr(version, pkgarch)
        if fact == UPSTREAM_HAS_PACKAGE:
            return await self.upstream.test_package(version, pkgarch)
        if fact == UPSTREAM_CHECKSUM:
            return await self.upstream.test_pr(version, pkgarch, checksum)
        raise AssertionError("unknown upstream fact %r" % fact)

    async def _degraded(self, version: str, pkgarch: str, checksum: str, history: bool,
                        store: bool, error: UpstreamError, giver: Giver) -> RevisionKey:
        """Answer a locally known checksum from local state alone; else raise ``error``."""
        state = await self.engine.package(version, pkgarch, checksum)
        local = state.checksum_value(checksum, history)
        if local is None:
            raise error
        key = degraded_value(local, state.max_key, history)
        if store and not state.has_value(checksum, key):
            key = await self._store_degraded(version, pkgarch, checksum, history, giver)
        logger.warning("Degraded: upstream %s unavailable, answered %s/%s/%s from local state: %s",
                       self.upstream.address if self.upstream else "-", version, pkgarch, checksum,
                       key_to_revision(key))
        return key

    async def _store_degraded(self, version: str, pkgarch: str, checksum: str, history: bool,
                              giver: Giver) -> RevisionKey:
        for _ in range(MAX_DECISION_ROUNDS):
            try:
                async with self.engine.write(version, pkgarch, checksum, giver=giver) as scope:
                    # Rows are never removed, so the checksum is still known here.
                    decided_from = scope.state
                    key = degraded_value(decided_from.checksum_value(checksum, history), decided_from.max_key,
                                         history)
                    if await scope.store(checksum, key):
                        self.allocations += 1
                return key
            except WriteInterrupted as interrupted:     # raised after the scope's state was read
                _, gained = await self._after(interrupted, decided_from, version, pkgarch, checksum, history)
                if gained is not None:
                    return gained                       # the lost write stored it
        raise PRServiceError("get-pr for %s/%s did not settle after %d rounds"
                             % (version, pkgarch, MAX_DECISION_ROUNDS))

    async def _after(self, interrupted: WriteInterrupted, decided_from: PackageState, version: str, pkgarch: str,
                     checksum: str, history: bool) -> Tuple[PackageState, Optional[RevisionKey]]:
        """After a write whose outcome is unknown: the package as it is now, and the
        value the checksum gained since ``decided_from`` (its answer), if any."""
        after = interrupted.state or await self.engine.package(version, pkgarch, checksum)
        return after, _gained(decided_from, after, checksum, history)

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
