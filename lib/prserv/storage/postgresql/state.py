"""A package's state in one query: what a decision about it is made from.

``prmain.key`` holds a value as numbers (``'1.20'`` -> ``{1,20}``), so the numeric
order of x.y.z is an index order: a package's largest value, a checksum's smallest
and largest, and a base's largest child are four index lookups in one statement.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ...revision import RevisionKey, revision_key
from ..engine import PackageState

STATE = """SELECT
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 ORDER BY key DESC LIMIT 1),
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 AND checksum = $3 ORDER BY key LIMIT 1),
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 AND checksum = $3 ORDER BY key DESC LIMIT 1),
    (SELECT value FROM prmain WHERE version = $1 AND pkgarch = $2 AND key > $4::numeric[]
        AND key < $5::numeric[] AND array_length(key, 1) = $6 ORDER BY key DESC LIMIT 1)"""
"""A package's largest value, a checksum's smallest and largest, and the largest
child of a base (``$4 < key < $5``, one number longer): four index lookups."""


def state_args(version: str, pkgarch: str, checksum: Optional[str],
               children_of: Optional[RevisionKey]) -> Tuple[Any, ...]:
    """``STATE``'s six arguments."""
    if children_of is None:
        return version, pkgarch, checksum, None, None, None
    upper = list(children_of[:-1]) + [children_of[-1] + 1]
    return version, pkgarch, checksum, list(children_of), upper, len(children_of) + 1


def state_of(found: Any, checksum: Optional[str], children_of: Optional[RevisionKey]) -> PackageState:
    """The ``PackageState`` of ``STATE``'s row (or of the store functions' answer)."""
    top, low, high, child = found
    state = PackageState(top is not None, None if top is None else revision_key(top), checksum,
                         None if low is None else (revision_key(low), revision_key(high)))
    if child is not None and children_of is not None:
        state.children = {children_of: revision_key(child)[-1]}
    return state
