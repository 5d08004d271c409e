"""The event loop a serving process runs: asyncio's, or uvloop's when installed.

uvloop (libuv under asyncio's interface) does the same work with less CPU: for a
build farm's thousands of short connections a minute that is most of a server's
cost.  ``pip install prserv`` brings it; it is imported only here, when a loop is
made: ``lib/prserv`` must stay importable with the standard library alone (bitbake's
copy of it runs on asyncio).

``event_loop`` choices: ``auto`` (uvloop if it can be imported, else asyncio),
``asyncio``, ``uvloop`` (an error without it).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Tuple

AUTO, ASYNCIO, UVLOOP = "auto", "asyncio", "uvloop"
CHOICES: Tuple[str, ...] = (AUTO, ASYNCIO, UVLOOP)
EXTRA = "speed"


class LoopUnavailable(ValueError):
    """``uvloop`` was asked for and is not installed."""


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """``asyncio`` or ``uvloop``: what ``choice`` means on this machine."""
    if choice not in CHOICES:
        raise ValueError("event_loop must be one of %s, not %r" % (", ".join(CHOICES), choice))
    if choice == AUTO:
        return UVLOOP if uvloop_available() else ASYNCIO
    if choice == UVLOOP and not uvloop_available():
        raise LoopUnavailable("event_loop uvloop needs uvloop: pip install 'prserv[%s]'" % EXTRA)
    return choice


def new_event_loop(choice: str = AUTO) -> asyncio.AbstractEventLoop:
    if resolve(choice) == UVLOOP:
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
