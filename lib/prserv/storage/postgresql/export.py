"""An export's rows from PostgreSQL, in keyset pages of byte order."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable, List, Optional, Tuple

from ..engine import Row, package_max_rows

EXPORT_BATCH_ROWS = 2000


async def select_batches(query: Callable[..., Awaitable[Any]],
                         filters: List[Tuple[str, Optional[str]]]) -> AsyncIterator[List[Row]]:
    """Rows in (version, pkgarch, checksum, value) byte order, by keyset pages of
    ``EXPORT_BATCH_ROWS``; ``query`` is the engine's (it waits out outages)."""
    clauses, params = [], []               # column names are constants
    for column, value in filters:
        if value:
            params.append(value)
            clauses.append("%s = $%d" % (column, len(params)))
    where = " AND ".join(clauses) or "TRUE"
    last: Optional[Row] = None
    while True:
        args = list(params)
        after = ""
        if last is not None:
            args += list(last)
            after = " AND (version, pkgarch, checksum, value) > ($%d, $%d, $%d, $%d)" % tuple(
                range(len(params) + 1, len(params) + 5))
        args.append(EXPORT_BATCH_ROWS)
        found = await query(
            "SELECT version, pkgarch, checksum, value FROM prmain WHERE %s%s "
            "ORDER BY version, pkgarch, checksum, value LIMIT $%d" % (where, after, len(args)), *args,
            method="fetch")
        batch = [tuple(row) for row in found]
        if batch:
            yield batch                                             # type: ignore[misc]
        if len(batch) < EXPORT_BATCH_ROWS:
            return
        last = batch[-1]                                            # type: ignore[assignment]


async def max_rows_batches(batches: AsyncIterator[List[Row]], checksum: Optional[str]) -> AsyncIterator[List[Row]]:
    """Per package, the rows holding its largest value (``checksum``'s only, if given),
    across batches: a package may span several."""
    pending: List[Row] = []
    async for batch in batches:
        pending.extend(batch)
        last_package = pending[-1][:2]
        complete = [row for row in pending if row[:2] != last_package]
        pending = [row for row in pending if row[:2] == last_package]
        chosen = [row for row in package_max_rows(complete) if not checksum or row[2] == checksum]
        if chosen:
            yield chosen
    chosen = [row for row in package_max_rows(pending) if not checksum or row[2] == checksum]
    if chosen:
        yield chosen
