"""What a process serving another server's pages asks that server (its parent) while
it runs: the state of its mirror and of its upstream (``runtime.webprocess``).

The parent listens on a private unix socket for this; one connection is kept and
opened again when it breaks.  When the parent cannot be asked, the state is unknown
(None), never an error of the page.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ..asyncrpc.exceptions import AsyncRPCError
from ..client import PRAsyncClient
from ..errors import PRServiceError

TIMEOUT = 2.0
"""Seconds the parent has to answer (it is the get-pr server: it answers at once)."""


class ParentState:
    """The mirror status and upstream state of the server at ``address``."""

    def __init__(self, address: str, timeout: float = TIMEOUT) -> None:
        self.address = address
        self.client = PRAsyncClient(timeout=timeout, outages=None)
        self._connected = False

    async def read(self) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
        """(mirror status, upstream state) as the status shows them; (None, None) if
        the parent did not answer.  The upstream state's ``down`` is not known here
        (None): ``get-stats`` does not say it."""
        try:
            if not self._connected:
                await self.client.connect_address(self.address)
                self._connected = True
            mirror = await self.client.mirror_status()
            upstream = (await self.client.get_stats()).get("upstream")
        except (OSError, ConnectionError, ValueError, AsyncRPCError, PRServiceError):
            await self.client.disconnect()
            return None, None
        if isinstance(upstream, dict):
            upstream = {"address": upstream.get("address"), "down": None,
                        **{k: v for k, v in upstream.items() if k != "address"}}
        return mirror, upstream

    async def close(self) -> None:
        await self.client.close()
