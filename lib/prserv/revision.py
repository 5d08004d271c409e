"""Revision values (``"0"``, ``"12"``, ``"1.0.3"``): parsing, ordering, increment.

Order is numeric field by field; when one value is a strict prefix of the other,
the shorter is smaller: ``1 < 1.0 < 1.1 < 1.2 < 1.10 < 2``.  Values are compared
through ``revision_key`` (a tuple of ints), never as strings (docs/semantics.md §2).
"""

from __future__ import annotations

import re
from typing import Optional, Tuple, Union

from .errors import InvalidRevisionError

RevisionKey = Tuple[int, ...]

MAX_REVISION_LENGTH = 256
"""Longer strings are not accepted as revisions (a sanity bound, not a semantic)."""

_REVISION = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\Z")
_DIGITS = re.compile(r"[0-9]+\Z")


def is_revision(value: object) -> bool:
    """True for a canonical revision string: ``"0"``, ``"12"``, ``"1.0.3"``.

    Not ``"01"``, ``"+7"``, ``" 7"``, ``"1."``, ``"1'"``, ``""``: ASCII digits only,
    no leading zeros, so that equal revisions are equal strings.
    """
    return (isinstance(value, str) and len(value) <= MAX_REVISION_LENGTH
            and _REVISION.match(value) is not None)


def revision_key(value: str) -> RevisionKey:
    """Sort key of a revision; raises ``InvalidRevisionError`` for anything else."""
    if not is_revision(value):
        raise InvalidRevisionError("not a revision: %r" % (value if len(str(value)) < 80 else str(value)[:80] + "..."))
    return tuple(int(field) for field in value.split("."))


def optional_key(value: Optional[str]) -> Optional[RevisionKey]:
    """``revision_key`` of a value, or None when it is not a revision.

    Plain integers ("0", "17": nearly every stored value) take a short path: this
    runs once per row when a package is first loaded."""
    if (type(value) is str and value.isdigit() and value.isascii() and len(value) <= MAX_REVISION_LENGTH
            and (value[0] != "0" or value == "0")):
        return (int(value),)
    if is_revision(value):
        return tuple(int(field) for field in value.split("."))  # type: ignore[union-attr]
    return None


def key_to_revision(key: RevisionKey) -> str:
    if len(key) == 1:
        return str(key[0])
    return ".".join(str(field) for field in key)


def increased(key: RevisionKey) -> RevisionKey:
    """``increase(v)`` of docs/semantics.md: the last field plus one (``1.9`` ->
    ``1.10``)."""
    return key[:-1] + (key[-1] + 1,)


def next_key(package_max: Optional[RevisionKey]) -> RevisionKey:
    """The value a new checksum gets in a package whose largest value is
    ``package_max``: its last field plus one, 0 in an empty package.

    The one home of this rule: the policy, the allocator and both engines' ``store_next``
    call it; the PostgreSQL function ``prserv_store_next`` computes it in SQL under
    the package's lock, and ``tests/test_postgresql.py`` holds the two to the same
    cases."""
    return (0,) if package_max is None else increased(package_max)


def increase_revision(ver: Union[str, int]) -> str:
    """Add one to the last field: ``"1"→"2"``, ``"1.9"→"1.10"``, ``"2.0.3"→"2.0.4"``.

    Raises ``ValueError`` when the last field is not ASCII digits (``"1.a"``,
    ``"1."``, ``""``).  (The reference uses ``int()``, which also takes ``+7``.)
    """
    fields = str(ver).split(".")
    last = fields[-1]
    if not _DIGITS.match(last):
        raise InvalidRevisionError("unable to increase revision value %r: last field is not a number" % (ver,))
    fields[-1] = str(int(last) + 1)
    return ".".join(fields)


def _fields(rev: Union[str, int]) -> RevisionKey:
    text = str(rev)
    fields = text.split(".")
    if not all(_DIGITS.match(f) for f in fields):
        raise InvalidRevisionError("not a revision: %r" % (rev,))
    return tuple(int(f) for f in fields)


def _revision_greater_or_equal(rev1: Union[str, int], rev2: Union[str, int]) -> bool:
    """Numeric ``rev1 >= rev2`` (a strict prefix is smaller: ``"1" < "1.0"``)."""
    return _fields(rev1) >= _fields(rev2)


def revision_greater(rev1: Union[str, int], rev2: Union[str, int]) -> bool:
    return _fields(rev1) > _fields(rev2)


def revision_smaller(rev1: Union[str, int], rev2: Union[str, int]) -> bool:
    return _fields(rev1) < _fields(rev2)
