"""A deadline for one awaitable that is valid wherever a coroutine runs.

``asyncio.wait_for`` and ``asyncio.timeout`` cancel the *current task* when time is
up, and since Python 3.12 ``wait_for`` is built on ``timeout``, which refuses to
run without one ("Timeout should be used inside a task").  A request handler does
not always have a task of its own: ``eager.start_eagerly`` runs it up to its first
suspension straight from ``data_received`` (no current task at all) or from the
session's task (the wrong task to cancel), and only the rest in a task.

``within`` runs the awaited work in a task of its own and cancels *that* task when
the deadline passes (what ``wait_for`` did up to Python 3.11), so it behaves the
same in every context and on every Python from 3.9.  Library code uses it for
every deadline; ``tests/test_eager.py`` rejects the task-only APIs elsewhere.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Optional, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: Optional[float]) -> T:
    """``await awaitable``, or ``asyncio.TimeoutError`` once ``timeout`` seconds passed.

    ``timeout`` None or negative: no deadline.  On timeout the work is cancelled and
    has finished (its clean-up ran) before the error is raised; if the caller is
    cancelled, the work is cancelled with it and the cancellation propagates.
    """
    if timeout is None or timeout < 0:
        return await awaitable
    work = asyncio.ensure_future(awaitable)
    expired = False

    def expire() -> None:
        nonlocal expired
        if not work.done():
            expired = True
            work.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await work
    except asyncio.CancelledError:
        if expired and work.cancelled() and not _caller_cancelled():
            raise asyncio.TimeoutError("no result within %g s" % timeout) from None
        raise
    finally:
        timer.cancel()


def _caller_cancelled() -> bool:
    """Whether the task running us was cancelled too (knowable from Python 3.11 on;
    before, a cancellation racing the deadline is reported as the timeout)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return bool(cancelling is not None and cancelling())
