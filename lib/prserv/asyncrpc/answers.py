"""Held answers: the queue of a session's answers waiting on their gates.

A request's answer may have to wait for something before it is sent -- its
``Gate``, such as the commit that covers the value it reports
(``AsyncServerConnection.answer_gate``) -- while the session already handles the
next requests.  ``HeldAnswers`` (a base of ``AsyncServerConnection``) keeps those
answers in request order and sends each as soon as its gate and every answer before
it allow: from the gate's callback when the transport takes it at once, else from
one sender task.  A gate that fails replaces its answer and all those behind it with
one invoke-error, and the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Deque, Optional, Tuple

from . import protocol
from .connection import Connection
from .exceptions import ConnectionClosedError

Gate = Any
"""What an answer waits for: ``done()``, ``exception()``, ``add_done_callback(fn)``."""


async def _completion(gate: Gate) -> None:
    """Wait until ``gate`` is done (without cancelling it if we are cancelled)."""
    if gate.done():
        return
    waiter = asyncio.get_running_loop().create_future()
    gate.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
    await waiter


class HeldAnswers:
    """A session's answers held back behind their gates, sent in request order.

    The session's ``__init__`` sets the state below (one place per connection, no
    call of its own); its request path sends an answer directly when no gate holds
    it and nothing is held (``_held`` empty, ``_sender`` None), else through
    ``_send``."""

    max_held_answers = 1024
    """Answers held back at most; beyond, reading this client's requests waits."""

    connection: Connection
    logger: logging.LoggerAdapter
    _held: Deque[Tuple[Optional[Gate], Any]]
    """(gate or None, answer), oldest first: ``collections.deque()`` to begin with."""
    _watched_gate: Optional[Gate]
    """The gate ``_release_held`` waits on (its callback is added once); None at first."""
    _sender: "Optional[asyncio.Task]"
    """The task sending held answers when they cannot leave at once; None at first."""
    _all_sent_waiter: "Optional[asyncio.Future]"
    """Set when someone waits for the queue to empty (``_all_sent``); None at first."""
    _failed: bool
    """A gate failed: nothing more is sent but the invoke-error; False at first."""

    @property
    def idle(self) -> bool:
        """No answer is waiting to be sent (the client is not owed anything)."""
        return not self._held and self._sender is None

    async def _send(self, response: Any, gate: Optional[Gate]) -> None:
        """Send now if nothing is held back, else hold it behind the others."""
        if self._failed:
            return                          # the session is ending with an invoke-error
        if gate is None and not self._held and self._sender is None:
            await self.connection.send_message(response)
            return
        self._held.append((gate, response))
        self._release_held()
        if len(self._held) >= self.max_held_answers:
            await self._all_sent()          # a peer not reading: stop taking its requests

    def _release_held(self, _gate: Any = None) -> None:
        """Send the held answers whose gates completed, in order, right now (a gate's
        callback: no loop turn in between); a task takes over if the transport
        cannot take them without waiting."""
        while self._held and self._sender is None:
            gate, response = self._held[0]
            if gate is not None and not gate.done():
                if gate is not self._watched_gate:
                    self._watched_gate = gate
                    gate.add_done_callback(self._release_held)
                return
            if gate is not None and gate.exception() is not None:
                self._fail_held(gate.exception())
                return
            try:
                sent = self.connection.send_message_now(response)
            except ConnectionClosedError:
                self._held.clear()
                break
            if not sent:                   # slow peer, or a transport that only awaits
                self._sender = asyncio.get_running_loop().create_task(self._send_held())
                return
            self._held.popleft()
        if not self._held:
            self._wake_all_sent()

    async def _send_held(self) -> None:
        """The slow path of ``_release_held``: await each gate and each send."""
        try:
            while self._held:
                gate, response = self._held[0]
                if gate is not None:
                    await _completion(gate)
                    if gate.exception() is not None:
                        self._sender = None
                        self._fail_held(gate.exception())
                        return
                await self.connection.send_message(response)
                self._held.popleft()
        except ConnectionClosedError:
            self._held.clear()
        finally:
            self._sender = None
        self._wake_all_sent()

    def _fail_held(self, exc: BaseException) -> None:
        """A gate failed: its answer and the ones behind it are never sent; the client
        gets an invoke-error and the connection is closed."""
        self._held.clear()
        self._failed = True
        message = "request failed: %s" % exc
        self.logger.error(message)
        self._sender = asyncio.get_running_loop().create_task(self._send_error_and_close(message))

    async def _send_error_and_close(self, message: str) -> None:
        try:
            with contextlib.suppress(ConnectionClosedError, OSError):
                await self.connection.send_message(protocol.invoke_error(message))
            await self.connection.close()
        finally:
            self._sender = None
            self._wake_all_sent()

    async def _all_sent(self) -> None:
        """Wait until no answer is held back."""
        if not self._held and self._sender is None:
            return
        if self._all_sent_waiter is None:
            self._all_sent_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._all_sent_waiter)

    def _wake_all_sent(self) -> None:
        waiter, self._all_sent_waiter = self._all_sent_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send_held_answers(self) -> None:
        """At the end of a session: let the held answers go out first."""
        if not self._held and self._sender is None:
            return
        with contextlib.suppress(ConnectionClosedError, OSError):
            await self._all_sent()
