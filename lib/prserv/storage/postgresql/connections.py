"""The engine's asyncpg pool: how its connections are made and kept.

One bounded pool per server (``pool_size``), no connection kept while idle, every
connection opened through ``hosts.HostConnector`` (one bounded attempt per host of a
multi-host URL), with this engine's session settings: ``lock_timeout``, and
``plan_cache_mode = force_generic_plan`` (the lookups are index lookups whatever the
package; with statistics PostgreSQL would otherwise judge a package it has no
figures for cheaper to plan afresh on every request than to run the shared plan).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Awaitable, Callable, Optional

from ...errors import DatabaseError
from ...log import logger
from .errors import cause, driver, driver_errors
from .hosts import HostConnector
from .url import hide_in, masked


def in_task(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Run the coroutine method in a task of its own.  A request may start eagerly,
    outside any task (``prserv.asyncrpc.eager``), and asyncpg uses deadlines that need
    one (``asyncio.timeout``); cancelling the caller cancels the task."""
    @functools.wraps(method)
    async def in_its_task(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().create_task(method(*args, **kwargs))
    return in_its_task


async def open_pool(url: str, read_only: bool, pool_size: int, lock_timeout: float) -> Any:
    """A pool for ``url`` (no connection opened yet: see ``first_connection``)."""
    asyncpg = driver()
    settings = {"lock_timeout": str(int(lock_timeout * 1000)), "application_name": "prserv",
                "plan_cache_mode": "force_generic_plan"}
    if read_only:
        settings["default_transaction_read_only"] = "on"
    # No connection is kept open while idle (min_size 0): asyncpg would otherwise
    # reopen one in the background during an outage, logging a traceback per try.
    return await asyncpg.create_pool(url, min_size=0, max_size=max(1, pool_size), server_settings=settings,
                                     connection_class=connection_class(asyncpg),
                                     connect=HostConnector(url, asyncpg),
                                     init=functools.partial(_listen_for_warnings, masked(url)))


async def first_connection(pool: Any, url: str, connect_timeout: float) -> Any:
    """A connection from ``pool``, retrying for ``connect_timeout`` seconds while the
    database is not up (a server and its database started together)."""
    asyncpg = driver()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    delay = 0.1
    while True:
        try:
            return await pool.acquire()
        except driver_errors(asyncpg) as exc:
            if loop.time() + delay > deadline or isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
                raise DatabaseError("cannot connect to %s within %g s: %s" % (
                    masked(url), connect_timeout, hide_in(cause(exc), url))) from None
            logger.info("waiting for %s: %s", masked(url), hide_in(cause(exc), url))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


_CONNECTION_CLASS: Any = None


def connection_class(asyncpg: Any) -> Any:
    """asyncpg's connection, without the reset query a pool sends on every release (a
    round trip per request): this engine leaves no session state behind -- its locks
    are transaction-scoped, it sets nothing and listens to no channel.  Its one log
    listener (``_listen_for_warnings``) belongs to the connection for its whole life,
    so the pool's warning about listeners left behind is not for it."""
    global _CONNECTION_CLASS
    if _CONNECTION_CLASS is None:
        class Connection(asyncpg.Connection):  # type: ignore[misc, name-defined]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.opened_at = time.monotonic()
                """When it was opened: only a connection opened since an outage began
                can tell that it ended (``Outage.reached``)."""
                self.warning_listener: Any = None

            async def reset(self, *, timeout: Optional[float] = None) -> None:
                await super().reset(timeout=timeout)        # which removes every log listener
                if self.warning_listener is not None:
                    self.add_log_listener(self.warning_listener)

            def get_reset_query(self) -> str:
                return ""

            def _check_listeners(self, listeners: Any, listener_type: str) -> None:
                if listener_type != "log":
                    super()._check_listeners(listeners, listener_type)
        _CONNECTION_CLASS = Connection
    return _CONNECTION_CLASS


async def _listen_for_warnings(shown_url: str, connection: Any) -> None:
    """A pool's ``init``: log PostgreSQL's warning that a commit was acknowledged
    without the synchronous standby's confirmation (a cancelled or interrupted wait):
    that value is on the primary alone, and a failover now would lose it."""
    def warned(_connection: Any, message: Any) -> None:
        detail = getattr(message, "detail", None) or ""
        if "committed locally" in detail:
            logger.error("PostgreSQL %s: %s. %s A value answered now may be lost if the primary fails before "
                         "its standby has it.", shown_url, getattr(message, "message", message), detail)

    connection.warning_listener = warned
    connection.add_log_listener(warned)
