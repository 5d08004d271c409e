"""Running coroutines eagerly (prserv.asyncrpc.eager)."""

from __future__ import annotations

import asyncio

import pytest

from prserv.asyncrpc.eager import start_eagerly


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


async def test_bare_yield_to_the_loop_is_passed_through():
    async def yields_twice() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "done"

    task = start_eagerly(yields_twice())
    assert isinstance(task, asyncio.Task)
    assert await task == "done"
