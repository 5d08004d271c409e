"""A least-recently-used map whose entries' estimated bytes stay under a budget.

A pure data structure (no SQLite): ``cache.PackageCache`` keeps its package and
checksum entries in one.  Each entry's bytes are given by the one ``size_of(key,
entry)`` function the map is made with, when it is added and when it leaves (evicted
or popped); an entry that grows in place reports the difference (``resized``), so
that ``size_of`` then gives what was counted.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Hashable, ItemsView, Optional


class BudgetedLRU:
    """Entries by key, the least recently used first out once their bytes pass
    ``budget`` (the newest entry stays, whatever its size)."""

    __slots__ = ("budget", "size", "size_of", "_entries")

    def __init__(self, budget: int, size_of: Callable[[Any, Any], int]) -> None:
        self.budget = budget
        self.size_of = size_of
        self.size = 0
        """Estimated bytes of the entries held."""
        self._entries: "collections.OrderedDict[Hashable, Any]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> ItemsView:
        return self._entries.items()

    def get(self, key: Hashable) -> Optional[Any]:
        """The entry (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def peek(self, key: Hashable) -> Optional[Any]:
        """The entry, or None, leaving the order as it is."""
        return self._entries.get(key)

    def put(self, key: Hashable, entry: Any) -> None:
        """Add a new entry (the most recently used) and evict what passes the budget."""
        self._entries[key] = entry
        self.size += self.size_of(key, entry)
        self.trim()

    def replace(self, key: Hashable, entry: Any) -> None:
        """Put ``entry`` in the place of the one under ``key``, of the same size."""
        self._entries[key] = entry

    def resized(self, change: int) -> None:
        """An entry grew (or shrank) in place by ``change`` bytes; ``trim`` evicts."""
        self.size += change

    def pop(self, key: Hashable) -> Optional[Any]:
        """Remove the entry under ``key`` (None if there is none)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= self.size_of(key, entry)
        return entry

    def trim(self) -> None:
        """Evict the least recently used entries while the bytes pass the budget."""
        while self.size > self.budget and len(self._entries) > 1:
            key, entry = self._entries.popitem(last=False)
            self.size -= self.size_of(key, entry)

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0
