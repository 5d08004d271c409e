"""SQLite's errors as this package's typed errors (``prserv.errors``).

Nothing above the storage layer sees ``sqlite3.Error``: every place of the SQLite
engine that lets one out goes through ``translated`` (a ``with`` block), or, on the
per-request paths where a ``with`` block would cost more than the work it guards
(a cache hit), through ``database_error`` in a plain ``except``.  A translated
error is caused by SQLite's (``raise ... from``), and its message keeps SQLite's.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Callable, Optional, Type

from ...errors import DatabaseError, PRServiceError


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite says another connection holds the file ("database is locked")."""
    text = str(exc)
    return "locked" in text or "busy" in text


def database_error(exc: sqlite3.Error) -> DatabaseError:
    """SQLite's error as the storage interface's, its message unchanged."""
    return DatabaseError(str(exc))


class translated:
    """``with translated(what, error):``: an ``sqlite3.Error`` raised in the block
    leaves as ``error("<what>: <SQLite's message>[: <detail>]")``, or with SQLite's
    message alone when ``what`` is empty.

    ``busy``: when SQLite reports the file locked or busy (``is_busy``), the error
    to raise instead, made from SQLite's.  Any other exception passes unchanged.
    """

    __slots__ = ("what", "error", "busy", "detail")

    def __init__(self, what: str = "", error: Type[PRServiceError] = DatabaseError,
                 busy: Optional[Callable[[sqlite3.Error], PRServiceError]] = None, detail: str = "") -> None:
        self.what = what
        self.error = error
        self.busy = busy
        self.detail = detail

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> bool:
        if not isinstance(exc, sqlite3.Error):
            return False
        if self.busy is not None and is_busy(exc):
            raise self.busy(exc) from exc
        message = "%s: %s" % (self.what, exc) if self.what else str(exc)
        if self.detail:
            message += ": " + self.detail
        raise self.error(message) from exc


DATABASE = translated()
"""SQLite's error as a ``DatabaseError`` with SQLite's message (a request's error):
one instance serves every block, nothing is allocated per use."""
