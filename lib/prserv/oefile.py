"""The text format of OpenEmbedded's ``bitbake-prserv-tool export`` / ``import``.

Writing gives the same lines OE writes (docs/semantics.md §10.2) with three
corrections: dotted values (``1.0.3``) are written as they are, the
``PRAUTO_<version>_<pkgarch>`` maximum is taken per (version, pkgarch) numerically,
not per pkgarch by string comparison, and the rows of one checksum are written in
numeric order, so that its last assignment (the one bitbake keeps) is its highest
value.  Reading accepts the blocks in any order, blank lines and ``#`` comments,
and names the line of anything it cannot use.
Pure text in, text out: no sockets, no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

from .revision import is_revision, revision_key

_ASSIGNMENT = re.compile(r'(?P<name>\S+)\s*=\s*"(?P<value>[^"]*)"\s*\Z')
_UNSAFE = re.compile(r'[$"\s]')
"""Characters that would make a field unreadable in a ``PRAUTO$`` variable name."""


@dataclass(frozen=True)
class Row:
    version: str
    pkgarch: str
    checksum: str
    value: str
    line: int = 0      # where it was read

    @property
    def name(self) -> str:
        """The variable it is read from: ``PRAUTO$version$pkgarch$checksum``."""
        return "PRAUTO$%s$%s$%s" % (self.version, self.pkgarch, self.checksum)


@dataclass(frozen=True)
class Problem:
    line: int          # 1-based line number (0: not tied to a line)
    reason: str
    name: str = field(default="", compare=False)   # the PRAUTO$ variable, when its value is the problem


# --------------------------------------------------------------------------- writing

def export_lines(datainfo: Iterable[dict], metainfo: Optional[dict] = None, nomax: bool = False,
                 lockdown: bool = False) -> Tuple[List[str], List[dict]]:
    """``(lines, unwritable)``: the file's lines (each ending in ``\\n``) and the rows
    that cannot be written so that they read back (empty fields, ``$``, quotes, blanks
    in a field; a value that is not a revision).

    The rows of one (version, pkgarch, checksum) are written together, where the first
    of them comes, in numeric order (the server's export sorts values as text: ``12``
    before ``9``): OE's importer reads the file as bitbake configuration, where the
    last assignment of a variable wins, so that last one must be the highest value."""
    lines: List[str] = []
    unwritable: List[dict] = []
    maxima: Dict[Tuple[str, str], str] = {}
    values: Dict[Tuple[str, str, str], List[str]] = {}     # in order of first appearance
    for row in datainfo:
        version, pkgarch, checksum, value = (str(row[k]) for k in ("version", "pkgarch", "checksum", "value"))
        fields = (version, pkgarch, checksum)
        if not all(fields) or any(_UNSAFE.search(field) for field in fields) or not is_revision(value):
            unwritable.append(row)
            continue
        values.setdefault(fields, []).append(value)
        best = maxima.get((version, pkgarch))
        if best is None or revision_key(value) > revision_key(best):
            maxima[(version, pkgarch)] = value
    for (version, pkgarch, checksum), column in values.items():
        lines.extend('PRAUTO$%s$%s$%s = "%s"\n' % (version, pkgarch, checksum, value)
                     for value in sorted(column, key=revision_key))
    if not nomax:
        lines.extend('PRAUTO_%s_%s = "%s"\n' % (version, pkgarch, value)
                     for (version, pkgarch), value in maxima.items())
    if metainfo:
        lines.extend(_column_info_lines(metainfo))
    if lockdown:
        lines.append('PRSERV_LOCKDOWN = "1"\n\n')
    return lines, unwritable


def _column_info_lines(metainfo: dict) -> List[str]:
    lines = ['#PR_core_ver = "%s"\n\n' % metainfo["core_ver"],
             "#Table: %s\n" % metainfo["tbl_name"],
             "#Columns:\n",
             "#name      \t type    \t notn    \t dflt    \t pk\n",
             "#----------\t --------\t --------\t --------\t ----\n"]
    for column in metainfo["col_info"]:
        lines.append("#%10s\t %8s\t %8s\t %8s\t %4s\n" % (
            column["name"], column["type"], column["notnull"], column["dflt_value"], column["pk"]))
    lines.append("\n")
    return lines


# --------------------------------------------------------------------------- reading

def read_rows(lines: Iterable[str]) -> Iterator[Union[Row, Problem]]:
    """Each ``PRAUTO$`` line as a ``Row``; each line that cannot be used as a ``Problem``.

    ``PRAUTO_`` maxima and ``PRSERV_LOCKDOWN`` are derived data and are passed over
    silently, as OE's importer does.
    """
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _ASSIGNMENT.match(text)
        if match is None:
            yield Problem(number, "not a NAME = \"VALUE\" assignment: %s" % _shorten(text))
            continue
        name, value = match.group("name"), match.group("value")
        if not name.startswith("PRAUTO$"):
            if not (name.startswith("PRAUTO_") or name == "PRSERV_LOCKDOWN"):
                yield Problem(number, "unknown variable %s" % _shorten(name))
            continue
        fields = name.split("$")
        if len(fields) != 4 or not all(fields[1:]):
            yield Problem(number, "expected PRAUTO$VERSION$PKGARCH$CHECKSUM, got %s" % _shorten(name))
        elif not is_revision(value):
            yield Problem(number, "value %r is not a revision (dotted non-negative integers)" % value, name)
        else:
            yield Row(fields[1], fields[2], fields[3], value, number)


def last_assignments(items: Iterable[Union[Row, Problem]]) -> Tuple[List[Row], List[Problem], int]:
    """``(rows, problems, duplicates)``: ``read_rows``' items as bitbake's parser sees
    the file, where the last assignment of a variable wins.

    Each ``PRAUTO$`` variable assigned more than once keeps only its last assignment
    (a row, or a problem when its value is unusable), at that line; ``duplicates``
    counts the earlier ones dropped.  Rows and problems come in line order.
    """
    last: Dict[str, Union[Row, Problem]] = {}
    others: List[Problem] = []
    duplicates = 0
    for item in items:
        if isinstance(item, Problem) and not item.name:
            others.append(item)         # not tied to a variable
            continue
        if last.pop(item.name, None) is not None:
            duplicates += 1             # popped: the later assignment takes its place in line order
        last[item.name] = item
    rows = [item for item in last.values() if isinstance(item, Row)]
    problems = sorted(others + [item for item in last.values() if isinstance(item, Problem)],
                      key=lambda problem: problem.line)
    return rows, problems, duplicates


def _shorten(text: str) -> str:
    return text if len(text) <= 100 else text[:97] + "..."
