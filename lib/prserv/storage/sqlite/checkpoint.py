"""Copying the write-ahead log into the database file from a thread of its own.

See ``WalCheckpointer``: it keeps the writer's commits free of checkpoint pauses and
the log from growing without end under continuous writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Optional, Tuple

from ...log import logger

WAL_COPY_BYTES = 4 << 20
"""The background checkpointer copies the log into the file once it is this large."""
WAL_RESTART_BYTES = 64 << 20
"""...and has it start over once it holds this much (``WalCheckpointer.finish_on``)."""
WAL_CHECK_INTERVAL = 0.2
"""Seconds between two looks at the log's size."""


class WalCheckpointer:
    """Copies the write-ahead log into the database file from a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL
    pages, on the committing (event-loop) thread: with ``synchronous=FULL`` that is
    a pause of milliseconds for every client, once a second under load.  Here the
    writer's automatic checkpoint is off and this thread, with its own connection,
    makes a PASSIVE checkpoint (it never blocks readers or writers) whenever the
    log has grown past ``threshold_bytes``.  SQLite releases the GIL meanwhile.

    Copying is not enough to keep the log small: SQLite starts the log over only
    when a write transaction begins with every frame already copied, and under a
    steady write load the writer always commits more while this thread copies, so
    the log would grow without end.  So once the log holds ``restart_bytes``, after copying the bulk
    this thread asks the writer to copy the few frames committed meanwhile
    (``finish_on``, called after a commit, on the writer's own connection, where
    nothing can commit in between): its next write transaction starts the log
    over, and its ``journal_size_limit`` gives the disk space back.
    """

    def __init__(self, filename: str, threshold_bytes: Optional[int] = None,
                 restart_bytes: Optional[int] = None, interval: Optional[float] = None) -> None:
        """Copy when the log file is larger than ``threshold_bytes``; have the log start
        over once it holds ``restart_bytes`` (each start costs the writer a small
        checkpoint: rarely, so that it does not show in its latency).  Defaults:
        ``WAL_COPY_BYTES``, ``WAL_RESTART_BYTES``, ``WAL_CHECK_INTERVAL``."""
        self.filename = filename
        self.threshold_bytes = WAL_COPY_BYTES if threshold_bytes is None else threshold_bytes
        self.restart_bytes = WAL_RESTART_BYTES if restart_bytes is None else restart_bytes
        self.interval = WAL_CHECK_INTERVAL if interval is None else interval
        self.last_result: Optional[Tuple[int, int, int]] = None
        """(busy, WAL frames, frames copied) of the last checkpoint."""
        self.checkpointed = threading.Event()
        """Set after each checkpoint (for whoever waits for one: tests, tools)."""
        self.tail_requested = False
        """Set by this thread after copying the bulk of a long log; ``finish_on`` clears it."""
        self.tails = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prserv-checkpoint", daemon=True)
        self._thread.start()

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self.filename + "-wal")
        except OSError:
            return 0

    def _run(self) -> None:
        conn = sqlite3.connect(self.filename, timeout=0.1, isolation_level=None,
                               check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                if not self.tail_requested and self._wal_size() > self.threshold_bytes:
                    self.copy(conn)
        finally:
            conn.close()

    def copy(self, conn: sqlite3.Connection) -> None:
        """One background pass, on a connection that is not the writer's (the thread's)."""
        try:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:       # e.g. another process checkpoints right now
            logger.debug("checkpoint of %s skipped: %s", self.filename, exc)
            return
        self.last_result = (busy, frames, copied)
        # all copied (no reader holds an older snapshot, e.g. a backup) and long enough
        self.tail_requested = copied == frames and frames * page_size >= self.restart_bytes
        self.checkpointed.set()
        logger.debug("checkpoint of %s: %d of %d WAL frames copied", self.filename, copied, frames)

    def finish_on(self, conn: sqlite3.Connection) -> None:
        """On the writer's connection, outside a transaction: if this thread asked for
        it, copy the frames committed since its checkpoint, so the writer's next
        transaction starts the log over.  Costs the writer one small checkpoint (two
        fsyncs, 1-7 ms on a busy disk) per ``restart_bytes`` of log."""
        if not self.tail_requested:
            return
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:       # another process checkpoints: next time
            logger.debug("checkpoint of the log's tail of %s skipped: %s", self.filename, exc)
            return
        finally:                           # only now may the thread copy again
            self.tail_requested = False
        self.tails += 1
        logger.debug("checkpoint of the log's tail of %s: %d of %d WAL frames copied",
                     self.filename, copied, frames)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
