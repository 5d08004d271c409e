"""The PR server: bitbake's ``PRServer``, over any storage engine.

It owns the engine, the allocator (with its upstream pool, if chained) and the one
dump that may be in progress; each connection gets a ``PRServerClient``.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from ..asyncrpc import AsyncServer
from ..asyncrpc.connection import Connection
from ..asyncrpc.limits import Limits
from ..errors import BackupError
from ..log import logger
from ..storage import open_engine
from ..storage.engine import Engine
from ..storage.syncmode import IMMEDIATE, SyncMode, parse_sync_mode
from .allocator import Allocator
from .dump import DumpStream
from .session import PRServerClient
from .upstream import DEFAULT_TIMEOUT as DEFAULT_UPSTREAM_TIMEOUT
from .upstream import Upstream


class PRServer(AsyncServer):
    """bitbake's ``PRServer``: a database, optionally read-only, optionally chained."""

    def __init__(self, dbfile: str, read_only: bool = False, upstream: Optional[str] = None,
                 upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
                 sync_mode: Union[str, SyncMode] = IMMEDIATE, limits: Optional[Limits] = None,
                 cache_size: Optional[int] = None) -> None:
        """``cache_size``: bytes of package and checksum facts kept in memory (the
        engine's default when None)."""
        super().__init__(logger, limits)
        self.dbfile = os.path.abspath(dbfile)
        self.read_only = read_only
        self.upstream = upstream or None
        self.upstream_timeout = upstream_timeout
        self.sync_mode = sync_mode if isinstance(sync_mode, SyncMode) else parse_sync_mode(sync_mode)
        self.cache_size = cache_size
        self.engine: Optional[Engine] = None
        self.allocator: Optional[Allocator] = None
        self.dump: Optional[DumpStream] = None
        """The dump being sent (one at a time: a second request is refused)."""
        self._dump_session: Optional[PRServerClient] = None

    def accept_client(self, connection: Connection) -> PRServerClient:
        return PRServerClient(connection, self)

    # -- dumps
    def start_dump(self, session: PRServerClient) -> DumpStream:
        """Begin a dump for ``session`` from a snapshot taken now (in a buffered sync
        mode this commits and pauses for a copy)."""
        if self.dump is not None:
            raise BackupError("a dump is already in progress; try again when it has finished")
        self.dump = DumpStream(self.engine.open_dump(), session.logger, self._dump_ended, session.abort)
        self._dump_session = session
        return self.dump

    def _dump_ended(self, dump: DumpStream) -> None:
        if self.dump is dump:
            self.dump, self._dump_session = None, None

    def end_dump(self, session: Optional[PRServerClient] = None) -> None:
        """Stop the dump in progress (only if ``session`` sends it, when given)."""
        if self.dump is not None and (session is None or session is self._dump_session):
            self.dump.close()

    # -- lifecycle
    async def open_resources(self) -> None:
        self.engine = open_engine(self.dbfile, read_only=self.read_only, sync_mode=self.sync_mode,
                                  cache_size=self.cache_size)
        upstream = Upstream(self.upstream, self.upstream_timeout) if self.upstream else None
        self.allocator = Allocator(self.engine, upstream)

    async def start_serving(self) -> str:
        address = await super().start_serving()
        self.logger.info("Started PRServer with DBfile: %s, Address: %s, PID: %s%s%s",
                         self.dbfile, ", ".join(self.addresses), os.getpid(),
                         " (read-only)" if self.read_only else ", sync mode %s" % self.sync_mode,
                         ", upstream: %s" % self.upstream if self.upstream else "")
        return address

    async def close_resources(self) -> None:
        self.end_dump()
        if self.allocator is not None:
            await self.allocator.close()
            self.allocator = None
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        self.logger.info("PRServer stopped (%s)", self.dbfile)
