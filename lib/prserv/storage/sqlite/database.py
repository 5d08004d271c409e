"""One open SQLite database file (``SQLiteDatabase``): what the engines of its tables
share -- the connection, its write transactions, the log's checkpoints, a mirror's lock."""

from __future__ import annotations

import fcntl
import os
from typing import Optional

from ...errors import DatabaseError, ReadOnlyError
from ...log import logger
from ..syncmode import SyncMode
from . import migrate
from .cache import DEFAULT_BUDGET
from . import checkpoint
from .connection import open_connection
from .schema import checked_identifier
from .transactions import GroupCommit, Transactions


MIRROR_LOCK_SUFFIX = "-mirror.lock"


def hold_mirror_lock(filename: str) -> int:
    """Lock ``<filename>-mirror.lock`` for this process (a file descriptor to close),
    so that one mirror at a time writes the file and ``prserv mirror-reset`` never
    runs under a mirror; ``DatabaseError`` if another process holds it."""
    path = os.path.abspath(filename) + MIRROR_LOCK_SUFFIX
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DatabaseError("cannot open %s: %s" % (path, exc.strerror)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DatabaseError("a mirror is running on %s (it holds %s); stop it first"
                            % (filename, path)) from None
    return fd


class SQLiteDatabase:
    """An open PR database file.

    Opening it migrates the tables of bitbake <= 2.8 once (read-write) or refuses an
    unmigrated file (read-only; ``migrate.on_open``).  Each table is served by a
    ``SQLiteEngine(database, name)``.
    """

    def __init__(self, filename: str, read_only: bool = False, synchronous: str = "NORMAL",
                 exclusive: bool = False, background_checkpoints: bool = False,
                 cache_size: int = DEFAULT_BUDGET, mirror: bool = False) -> None:
        """``synchronous``: SQLite's setting (``FULL`` fsyncs every commit).  ``exclusive``:
        hold the file for this connection alone (refused while another one has it open).
        ``background_checkpoints``: a ``WalCheckpointer`` instead of checkpoints inside
        commits (read-write, non-exclusive only).  ``cache_size``: bytes each table's
        cache keeps (``cache.PackageCache``).  ``mirror``: written by a mirror, which holds
        ``hold_mirror_lock`` while it has the file open."""
        self.filename = os.path.abspath(filename)
        self.read_only = read_only
        self.exclusive = exclusive
        self.cache_size = cache_size
        self.mirror_lock: Optional[int] = None
        self.connection = open_connection(self.filename, read_only, synchronous, exclusive)
        try:
            if mirror:
                self.mirror_lock = hold_mirror_lock(self.filename)
            self.migration: Optional[migrate.MigrationSummary] = migrate.on_open(
                self.connection, self.filename, read_only)
        except BaseException:
            self.connection.close()
            self._release_mirror_lock()
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
        self._release_mirror_lock()

    def _release_mirror_lock(self) -> None:
        if self.mirror_lock is not None:
            os.close(self.mirror_lock)
            self.mirror_lock = None
