"""A page of packages from PostgreSQL: a loose index scan in one query.

``prmain_package_key`` orders rows by (version, pkgarch, key), its text columns in
the "C" collation, which is byte order.  A recursive query steps from one package to
the next with one seek each (``LIMIT 1`` after the previous package), and the outer
``LIMIT`` ends the recursion once the page is full, so a page costs what it shows,
not what the table holds.  The prefix's end is a bound of the index range only when
it is in the query text (a prepared ``$n IS NULL OR ...`` would leave it a filter,
and the last seek of a listing would read to the end of the table), so the query is
put together from constant pieces for the filters given.  Each package's largest
value is the last entry of its index range, and when it was first given the least
time of the rows holding it (the entries of that key in the same index range: a
package's largest value is held by one checksum, or a few).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, List, Optional, Tuple

from ..engine import PackageSummary, prefix_end
from .record import micros


def packages_query(bounded: bool, by_pkgarch: bool, after: bool) -> str:
    """The query for the filters given: $1 the prefix, then its end, the pkgarch and
    the package to start after as they apply, the page size last."""
    taken, n = ["version >= $1"], 1
    if bounded:
        n += 1
        taken.append("version < $%d" % n)
    if by_pkgarch:
        n += 1
        taken.append("pkgarch = $%d" % n)
    where = " AND ".join(taken)
    first = ""
    if after:
        first = " AND (version, pkgarch) > ($%d, $%d)" % (n + 1, n + 2)
        n += 2
    return ("WITH RECURSIVE page(version, pkgarch) AS ("
            " (SELECT version, pkgarch FROM prmain WHERE %s%s ORDER BY version, pkgarch LIMIT 1)"
            " UNION ALL"
            " SELECT next.version, next.pkgarch FROM page, LATERAL (SELECT version, pkgarch FROM prmain"
            " WHERE %s AND (prmain.version, prmain.pkgarch) > (page.version, page.pkgarch)"
            " ORDER BY version, pkgarch LIMIT 1) AS next)"
            " SELECT page.version, page.pkgarch, top.value, (SELECT min(given) FROM prmain"
            " WHERE prmain.version = page.version AND prmain.pkgarch = page.pkgarch AND prmain.key = top.key)"
            " FROM page, LATERAL (SELECT value, key FROM prmain WHERE prmain.version = page.version"
            " AND prmain.pkgarch = page.pkgarch ORDER BY key DESC LIMIT 1) AS top LIMIT $%d"
            % (where, first, where, n + 1))


async def packages(query: Callable[..., Awaitable[Any]], prefix: str, pkgarch: Optional[str],
                   after: Optional[Tuple[str, str]], limit: int) -> List[PackageSummary]:
    """The page (``Engine.packages``); ``query`` is the engine's (it waits out outages)."""
    end = prefix_end(prefix)
    args: List[Any] = [prefix]
    args += [end] if end is not None else []
    args += [pkgarch] if pkgarch is not None else []
    args += list(after) if after is not None else []
    rows = await query(packages_query(end is not None, pkgarch is not None, after is not None), *args, limit,
                       method="fetch")
    return [(row[0], row[1], row[2], micros(row[3])) for row in rows]
