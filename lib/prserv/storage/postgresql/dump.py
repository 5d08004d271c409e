"""``dump-db`` of a PostgreSQL database: bitbake's SQLite dump text of its rows.

The answer is what a dump of a SQLite file holding the same rows in bitbake's
schema says (``BEGIN TRANSACTION;``, bitbake's ``CREATE TABLE PRMAIN``, one
``INSERT INTO "PRMAIN" VALUES(...)`` per row, ``COMMIT;``), so ``prserv restore``
and ``sqlite3`` take it.  The rows come from one ``REPEATABLE READ`` snapshot read
by a thread with its own event loop and its own connection (one more than the
pool, while a dump runs), a batch at a time through a small queue: the server's
memory does not grow with the table.  ``lines`` is a plain iterator, as the dump
answer is produced between the server's other requests.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Iterator, List

from ...errors import DatabaseError
from ..engine import DumpSource
from .url import hide_in, masked

BATCH_ROWS = 2000
CREATE_TABLE = ("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value));")
_END = object()


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgreSQLDump(DumpSource):
    def __init__(self, url: str) -> None:
        self.url = url
        self.description = "PostgreSQL snapshot of %s" % masked(url)
        self._batches: "queue.Queue[Any]" = queue.Queue(maxsize=4)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), name="prserv-dump",
                                        daemon=True)
        self._thread.start()

    def lines(self) -> Iterator[str]:
        yield "BEGIN TRANSACTION;"
        yield CREATE_TABLE
        while True:
            batch = self._batches.get()
            if batch is _END:
                break
            if isinstance(batch, BaseException):
                raise DatabaseError(hide_in("%s: %s" % (type(batch).__name__, batch), self.url))
            for version, pkgarch, checksum, value in batch:
                yield 'INSERT INTO "PRMAIN" VALUES(%s,%s,%s,%s);' % (
                    _quoted(version), _quoted(pkgarch), _quoted(checksum), _quoted(value))
        yield "COMMIT;"

    def close(self) -> None:
        self._stopping.set()
        while self._thread.is_alive():
            try:
                self._batches.get(timeout=0.05)     # let a blocked put see the stop
            except queue.Empty:
                pass
        self._thread.join()

    # ------------------------------------------------------------------ the reading thread
    async def _read(self) -> None:
        import asyncpg  # type: ignore[import-not-found]

        try:
            connection = await asyncpg.connect(self.url)
        except Exception as exc:                    # reported where the lines are read
            self._put(exc)
            return
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                batch: List[Any] = []
                async for row in connection.cursor("SELECT version, pkgarch, checksum, value FROM prmain "
                                                   "ORDER BY id", prefetch=BATCH_ROWS):
                    batch.append(tuple(row))
                    if len(batch) >= BATCH_ROWS:
                        if not self._put(batch):
                            return
                        batch = []
                if batch and not self._put(batch):
                    return
            self._put(_END)
        except Exception as exc:
            self._put(exc)
        finally:
            await connection.close()

    def _put(self, item: Any) -> bool:
        """Hand ``item`` over (waiting while the queue is full); False once stopped."""
        while not self._stopping.is_set():
            try:
                self._batches.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


__all__ = ["PostgreSQLDump", "CREATE_TABLE"]
