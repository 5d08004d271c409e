"""The SQLite cache's byte-budgeted LRU (prserv.storage.sqlite.lru): the least recently
used entries leave first once the estimated bytes pass the budget, and the count of
bytes follows every way an entry comes, grows and goes."""

from __future__ import annotations

from prserv.storage.sqlite.lru import BudgetedLRU


def sized(budget: int) -> BudgetedLRU:
    """Entries whose bytes are their value (a list, so that one can grow in place)."""
    return BudgetedLRU(budget, lambda key, entry: entry[0])


def test_the_least_recently_used_leave_first_once_over_budget():
    lru = sized(30)
    for key in "abc":
        lru.put(key, [10])
    assert lru.get("a") == [10]                 # now the most recently used
    assert lru.peek("b") == [10]                # peeking leaves the order alone
    lru.put("d", [10])
    assert [key for key, _ in lru.items()] == ["c", "a", "d"]
    assert lru.size == 30


def test_the_newest_entry_stays_whatever_its_size():
    lru = sized(10)
    lru.put("a", [5])
    lru.put("big", [50])
    assert [key for key, _ in lru.items()] == ["big"] and lru.size == 50


def test_growth_in_place_is_counted_and_trimmed_on_demand():
    lru = sized(25)
    lru.put("a", [10])
    lru.put("b", [10])
    entry = lru.peek("b")
    entry[0] += 10
    lru.resized(10)
    assert lru.size == 30 and len(lru) == 2     # nothing evicted until asked
    lru.trim()
    assert [key for key, _ in lru.items()] == ["b"] and lru.size == 20


def test_pop_replace_and_clear_keep_the_count():
    lru = sized(100)
    lru.put("a", [10])
    lru.put("b", [20])
    lru.replace("a", [10])
    assert [key for key, _ in lru.items()] == ["a", "b"]
    assert lru.pop("a") == [10] and lru.pop("a") is None and lru.size == 20
    lru.clear()
    assert len(lru) == 0 and lru.size == 0
