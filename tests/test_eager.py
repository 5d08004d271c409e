"""Running coroutines eagerly (prserv.asyncrpc.eager), and deadlines valid there
(prserv.asyncrpc.deadline).

A request's coroutine runs up to its first suspension either in a plain loop
callback (``data_received``: no current task) or in the session's task (not the
task that runs the rest of it).  ``asyncio.wait_for`` and ``asyncio.timeout`` need
the current task since Python 3.12; ``within`` must work in both places, on every
Python.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys

import pytest

from prserv.asyncrpc.deadline import within
from prserv.asyncrpc.eager import start_eagerly
from eager_context import start_from_a_callback

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "prserv")


async def _no_wait(log: list) -> str:
    log.append("ran")
    return "answer"


async def test_coroutine_that_never_waits_gives_its_result_synchronously():
    log: list = []
    assert start_eagerly(_no_wait(log)) == "answer"
    assert log == ["ran"]


async def test_coroutine_that_waits_continues_in_a_task_with_awaited_values():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    steps: list = []

    async def two_waits() -> tuple:
        steps.append("before")
        a = await first
        steps.append("between")
        b = await second
        return a, b

    task = start_eagerly(two_waits())
    assert isinstance(task, asyncio.Task)
    assert steps == ["before"]                  # ran up to the first wait, in the caller
    first.set_result(1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert steps == ["before", "between"]
    second.set_result(2)
    assert await task == (1, 2)


async def test_exception_before_the_first_wait_reaches_the_caller():
    async def fails() -> None:
        raise KeyError("early")

    with pytest.raises(KeyError, match="early"):
        start_eagerly(fails())


async def test_exception_after_a_wait_ends_the_task():
    future = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await future
        raise ValueError("late")

    task = start_eagerly(fails_later())
    future.set_result(None)
    with pytest.raises(ValueError, match="late"):
        await task


async def test_exception_set_on_an_awaited_future_is_raised_inside_the_coroutine():
    future = asyncio.get_running_loop().create_future()

    async def catches() -> str:
        try:
            await future
        except OSError as exc:
            return "caught %s" % exc
        return "not raised"

    task = start_eagerly(catches())
    future.set_exception(OSError("boom"))
    assert await task == "caught boom"


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    future = asyncio.get_running_loop().create_future()
    cleanup: list = []

    async def waits_forever() -> None:
        try:
            await future
        finally:
            cleanup.append("finally ran")

    task = start_eagerly(waits_forever())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleanup == ["finally ran"]
    assert future.cancelled()


async def test_task_cancelled_before_its_first_step_throws_where_the_coroutine_waits():
    """The session may end (and cancel a request's task) before that task ever ran."""
    future = asyncio.get_running_loop().create_future()
    log: list = []

    async def waits() -> None:
        try:
            await future
        except asyncio.CancelledError:
            log.append("cancelled where it waits")
            raise
        finally:
            log.append("finally ran")

    task = start_eagerly(waits())
    task.cancel()                               # before the loop ran the task once
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["cancelled where it waits", "finally ran"]
    assert future.cancelled()                   # what it waited for was cancelled too


async def test_bare_yield_to_the_loop_is_passed_through():
    async def yields_twice() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "done"

    task = start_eagerly(yields_twice())
    assert isinstance(task, asyncio.Task)
    assert await task == "done"


# --------------------------------------------------------------------------- deadlines

class Work:
    """Something to wait for, that records whether it was cancelled and cleaned up."""

    def __init__(self) -> None:
        self.future = asyncio.get_running_loop().create_future()
        self.log: list = []

    async def run(self) -> str:
        try:
            return await self.future
        except asyncio.CancelledError:
            self.log.append("cancelled")
            raise
        finally:
            self.log.append("cleaned up")


async def test_within_gives_the_result_when_started_without_a_task():
    work = Work()
    outcome = start_from_a_callback(lambda: within(work.run(), 5))
    await asyncio.sleep(0)
    work.future.set_result("answer")
    assert await outcome == "answer"
    assert work.log == ["cleaned up"]


async def test_within_times_out_without_a_task_and_the_work_has_finished_first():
    work = Work()
    outcome = start_from_a_callback(lambda: within(work.run(), 0.05))
    with pytest.raises(asyncio.TimeoutError, match="no result within 0.05 s"):
        await outcome
    assert work.log == ["cancelled", "cleaned up"]


async def test_within_passes_the_works_exception_on():
    async def fails() -> None:
        await asyncio.sleep(0)
        raise OSError("refused")

    with pytest.raises(OSError, match="refused"):
        await start_from_a_callback(lambda: within(fails(), 5))


@pytest.mark.parametrize("timeout", [None, -1])
async def test_within_without_a_deadline_just_awaits(timeout):
    work = Work()
    outcome = start_from_a_callback(lambda: within(work.run(), timeout))
    await asyncio.sleep(0.01)
    assert not outcome.done()
    work.future.set_result(7)
    assert await outcome == 7


async def test_cancelling_the_caller_cancels_the_work_and_is_not_a_timeout():
    work = Work()
    outcome = start_from_a_callback(lambda: within(work.run(), 5))
    await asyncio.sleep(0)
    outcome.started_task.cancel()                          # type: ignore[attr-defined]
    with pytest.raises(asyncio.CancelledError):
        await outcome
    assert work.log == ["cancelled", "cleaned up"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is new in Python 3.11")
async def test_caller_cancelled_while_the_timed_out_work_cleans_up_stays_cancelled():
    """The deadline passed and, while the work was still cleaning up, the caller was
    cancelled too: the caller's cancellation must not be swallowed as a timeout."""
    loop = asyncio.get_running_loop()
    cleaning_up = loop.create_future()

    async def slow_to_cancel() -> None:
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            cleaning_up.set_result(None)
            await loop.create_future()          # until cancelled once more
            raise

    caller = loop.create_task(within(slow_to_cancel(), 0.01))
    await cleaning_up                           # the deadline fired
    caller.cancel()                             # and now the caller is cancelled as well
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_within_started_eagerly_in_another_task_cancels_only_the_work():
    """The session's task starts a request eagerly; the request's deadline must not
    cancel the session (what ``asyncio.timeout`` bound to that task would do)."""
    work = Work()
    deadline_hit = asyncio.get_running_loop().create_future()

    async def request() -> str:
        try:
            return await within(work.run(), 0.05)
        except asyncio.TimeoutError:
            return "timed out"

    async def session() -> str:
        request_task = start_eagerly(request())
        assert isinstance(request_task, asyncio.Task)
        request_task.add_done_callback(lambda t: deadline_hit.set_result(t.result()))
        await asyncio.sleep(3600)                           # the session waits for more requests
        return "not reached"

    session_task = asyncio.get_running_loop().create_task(session())
    assert await deadline_hit == "timed out"
    assert not session_task.done()
    session_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await session_task


@pytest.mark.skipif(sys.version_info < (3, 12), reason="wait_for needs a task from Python 3.12 on")
async def test_control_wait_for_fails_where_within_works():
    """The hazard ``within`` exists for, shown in the same context as the tests above."""
    work = Work()
    inner = work.run()
    with pytest.raises(RuntimeError, match="inside a task"):
        await start_from_a_callback(lambda: asyncio.wait_for(inner, 5))
    inner.close()                               # wait_for refused before awaiting it


TASK_ONLY_APIS = {"wait_for", "timeout", "timeout_at", "TaskGroup", "current_task"}
"""asyncio names that need (or act on) the current task."""

RUN_IN_THEIR_OWN_TASK = {
    ("asyncrpc/listeners.py", "_serve_websocket"),   # the websockets library's task per connection
    ("asyncrpc/deadline.py", "_caller_cancelled"),  # called only after within's first wait
}
"""Functions that may use them: each always runs as its own task's coroutine."""


def test_library_uses_task_only_asyncio_apis_only_where_a_task_is_certain():
    found = set()
    for folder, _, files in os.walk(LIB):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            for function in ast.walk(tree):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    used = (node.attr if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                            and node.value.id == "asyncio" else None)
                    if used in TASK_ONLY_APIS:
                        found.add((os.path.relpath(path, LIB), function.name, used))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "asyncio":
                    assert not {a.name for a in node.names} & TASK_ONLY_APIS, path
    allowed = {(path, function) for path, function, _ in found} <= RUN_IN_THEIR_OWN_TASK
    assert allowed, "task-only asyncio API outside a certain task (use deadline.within): %s" % sorted(
        f for f in found if f[:2] not in RUN_IN_THEIR_OWN_TASK)
    assert {(path, function) for path, function, _ in found} == RUN_IN_THEIR_OWN_TASK
