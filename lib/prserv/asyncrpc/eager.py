"""Run a coroutine at once, in the caller, and make a task only if it has to wait.

Most requests of a PR server never wait for anything: a lookup reads memory and
answers.  Starting a task per request costs a future, a loop callback and a task
step each time, which is a large share of a request's CPU time.  ``start_eagerly``
runs the coroutine synchronously up to its first real suspension; only then does
the rest continue in a task (what Python 3.12's eager task factory does, which
bitbake's Python 3.9 floor does not have).

The rule for code run so: up to its first suspension it runs in the caller's
context -- a plain callback with no current task, or some other task -- so it must
not use what acts on the current task (``asyncio.wait_for``, ``asyncio.timeout``,
``asyncio.current_task``, ``TaskGroup``).  Deadlines use ``deadline.within``;
``tests/test_eager.py`` holds the library to this.
"""

from __future__ import annotations

import asyncio
import collections.abc
from typing import Any, Coroutine, Union


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
    return asyncio.get_running_loop().create_task(_Continuation(coro, yielded))


class _Continuation(collections.abc.Coroutine):
    """A coroutine already started, made the coroutine of a task.

    The task's first step gets the future the coroutine is waiting for, as if the
    task had started it.  A task cancelled before its first step throws into its
    coroutine at once: that goes to the coroutine where it waits, after the future
    it waits for is cancelled (what cancelling a waiting task does), so its
    ``finally`` and ``async with`` blocks run and what it started is cancelled.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._first: Any = [yielded]        # a list: "not replayed yet" even for None

    def send(self, value: Any) -> Any:
        first, self._first = self._first, None
        if first is not None:
            return first[0]
        return self._coro.send(value)

    def throw(self, exc: Any, *args: Any) -> Any:  # type: ignore[override]
        first, self._first = self._first, None
        if first is not None and isinstance(first[0], asyncio.Future):
            first[0].cancel()
        return self._coro.throw(exc, *args)

    def close(self) -> None:
        self._coro.close()

    def __next__(self) -> Any:
        return self.send(None)

    def __await__(self) -> "_Continuation":
        return self

    __iter__ = __await__


def finish_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that must not wait, run to its end here and now.

    For synchronous facades over code that is asynchronous in general but never
    suspends in the case at hand (a storage engine that reads a local file).  If it
    does suspend, it is closed and ``RuntimeError`` says so: without an event loop
    nobody would ever resume it.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("%s waited for something; it cannot run without an event loop"
                       % getattr(coro, "__qualname__", coro))
