"""One SQLite database file: its connection, its tables, and how writes reach the disk."""

from __future__ import annotations

import os
from typing import Optional

from ...errors import ReadOnlyError
from ...log import logger
from ..syncmode import SyncMode
from . import migrate
from .cache import DEFAULT_BUDGET
from . import checkpoint
from .connection import checked_identifier, open_connection
from .transactions import GroupCommit, Transactions


class SQLiteDatabase:
    """An open PR database file.

    Opening it migrates the tables of bitbake <= 2.8 once (read-write) or refuses an
    unmigrated file (read-only; ``migrate.on_open``).  Each table is served by a
    ``SQLiteEngine(database, name)``.
    """

    def __init__(self, filename: str, read_only: bool = False, synchronous: str = "NORMAL",
                 exclusive: bool = False, background_checkpoints: bool = False,
                 cache_size: int = DEFAULT_BUDGET) -> None:
        """``synchronous``: SQLite's setting (``FULL`` fsyncs every commit).  ``exclusive``:
        hold the file for this connection alone (refused while another one has it open).
        ``background_checkpoints``: a ``WalCheckpointer`` instead of checkpoints inside
        commits (read-write, non-exclusive only).  ``cache_size``: bytes each table's
        cache keeps (``cache.PackageCache``)."""
        self.filename = os.path.abspath(filename)
        self.read_only = read_only
        self.exclusive = exclusive
        self.cache_size = cache_size
        self.connection = open_connection(self.filename, read_only, synchronous, exclusive)
        try:
            self.migration: Optional[migrate.MigrationSummary] = migrate.on_open(
                self.connection, self.filename, read_only)
        except BaseException:
            self.connection.close()
            raise
        self.transactions = Transactions(self.connection, read_only)
        self.group: Optional[GroupCommit] = None
        self.checkpointer: Optional[checkpoint.WalCheckpointer] = None
        if background_checkpoints and not read_only and not exclusive:
            self.connection.execute("PRAGMA wal_autocheckpoint = 0")
            self.checkpointer = checkpoint.WalCheckpointer(self.filename)
            # when the log starts over, give the disk space back down to this size
            self.connection.execute("PRAGMA journal_size_limit = %d" % checkpoint.WAL_COPY_BYTES)

    def drop_table(self, name: str) -> None:
        """Drop a table (its engines must not be used any more)."""
        checked_identifier(name)
        if self.read_only:
            raise ReadOnlyError("database is open read-only")
        self.transactions.caches = [cache for cache in self.transactions.caches if cache.table != name]
        logger.info("drop table %s", name)
        self.connection.execute("DROP TABLE IF EXISTS %s" % name)

    def use_group_commit(self, mode: SyncMode) -> GroupCommit:
        """Writes from now on share transactions committed per ``mode`` (a server, in
        its event loop)."""
        self.group = self.transactions.group = GroupCommit(self.transactions, mode,
                                                            after_commit=self.checkpoint_tail)
        return self.group

    def checkpoint_tail(self) -> None:
        """After a commit: let the background checkpointer's log start over (see
        ``WalCheckpointer``).  Does nothing without one."""
        if self.checkpointer is not None and not self.connection.in_transaction:
            self.checkpointer.finish_on(self.connection)

    def close(self) -> None:
        """Commit what a group holds, stop the checkpointer, close the file."""
        if self.group is not None:
            self.group.commit()
            self.group = self.transactions.group = None
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        if self.connection is not None:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            self.connection.close()
            self.connection = None
