"""What a process serving another server's pages asks that server (its parent) while
it runs: the state of its mirror and of its upstream, and its figures for
``/metrics`` (``runtime.webprocess``).

The parent listens on a private unix socket for this; one connection is kept and
opened again when it breaks.  When the parent cannot be asked, or answers
something malformed, the state is unknown (None), never an error of the page.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Tuple

from ..asyncrpc.exceptions import AsyncRPCError
from ..client import PRAsyncClient
from ..errors import PRServiceError
from .metrics import checked_figures

TIMEOUT = 2.0
"""Seconds the parent has to answer (it is the get-pr server: it answers at once)."""


class ParentState:
    """The mirror status, upstream state and figures of the server at ``address``;
    made on the event loop that asks (its lock belongs to that loop)."""

    def __init__(self, address: str, timeout: float = TIMEOUT) -> None:
        self.address = address
        self.client = PRAsyncClient(timeout=timeout, outages=None)
        self._connected = False
        self._turn = asyncio.Lock()
        """One question at a time on the one connection."""

    async def read(self) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
        """(mirror status, upstream state) as the status shows them; (None, None) if
        the parent did not answer."""
        try:
            async with self._turn:
                await self._connect()
                mirror = await self.client.mirror_status()
                upstream = (await self.client.get_stats()).get("upstream")
        except (OSError, ConnectionError, ValueError, AsyncRPCError, PRServiceError):
            await self._disconnect()
            return None, None
        if isinstance(upstream, dict):
            upstream = {"address": upstream.get("address"), "down": upstream.get("down"),
                        **{k: v for k, v in upstream.items() if k not in ("address", "down")}}
        return mirror, upstream

    async def figures(self) -> Optional[Dict[str, Any]]:
        """The parent's figures as its ``/metrics`` would show them (``metrics.figures``);
        None if it did not answer, or not with figures."""
        try:
            async with self._turn:
                await self._connect()
                answer = await self.client.get_stats(figures=True)
            return checked_figures(answer.get("figures"))
        except (OSError, ConnectionError, ValueError, AsyncRPCError, PRServiceError):
            await self._disconnect()
            return None

    async def _connect(self) -> None:
        if not self._connected:
            await self.client.connect_address(self.address)
            self._connected = True

    async def _disconnect(self) -> None:
        self._connected = False
        self._turn = asyncio.Lock()
        """One question at a time on the one connection."""
        await self.client.disconnect()

    async def close(self) -> None:
        await self.client.close()
