"""bitbake's ``prserv.db``: ``PRData`` and ``PRTable``, synchronous, on a SQLite file.

bitbake's tools call these without an event loop, and ``PRTable.get_value``
allocates.  They are a thin layer over the SQLite engine (``prserv.storage``) and
the allocator (``prserv.server.allocator``), run to completion at once
(``asyncrpc.eager.finish_now``): the SQLite engine never waits.
"""

from __future__ import annotations

import contextlib
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union

from . import messages
from .asyncrpc.eager import finish_now
from .policy import next_child
from .revision import key_to_revision, revision_key
from .server.allocator import Allocator
from .server.fields import import_value_text
from .storage.sqlite.cache import DEFAULT_BUDGET
from .storage.sqlite.database import SQLiteDatabase
from .storage.sqlite.engine import SQLiteEngine
from .version import __version__


class PRData:
    """The PR database file (bitbake's class name and behaviour).

    ``data["PRMAIN"]`` gives the table (created if missing unless read-only);
    ``del data["X"]`` drops a table; ``disconnect()`` closes the file.
    """

    def __init__(self, filename: str, read_only: bool = False, synchronous: str = "NORMAL",
                 exclusive: bool = False, background_checkpoints: bool = False,
                 cache_size: int = DEFAULT_BUDGET) -> None:
        """See ``SQLiteDatabase`` for ``synchronous``, ``exclusive``,
        ``background_checkpoints`` and ``cache_size``."""
        self.database = SQLiteDatabase(filename, read_only, synchronous, exclusive,
                                       background_checkpoints, cache_size)
        self.filename = self.database.filename
        self.read_only = read_only
        self._tables: Dict[str, PRTable] = {}

    @property
    def connection(self) -> Any:
        """The SQLite connection (None once disconnected)."""
        return self.database.connection

    @property
    def migration(self) -> Any:
        """What opening the file migrated from bitbake <= 2.8's tables, or None."""
        return self.database.migration

    @property
    def checkpointer(self) -> Any:
        return self.database.checkpointer

    def checkpoint_tail(self) -> None:
        self.database.checkpoint_tail()

    def disconnect(self) -> None:
        self.database.close()

    def __getitem__(self, tblname: str) -> "PRTable":
        if not isinstance(tblname, str):
            raise TypeError("tblname argument must be a string, not '%s'" % type(tblname))
        table = self._tables.get(tblname)
        if table is None:
            table = self._tables[tblname] = PRTable(SQLiteEngine(self.database, tblname))
        return table

    def __delitem__(self, tblname: str) -> None:
        self.database.drop_table(tblname)
        self._tables.pop(tblname, None)


class PRTable:
    """One PR table with the reference's method names, answering at once."""

    def __init__(self, engine: SQLiteEngine) -> None:
        self.engine = engine
        self.table = engine.table_name
        self.read_only = engine.read_only
        self._allocator = Allocator(engine)

    def _state(self, version: str, pkgarch: str, checksum: Optional[str] = None,
               children_of: Any = None) -> Any:
        return finish_now(self.engine.package(version, pkgarch, checksum, children_of))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes in one transaction (they commit together at its end)."""
        with self.engine.db.transactions.scope():
            yield

    # ------------------------------------------------------------------ lookups
    def test_package(self, version: str, pkgarch: str) -> bool:
        return self._state(version, pkgarch).has_rows

    def test_checksum_value(self, version: str, pkgarch: str, checksum: str, value: str) -> bool:
        return finish_now(self.engine.has_row(version, pkgarch, value, checksum))

    def test_value(self, version: str, pkgarch: str, value: str) -> bool:
        return finish_now(self.engine.has_row(version, pkgarch, value))

    def find_package_max_value(self, version: str, pkgarch: str) -> Optional[str]:
        key = self._state(version, pkgarch).max_key
        return None if key is None else key_to_revision(key)

    def find_value(self, version: str, pkgarch: str, checksum: str, history: bool = False) -> Optional[str]:
        """The checksum's smallest value (history) or largest (no history), or None."""
        key = self._state(version, pkgarch, checksum).checksum_value(checksum, history)
        return None if key is None else key_to_revision(key)

    def find_min_value(self, version: str, pkgarch: str, checksum: str) -> Optional[str]:
        return self.find_value(version, pkgarch, checksum, True)

    def find_max_value(self, version: str, pkgarch: str, checksum: str) -> Optional[str]:
        return self.find_value(version, pkgarch, checksum, False)

    def find_new_subvalue(self, version: str, pkgarch: str, base: str) -> str:
        """Next ``base.N`` (not stored): only values with exactly one more field count."""
        base_key = revision_key(base)
        children = self._state(version, pkgarch, children_of=base_key).children
        return key_to_revision(next_child(base_key, children.get(base_key)))

    # ------------------------------------------------------------------ writes
    def store_value(self, version: str, pkgarch: str, checksum: str, value: str) -> None:
        """Store the row unless it exists; a no-op on a read-only database."""
        key = revision_key(value)
        if self.read_only:
            return
        finish_now(self._allocator.import_one(version, pkgarch, checksum, key_to_revision(key)))

    def get_value(self, version: str, pkgarch: str, checksum: str, history: bool) -> str:
        """get-pr without upstream (docs/semantics.md §3); stores unless read-only."""
        return finish_now(self._allocator.get_pr(version, pkgarch, checksum, history,
                                                 store=not self.read_only))

    def importone(self, version: str, pkgarch: str, checksum: str,
                  value: Union[str, int]) -> Optional[Union[str, int]]:
        """Store a row as given (no ordering check); return ``value`` unchanged.

        ``value`` is a revision string or a non-negative int (stored as text).
        Returns None on a read-only database.
        """
        text = import_value_text(value)
        if self.read_only:
            return None
        finish_now(self._allocator.import_one(version, pkgarch, checksum, text))
        return value

    # ------------------------------------------------------------------ export
    def export(self, version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
               colinfo: bool, history: bool = False) -> Tuple[dict, List[dict]]:
        """``(metainfo, datainfo)``; ``metainfo`` is empty unless ``colinfo``."""
        metainfo: Dict[str, Any] = {}
        if colinfo:
            metainfo = messages.export_metainfo(self.table, __version__, finish_now(self.engine.column_info()))
        datainfo = [messages.export_row(*row)
                    for row in self.engine.export_rows(version, pkgarch, checksum, history)]
        return metainfo, datainfo

    def dump_db(self, fd: IO[str]) -> int:
        """Write an SQL text dump of the whole database; return characters written."""
        return self.engine.write_dump(fd)
