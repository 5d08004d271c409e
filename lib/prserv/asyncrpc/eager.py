"""Run a coroutine at once, in the caller, and make a task only if it has to wait.

Most requests of a PR server never wait for anything: a lookup reads memory and
answers.  Starting a task per request costs a future, a loop callback and a task
step each time, which is a large share of a request's CPU time.  ``start_eagerly``
runs the coroutine synchronously up to its first real suspension; only then does
the rest continue in a task (what Python 3.12's eager task factory does, which
bitbake's Python 3.9 floor does not have).
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Generator, Union


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> Union[Any, "asyncio.Task[Any]"]:
    """The coroutine's result if it finished without suspending, else a task finishing it.

    An exception the coroutine raises before suspending propagates to the caller.
    Callers tell the two outcomes apart with ``isinstance(result, asyncio.Future)``,
    so the coroutine itself must not return a future.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return stop.value
    return asyncio.get_running_loop().create_task(_resume(coro, yielded))


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _Resumed(coro, yielded)


class _Resumed:
    """Awaitable continuing a coroutine already started: its first yield is replayed
    to the task driving us, then every send/throw is passed through unchanged (the
    futures it yields reach the task as if it had been awaited from the start)."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation too: passed through to the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
