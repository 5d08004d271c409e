"""SQLite's errors as typed ones (prserv.storage.sqlite.errors): one rule for the whole
SQLite engine, SQLite's message kept and SQLite's error the cause."""

from __future__ import annotations

import sqlite3

import pytest

from prserv.errors import BackupError, DatabaseBusy, DatabaseError
from prserv.storage.sqlite.errors import DATABASE, database_error, is_busy, translated


def test_sqlite_errors_leave_typed_with_their_message_and_cause():
    with pytest.raises(DatabaseError) as caught:
        with DATABASE:
            raise sqlite3.OperationalError("disk I/O error")
    assert str(caught.value) == "disk I/O error" and isinstance(caught.value.__cause__, sqlite3.Error)
    assert str(database_error(sqlite3.OperationalError("disk I/O error"))) == "disk I/O error"
    with pytest.raises(BackupError, match=r"^backup of x failed: no such table: t$"):
        with translated("backup of x failed", BackupError):
            raise sqlite3.OperationalError("no such table: t")
    with pytest.raises(BackupError, match=r"^statement 3 failed: syntax error: SELEC 1$"):
        with translated("statement 3 failed", BackupError, detail="SELEC 1"):
            raise sqlite3.OperationalError("syntax error")


def test_a_busy_file_has_an_error_of_its_own_and_other_errors_pass():
    busy = translated("cannot read x", BackupError, busy=lambda exc: DatabaseBusy("x is in use (%s)" % exc))
    with pytest.raises(DatabaseBusy, match=r"^x is in use \(database is locked\)$"):
        with busy:
            raise sqlite3.OperationalError("database is locked")
    with pytest.raises(BackupError, match="^cannot read x: file is not a database$") as caught:
        with busy:
            raise sqlite3.DatabaseError("file is not a database")
    assert not isinstance(caught.value, DatabaseBusy)
    assert is_busy(sqlite3.OperationalError("database table is locked"))
    with pytest.raises(KeyError):
        with DATABASE:
            raise KeyError("not SQLite's")
    with DATABASE:
        pass
