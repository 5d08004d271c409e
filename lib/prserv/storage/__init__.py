"""Where PR values are kept: the engine interface and its engines.

``engine`` defines what the server asks of a database (``Engine``); ``sqlite`` is
the engine for bitbake's SQLite files, ``postgresql`` the one for a database shared by
several servers (chosen by a ``postgresql://`` URL).  ``syncmode`` names when writes reach the
disk.  Nothing above this package imports ``sqlite3``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError
from .engine import Engine
from .postgresql.url import is_url, masked
from .syncmode import IMMEDIATE, SyncMode, parse_sync_mode


async def open_engine(database: str, read_only: bool = False, sync_mode: Optional[SyncMode] = None,
                      cache_size: Optional[int] = None, mirror: bool = False,
                      postgresql: Optional[Dict[str, Any]] = None) -> Engine:
    """The engine a server uses for ``database``, inside the running event loop.

    A ``postgresql://`` or ``postgres://`` URL: ``PostgreSQLEngine`` (``postgresql``:
    its ``pool_size``, ``connect_timeout``, ``lock_timeout``, ``outage_wait``); a buffered sync mode or a
    mirror is refused there (``ConfigError``).  Anything else is a SQLite file: writes
    grouped and committed per ``sync_mode`` (default immediate) unless read-only, one
    coherence check per loop turn, at most ``cache_size`` bytes of cached facts
    (default: the engine's).  ``mirror``: the file is written only by a mirror, one
    fsync'd transaction per batch it copies (the engine is then also a
    ``MirrorTarget``)."""
    check_database_options(database, sync_mode, mirror)
    if is_url(database):
        from .postgresql.engine import PostgreSQLEngine
        return await PostgreSQLEngine.open(database, read_only=read_only, **(postgresql or {}))
    return _open_sqlite(database, read_only, sync_mode, cache_size, mirror)


def check_database_options(database: str, sync_mode: Optional[SyncMode], mirror: bool,
                           sources: Optional[Mapping[str, str]] = None) -> None:
    """What a database cannot be combined with (``ConfigError``): a PostgreSQL database
    has its own durability (no buffered sync mode) and holds no mirror's copy.
    ``sources``: where each setting came from, by name (``"flag --mirror"``), for the
    message; without them the message shows the database (its password masked)."""
    if not is_url(database):
        return

    def where(name: str) -> str:
        return " (from %s)" % sources[name] if sources else ""

    shown = where("database") if sources else " (%s)" % masked(database)
    if sync_mode is not None and sync_mode.buffered:
        raise ConfigError("sync_mode %s%s holds values in one process and cannot be shared: with a PostgreSQL "
                          "database%s PostgreSQL's own durability applies (synchronous_commit)"
                          % (sync_mode, where("sync_mode"), shown))
    if mirror:
        raise ConfigError("a mirror%s keeps its copy in a SQLite file, not in a PostgreSQL database%s"
                          % (where("mirror"), shown))


def _open_sqlite(database: str, read_only: bool, sync_mode: Optional[SyncMode], cache_size: Optional[int],
                 mirror: bool) -> Engine:
    from .sqlite.cache import DEFAULT_BUDGET
    from .sqlite.database import SQLiteDatabase
    from .sqlite.engine import SQLiteEngine

    mode = sync_mode or parse_sync_mode(IMMEDIATE)
    buffered = mode.buffered and not read_only and not mirror
    db = SQLiteDatabase(database, read_only=read_only, synchronous="NORMAL" if buffered else "FULL",
                        exclusive=buffered, background_checkpoints=not buffered,
                        cache_size=DEFAULT_BUDGET if cache_size is None else cache_size, mirror=mirror)
    try:
        engine = SQLiteEngine(db, mirror=mirror)
    except BaseException:
        db.close()
        raise
    engine.cache.recheck_later = asyncio.get_running_loop().call_soon
    if not read_only and not mirror:
        db.use_group_commit(mode)
    return engine
