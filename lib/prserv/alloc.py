"""get-pr orchestration: the local table, and (later) an upstream server.

Without an upstream an allocation never awaits, so it is atomic within this event
loop; ``PRTable.get_value`` makes it atomic across processes (write transaction).
"""

from __future__ import annotations

from typing import Optional

from .db import PRTable


class Allocator:
    def __init__(self, table: PRTable, upstream: Optional[object] = None) -> None:
        self.table = table
        self.upstream = upstream

    async def get_pr(self, version: str, pkgarch: str, checksum: str, history: bool) -> str:
        return self.table.get_value(version, pkgarch, checksum, history)

    async def close(self) -> None:
        pass
