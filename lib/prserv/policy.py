"""The PR decision procedure of semantics.md as pure functions (no I/O, no locks).

Values arrive and leave as revision keys (tuples of ints, see ``prserv.revision``);
``None`` means "absent".  The database layer and the allocator call these while
holding whatever makes the decision atomic.
"""

from __future__ import annotations

from typing import Optional

from .revision import RevisionKey


def increase(key: RevisionKey) -> RevisionKey:
    """``increase(v)``: add one to the last field."""
    return key[:-1] + (key[-1] + 1,)


def local_value(package_max: Optional[RevisionKey], checksum_value: Optional[RevisionKey],
                history: bool) -> RevisionKey:
    """get-pr without upstream (semantics.md §3).

    ``checksum_value`` is the checksum's min (history) or max (no history) value.
    """
    if package_max is None:
        return (0,)
    if checksum_value is None:
        return increase(package_max)
    if history:
        return checksum_value
    if checksum_value < package_max:
        return increase(package_max)
    return checksum_value


def next_child(base: RevisionKey, largest_child: Optional[int]) -> RevisionKey:
    """``child(base)``: ``base.(N+1)`` for the largest existing ``base.N``, else ``base.0``."""
    return base + ((0 if largest_child is None else largest_child + 1),)


def known_checksum_value(local: RevisionKey, local_max: RevisionKey, history: bool,
                         upstream_max: Optional[RevisionKey],
                         upstream_has_checksum: Optional[bool]) -> Optional[RevisionKey]:
    """get-pr with an upstream, checksum known locally (semantics.md §7 step 3).

    Returns None when the answer needs ``upstream_has_checksum`` (U.test-pr) and it
    was not supplied yet.
    """
    if history:
        return local
    value = local
    if value < local_max:
        value = increase(local_max)
    if upstream_max is not None and value < upstream_max:
        if upstream_has_checksum is None:
            return None
        value = upstream_max if upstream_has_checksum else upstream_max + (0,)
    return value


def needs_upstream_checksum_test(local: RevisionKey, local_max: RevisionKey, history: bool,
                                 upstream_max: Optional[RevisionKey]) -> bool:
    """Whether §7 step 3 has to ask U.test-pr for this checksum."""
    return known_checksum_value(local, local_max, history, upstream_max, None) is None
