"""get-pr orchestration: local table, optional upstream, atomic per package.

Without an upstream an allocation never awaits, so it is atomic in this event loop,
and ``PRTable.get_value`` makes it atomic across processes (write transaction).

With an upstream (semantics.md §7) the decision needs network round trips.  The
reference awaits them between reading and writing its table (defect D9).  Here:

1. requests for one package queue on a per-package lock held across the whole
   decision, so this process never interleaves two of them;
2. upstream questions are asked *before* the write transaction, never inside it
   (a SQLite write lock held across a network wait would stall every writer);
3. inside the transaction the local state is read again and the decision re-made
   from it; if it now needs an upstream fact not yet asked (another process
   wrote meanwhile), the transaction ends without writing and the fact is fetched.
"""

from __future__ import annotations

import asyncio
from typing import Dict, Optional, Tuple

from . import logger
from .db import PackageState, PRTable
from .errors import PRServiceError, UpstreamError
from .policy import (UPSTREAM_CHECKSUM, UPSTREAM_HAS_PACKAGE, UPSTREAM_MAX, UPSTREAM_MAX_AGAIN,
                     Facts, Need, chained_value, degraded_value)
from .revision import RevisionKey, key_to_revision
from .upstream import Upstream

MAX_DECISION_ROUNDS = 16


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


class Allocator:
    """Answers get-pr for one table, with or without an upstream server."""

    def __init__(self, table: PRTable, upstream: Optional[Upstream] = None) -> None:
        self.table = table
        self.upstream = upstream
        self._locks = PackageLocks()

    async def get_pr(self, version: str, pkgarch: str, checksum: str, history: bool) -> str:
        if self.upstream is None:
            return self.table.get_value(version, pkgarch, checksum, history)
        async with self._locks((version, pkgarch)):
            key = await self._chained(version, pkgarch, checksum, history)
        return key_to_revision(key)

    def _decide(self, state: PackageState, checksum: str, history: bool, facts: Facts):
        return chained_value(state.checksum_value(checksum, history), state.max_key,
                             state.children, history, facts)

    async def _chained(self, version: str, pkgarch: str, checksum: str, history: bool) -> RevisionKey:
        facts: Facts = {}
        for _ in range(MAX_DECISION_ROUNDS):
            state = self.table.package_state(version, pkgarch)
            decision = self._decide(state, checksum, history, facts)
            while isinstance(decision, Need):
                try:
                    facts[decision.fact] = await self._ask(decision.fact, version, pkgarch, checksum)
                except UpstreamError as error:
                    return self._degraded(version, pkgarch, checksum, history, error)
                state = self.table.package_state(version, pkgarch)
                decision = self._decide(state, checksum, history, facts)
            if self.table.read_only or state.has_value(checksum, decision):
                return decision
            with self.table.transaction():
                state = self.table.package_state(version, pkgarch)  # re-read under the write lock
                decision = self._decide(state, checksum, history, facts)
                if isinstance(decision, Need):
                    continue                    # someone else wrote: ask what is missing
                if not state.has_value(checksum, decision):
                    self.table.store_key(version, pkgarch, checksum, decision)
            return decision
        raise PRServiceError("get-pr for %s/%s did not settle after %d rounds"
                             % (version, pkgarch, MAX_DECISION_ROUNDS))

    async def _ask(self, fact: str, version: str, pkgarch: str, checksum: str) -> object:
        if fact in (UPSTREAM_MAX, UPSTREAM_MAX_AGAIN):
            return await self.upstream.max_package_pr(version, pkgarch)
        if fact == UPSTREAM_HAS_PACKAGE:
            return await self.upstream.test_package(version, pkgarch)
        if fact == UPSTREAM_CHECKSUM:
            return await self.upstream.test_pr(version, pkgarch, checksum)
        raise AssertionError("unknown upstream fact %r" % fact)

    def _degraded(self, version: str, pkgarch: str, checksum: str, history: bool,
                  error: UpstreamError) -> RevisionKey:
        """Answer a locally known checksum from local state alone; else raise ``error``."""
        state = self.table.package_state(version, pkgarch)
        local = state.checksum_value(checksum, history)
        if local is None:
            raise error
        key = degraded_value(local, state.max_key, history)
        if not self.table.read_only and not state.has_value(checksum, key):
            with self.table.transaction():
                # Rows are never removed, so the checksum is still known here.
                state = self.table.package_state(version, pkgarch)
                key = degraded_value(state.checksum_value(checksum, history), state.max_key, history)
                self.table.store_key(version, pkgarch, checksum, key)
        logger.warning("Degraded: upstream %s unavailable, answered %s/%s/%s from local state: %s",
                       self.upstream.address, version, pkgarch, checksum, key_to_revision(key))
        return key

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
