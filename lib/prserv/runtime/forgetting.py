"""``prserv forget-clients``' work: erasing old addresses and users from the record.

The record of when each value was given keeps, beside each time, the address and
user it was given to (``record_clients``).  Times stay forever (they are what
``/api/v1/history`` shows); who asked is kept only as long as a site's policy allows,
so this erases the address and user of every record older than a time
(``Engine.forget_clients``), on a SQLite file -- also one a server is using: SQLite's
locking orders the change with the server's writes -- or a PostgreSQL URL.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any, Dict

from ..errors import DatabaseError
from ..timestamps import parse_rfc3339, rfc3339
from ..storage import open_engine
from ..storage.postgresql.url import is_url, masked

_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)\Z")


def parse_before(text: str) -> int:
    """Microseconds since the epoch of ``text``: an RFC 3339 time, or a plain date
    ``YYYY-MM-DD`` meaning its midnight UTC (a retention policy counts in days).
    ``ValueError`` saying what is expected."""
    if _DATE.match(text.strip()):
        text = text.strip() + "T00:00:00Z"          # a date: its midnight, UTC
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        if not str(exc).startswith("expected"):
            raise                                   # the shape of a time, not a time (a 30 February)
        raise ValueError("expected a date (2026-12-06, midnight UTC) or an RFC 3339 time "
                         "(2026-12-06T08:00:00Z), not %.40r" % text) from None


def forget_clients(database: str, before: int) -> Dict[str, Any]:
    """Erase the address and user of every record older than ``before`` (microseconds
    since the epoch) in ``database``; a summary with ``changed``, how many records
    lost them.  ``DatabaseError`` if the database cannot be opened or written."""
    if not is_url(database) and not os.path.isfile(database):
        raise DatabaseError("no database file %s" % database)
    changed = asyncio.run(_forget(database, before))
    return {"database": masked(database) if is_url(database) else os.path.abspath(database),
            "before": rfc3339(before), "changed": changed}


async def _forget(database: str, before: int) -> int:
    if not is_url(database) and not await _has_clients(database):
        return 0
    engine = await open_engine(database)
    try:
        return await engine.forget_clients(before)
    finally:
        await engine.close()


async def _has_clients(path: str) -> bool:
    """Whether a SQLite file may hold addresses or users, read without writing: not
    when it has no record, nor when it is a mirror's (a mirror's record holds times
    only -- and a read-write open as a database of its own would end it being one)."""
    engine = await open_engine(path, read_only=True)
    try:
        return (await engine.given_since(0)) is not None and (await engine.changes(None, 1)).origin
    finally:
        await engine.close()
