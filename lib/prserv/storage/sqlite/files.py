"""A database's files on disk, handled as one.

A database is the file and, while in use, its ``-wal``/``-shm`` (WAL mode) or
``-journal``; a copy or a restore creates, renames and removes them together.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

SQLITE_HEADER = b"SQLite format 3\x00"
COPY_SUFFIXES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps next to a database; a stale one must never meet a new file."""


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Remove a database file we created and whatever SQLite kept next to it."""
    for name in (path,) + tuple(path + suffix for suffix in COPY_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """A temporary name next to ``path``; renamed over it (after fsync) if the block
    succeeds, removed if not.  Readers of ``path`` see the old file or the new, whole."""
    temporary = "%s.tmp-%d" % (path, os.getpid())
    remove(temporary)
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise
    with contextlib.suppress(OSError):
        fsync_path(os.path.dirname(os.path.abspath(path)))     # the rename itself


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_sqlite_file(path: str) -> bool:
    """Whether ``path`` starts as an SQLite database does (else: an SQL text)."""
    with open(path, "rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
