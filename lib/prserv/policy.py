"""The PR decision procedure of docs/semantics.md as pure functions (no I/O, no locks).

Values are revision keys (tuples of ints, see ``prserv.revision``); ``None`` means
"absent".  The database layer and the allocator call these while holding whatever
makes the decision atomic.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

from .revision import RevisionKey, increased, next_key

# Facts learnt from an upstream server, in the order the reference asks for them.
UPSTREAM_MAX = "max-package-pr"             # Umax: U.max-package-pr(v, a)
UPSTREAM_HAS_PACKAGE = "test-package"       # K: U.test-package(v, a)
UPSTREAM_CHECKSUM = "test-pr"               # Uv: U.test-pr(v, a, c, history=false)
UPSTREAM_MAX_AGAIN = "max-package-pr again"  # Umax2, asked before numbering a child

Facts = Dict[str, object]


class Need:
    """The decision needs one more upstream fact (``Need.fact`` names it)."""

    __slots__ = ("fact",)

    def __init__(self, fact: str) -> None:
        self.fact = fact

    def __repr__(self) -> str:
        return "Need(%r)" % self.fact


def not_below(value: RevisionKey, package_max: RevisionKey) -> RevisionKey:
    """No-history rule: a value below the package max is replaced by ``increase(max)``."""
    return value if value >= package_max else increased(package_max)


def standing_value(package_max: Optional[RevisionKey], checksum_value: Optional[RevisionKey],
                   history: bool) -> Optional[RevisionKey]:
    """get-pr without upstream when the checksum keeps a value it holds: that value;
    None when the next value is due (``local_value`` is then ``next_key(package_max)``).

    Split from ``local_value`` because the two outcomes take different paths: a
    standing value is answered without a write, the next value is stored by
    ``WriteScope.store_next``, which finds which number is next under the lock."""
    if package_max is None or checksum_value is None:
        return None
    if history or checksum_value >= package_max:
        return checksum_value
    return None


def local_value(package_max: Optional[RevisionKey], checksum_value: Optional[RevisionKey],
                history: bool) -> RevisionKey:
    """get-pr without upstream (docs/semantics.md §3).

    ``checksum_value`` is the checksum's min (history) or max (no history) value.
    """
    standing = standing_value(package_max, checksum_value, history)
    return next_key(package_max) if standing is None else standing


def next_child(base: RevisionKey, largest_child: Optional[int]) -> RevisionKey:
    """``child(base)``: ``base.(N+1)`` for the largest existing ``base.N``, else ``base.0``."""
    return base + ((0 if largest_child is None else largest_child + 1),)


def chained_value(local: Optional[RevisionKey], local_max: Optional[RevisionKey],
                  children: Dict[RevisionKey, int], history: bool,
                  facts: Facts) -> Union[RevisionKey, Need]:
    """get-pr on a server with an upstream (docs/semantics.md §7, defects D4, D5, D7 fixed).

    ``local`` is the checksum's local min (history) or max value, ``local_max`` the
    package's local max, ``children`` the package's largest child per base.
    Returns the value, or ``Need(fact)`` when an upstream answer is still missing;
    facts are requested in the reference's order.
    """
    if local is not None and history:
        return local                     # the upstream cannot change this answer
    if UPSTREAM_MAX not in facts:
        return Need(UPSTREAM_MAX)
    upstream_max = facts[UPSTREAM_MAX]
    if local is not None:
        value = not_below(local, local_max)
        if upstream_max is not None and value < upstream_max:
            if UPSTREAM_CHECKSUM not in facts:
                return Need(UPSTREAM_CHECKSUM)
            # Known upstream: the upstream max itself, never below it.
            value = upstream_max if facts[UPSTREAM_CHECKSUM] is not None else upstream_max + (0,)
        return value
    if UPSTREAM_HAS_PACKAGE not in facts:
        return Need(UPSTREAM_HAS_PACKAGE)
    if not facts[UPSTREAM_HAS_PACKAGE]:
        return local_value(local_max, None, history)
    if UPSTREAM_CHECKSUM not in facts:
        return Need(UPSTREAM_CHECKSUM)
    if facts[UPSTREAM_CHECKSUM] is not None:
        return facts[UPSTREAM_CHECKSUM]   # type: ignore[return-value]
    if UPSTREAM_MAX_AGAIN not in facts:
        return Need(UPSTREAM_MAX_AGAIN)
    base = facts[UPSTREAM_MAX_AGAIN]
    if base is None:
        # The upstream knows the package but holds no revision for it.
        return local_value(local_max, None, history)
    return next_child(base, children.get(base))  # type: ignore[arg-type]


def degraded_value(local: RevisionKey, local_max: RevisionKey, history: bool) -> RevisionKey:
    """Answer for a locally known checksum while the upstream is unreachable.

    History: the first value.  No history: never below what this server has handed
    out (the upstream comparison is skipped until it is back).
    """
    return local if history else not_below(local, local_max)
