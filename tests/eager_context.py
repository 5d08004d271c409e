"""Starting a coroutine the way the server starts a request (for tests)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from prserv.asyncrpc.eager import start_eagerly


def start_from_a_callback(make_coro: Callable[[], Awaitable[Any]]) -> "asyncio.Future[Any]":
    """Start a coroutine as the server starts a request from ``data_received``:
    eagerly, in a plain loop callback with no current task.  The future ends
    with the coroutine's outcome."""
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()

    def copy(source: "asyncio.Future[Any]") -> None:
        if source.cancelled():
            outcome.cancel()
        elif source.exception() is not None:
            outcome.set_exception(source.exception())
        else:
            outcome.set_result(source.result())

    def callback() -> None:
        assert asyncio.current_task() is None
        try:
            result = start_eagerly(make_coro())
        except BaseException as exc:  # raised before the first suspension
            outcome.set_exception(exc)
            return
        if isinstance(result, asyncio.Future):
            outcome.started_task = result               # type: ignore[attr-defined]
            result.add_done_callback(copy)
        else:
            outcome.set_result(result)

    loop.call_soon(callback)
    return outcome
