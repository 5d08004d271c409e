"""Where PR values are kept: the engine interface and its engines.

``engine`` defines what the server asks of a database (``Engine``); ``sqlite`` is
the engine for bitbake's SQLite files.  ``syncmode`` names when writes reach the
disk.  Nothing above this package imports ``sqlite3``.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from .engine import Engine
from .syncmode import IMMEDIATE, SyncMode, parse_sync_mode


def open_engine(database: str, read_only: bool = False, sync_mode: Optional[SyncMode] = None,
                cache_size: Optional[int] = None, mirror: bool = False) -> Engine:
    """The engine a server uses for ``database`` (a SQLite file path), inside the
    running event loop: writes grouped and committed per ``sync_mode`` (default
    immediate) unless read-only, one coherence check per loop turn, at most
    ``cache_size`` bytes of cached facts (default: the engine's).  ``mirror``: the
    file is written only by a mirror, one fsync'd transaction per batch it copies
    (the engine is then also a ``MirrorTarget``)."""
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
