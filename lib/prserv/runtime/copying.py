"""Moving a database: every row of one (SQLite file or PostgreSQL URL) into another.

Rows go over in the export's order, in batches, each batch one transaction in the
destination; rows the destination holds already are skipped (so a second run, or a
destination with rows of its own, only gains what it lacks).  Values that are not
revisions are left out and counted.  Afterwards both sides are read again in the
same order and compared row by row: the count and an order-independent digest of
the source's rows, and of the same rows found in the destination, must agree.

The record of when each value was given goes along (``Engine.records_of``,
``add_rows_given``, in the batch's transaction): a row the destination lacked, or
held without a record, gets the source's time, address and user.  An engine without
a record (PostgreSQL, until it has one) gives and keeps none.  Export files never
carry it.

A SQLite file of bitbake <= 2.8 (``PRMAIN_nohist``) is migrated on a scratch copy,
never in place: a copy leaves its source as it was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

from ..errors import DatabaseError
from ..revision import is_revision
from ..storage import open_engine
from ..storage.engine import Engine, Row, RowDigest
from ..storage.postgresql.url import is_url, masked
from ..storage.sqlite import migrate

Progress = Callable[[int], None]
"""Called after each batch with the source rows read so far."""


def copy_database(source: str, destination: str, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Copy ``source`` into ``destination``; a summary with ``verified`` (False: the
    destination lacks or differs in rows the source holds).  ``DatabaseError`` if
    either cannot be opened."""
    return asyncio.run(_copy(source, destination, progress))


async def _copy(source: str, destination: str, progress: Optional[Progress]) -> Dict[str, Any]:
    started = time.monotonic()
    scratch = None
    if not is_url(source):
        if not os.path.isfile(source):
            raise DatabaseError("no database file %s" % source)
        scratch = migrate.migrated_copy(source)
    try:
        src = await open_engine(scratch or source, read_only=scratch is None)
        try:
            dest = await open_engine(destination)
            try:
                read, added, skipped = await _transfer(src, dest, progress)
                check = await _verify(src, dest)
            finally:
                await dest.close()
        finally:
            await src.close()
    finally:
        if scratch is not None:
            shutil.rmtree(os.path.dirname(scratch), ignore_errors=True)
    return {"source": _shown(source), "destination": _shown(destination), "rows_read": read,
            "rows_added": added, "rows_present": read - skipped - added, "rows_skipped": skipped,
            "seconds": round(time.monotonic() - started, 3), **check}


def _shown(database: str) -> str:
    return masked(database) if is_url(database) else os.path.abspath(database)


async def _rows(engine: Engine) -> AsyncIterator[List[Row]]:
    async for batch in engine.export_batches(None, None, None, True):
        yield batch


async def _transfer(src: Engine, dest: Engine, progress: Optional[Progress]) -> Tuple[int, int, int]:
    read = added = skipped = 0
    async for batch in _rows(src):
        valid = [row for row in batch if is_revision(row[3])]
        skipped += len(batch) - len(valid)
        if valid:
            added += await dest.add_rows_given(valid, await src.records_of(valid))
        read += len(batch)
        if progress is not None:
            progress(read)
    return read, added, skipped


async def _verify(src: Engine, dest: Engine) -> Dict[str, Any]:
    """Walk both sides in export order: every valid source row must be in ``dest``."""
    source, found = RowDigest(), RowDigest()
    theirs = _sorted_rows(dest)
    current: Optional[Row] = await _next(theirs)
    async for batch in _rows(src):
        for row in batch:
            if not is_revision(row[3]):
                continue
            source.add(row)
            while current is not None and current < row:
                current = await _next(theirs)
            if current == row:
                found.add(row)
    missing = source.count - found.count
    return {"source_count": source.count, "source_digest": source.hexdigest,
            "destination_count": found.count, "destination_digest": found.hexdigest,
            "missing": missing, "verified": missing == 0 and source.hexdigest == found.hexdigest}


def _sorted_rows(engine: Engine) -> AsyncIterator[Row]:
    async def rows() -> AsyncIterator[Row]:
        async for batch in engine.export_batches(None, None, None, True):
            for row in batch:
                yield row
    return rows()


async def _next(rows: AsyncIterator[Row]) -> Optional[Row]:
    try:
        return await rows.__anext__()
    except StopAsyncIteration:
        return None
