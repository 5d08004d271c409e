"""A mirror's file outside a running mirror: a one-shot copy, and starting afresh.

``copy_once`` pulls a source's feed into a mirror file until it has caught up (a
cron job, or a file to carry to an air-gapped site); the same file can later be
served with ``--mirror`` and continues from its position.  ``reset`` forgets a
mirror's copy after it diverged.  Both hold the file's mirror lock, so neither runs
under a mirror serving the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

from ..errors import DatabaseError
from ..log import logger
from ..server.mirror import DEFAULT_TIMEOUT, Follower
from ..storage import open_engine
from .credentials import credentials_for

Progress = Callable[[int, Optional[int]], None]
"""Called after each batch with (rows copied so far, rows still to copy if known)."""


def copy_once(source: str, database: str, timeout: float = DEFAULT_TIMEOUT,
              progress: Optional[Progress] = None,
              log: Optional[logging.Logger] = None) -> Dict[str, Any]:
    """Copy what ``source`` holds beyond ``database``'s position; a summary of what
    was done.  ``MirrorError`` (diverged, a source answering nonsense), connection
    errors and ``DatabaseError`` propagate."""
    return asyncio.run(_copy(source, os.path.abspath(database), timeout, progress, log or logger))


async def _copy(source: str, database: str, timeout: float, progress: Optional[Progress],
                log: logging.Logger) -> Dict[str, Any]:
    engine = await open_engine(database, mirror=True)
    try:
        follower = Follower(source, engine, log, timeout=timeout, audit_interval=0,
                            credentials=credentials_for(source))  # type: ignore[arg-type]
        started = time.monotonic()
        before = engine.mirror_state()  # type: ignore[attr-defined]
        copied = await follower.copy(progress)
        held = engine.mirror_state()  # type: ignore[attr-defined]
        return {"source": source, "database": database, "rows_copied": copied,
                "seconds": round(time.monotonic() - started, 3), "identity": held.identity,
                "position_before": before.position, "position": held.position,
                "complete": held.complete or follower.complete}
    finally:
        await engine.close()


def reset(database: str) -> int:
    """Forget the mirror copy in ``database`` (rows, positions, the history it
    followed): the next ``--mirror`` copies afresh.  Returns the rows removed."""
    if not os.path.isfile(database):
        raise DatabaseError("no database file %s" % database)
    return asyncio.run(_reset(os.path.abspath(database)))


async def _reset(database: str) -> int:
    engine = await open_engine(database, mirror=True)
    try:
        return engine.reset_mirror()  # type: ignore[attr-defined]
    finally:
        await engine.close()
