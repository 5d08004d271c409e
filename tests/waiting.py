"""Waiting in a test for what another task, thread or process does next: polled, with
a deadline, and an assertion naming what never came."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


async def until(condition: Callable[[], bool], timeout: float = 10.0,
                seen: Callable[[], object] = lambda: None) -> None:
    """Return once ``condition()`` holds; ``AssertionError`` with ``seen()`` (what there
    was instead) if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("not within %g s; seen: %r" % (timeout, seen()))
        await asyncio.sleep(0.01)
