"""The serving process: an event loop with its signals, here or in a forked child.

``ServingProcess`` (a base of ``AsyncServer``) runs a server's
``start_serving`` / ``serve`` in this process (``serve_forever``) or in a forked
child (``serve_as_process``), on the event loop ``event_loop`` names.  SIGTERM,
SIGINT and SIGQUIT stop it (``request_stop``); SIGHUP calls the ``on_reload`` hooks
in the order they were added -- what a reload means (log files reopened, access
rules read again) is the runtime's (``prserv.runtime``), not this layer's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
from typing import Any, Callable, List, Optional

from . import loops
from .exceptions import ServerError
from .limits import raise_open_file_limit

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
HANDLED_SIGNALS = STOP_SIGNALS + (signal.SIGHUP,)


class ServingProcess:
    """How a server runs as a process.  The server (``AsyncServer``) provides
    ``start_serving``, ``stop_serving``, ``serve``, ``request_stop``, ``logger``,
    ``event_loop`` and ``addresses``, and starts ``on_reload`` empty."""

    logger: logging.Logger
    event_loop: str
    loop: Optional[asyncio.AbstractEventLoop]
    address: Optional[str]
    addresses: List[str]
    process: Optional[multiprocessing.process.BaseProcess]
    on_reload: List[Callable[[], None]]
    """Called in order on SIGHUP, in the serving process (the runtime adds them
    before serving: reopen the log files, read the access rules again)."""

    def _create_loop(self) -> None:
        # A loop inherited from a parent process (or created by a client in this
        # one) must not be reused.
        self.loop = loops.new_event_loop(self.event_loop)
        asyncio.set_event_loop(self.loop)

    def _install_signal_handlers(self) -> None:
        """Before anyone learns the server is up: a signal sent as soon as it is must
        find its handler (SIGHUP's default action would kill the process)."""
        for sig in STOP_SIGNALS:
            self.loop.add_signal_handler(sig, self._on_stop_signal, sig)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _run(self, started: Callable[[], None], failed: Callable[[BaseException], None]) -> None:
        """Run the loop once, from start to stop: start serving, install the signal
        handlers, tell ``started()``, serve until stopped.  One run, because uvloop
        handles signals only while its loop runs and drops one that comes between
        two runs (a SIGTERM sent as soon as the server said it was ready).  Signals
        held back by the caller (``pthread_sigmask``) are let through once the
        handlers are in place.  ``failed(exc)``: start-up failed (then raised)."""
        try:
            self.loop.run_until_complete(self._serve_from_start(started, failed))
        finally:
            for sig in HANDLED_SIGNALS:
                self.loop.remove_signal_handler(sig)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _serve_from_start(self, started: Callable[[], None],
                                failed: Callable[[BaseException], None]) -> None:
        try:
            await self.start_serving()
        except BaseException as exc:
            failed(exc)
            raise
        self._install_signal_handlers()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        try:
            started()
        except BaseException:
            await self.stop_serving()
            raise
        # Everything allocated so far (modules, caches) lives as long as the server:
        # leaving it out of the cyclic GC's full collections keeps them short.
        gc.freeze()
        await self.serve()

    def _on_reload_signal(self) -> None:
        for hook in list(self.on_reload):
            hook()

    def _on_stop_signal(self, sig: int) -> None:
        self.logger.debug("got signal %d, stopping", sig)
        self.request_stop()

    def serve_forever(self, ready: Optional[Callable[[], None]] = None) -> None:
        """Serve in this process until SIGTERM, SIGINT or SIGQUIT.

        ``ready()`` is called once listening (``self.address`` is then set).
        """
        raise_open_file_limit(self.logger)
        self._create_loop()
        self._run(ready or (lambda: None), lambda exc: None)

    def serve_as_process(self, *, prefunc: Optional[Callable[..., None]] = None, args: tuple = (),
                         log_level: Optional[int] = None) -> multiprocessing.process.BaseProcess:
        """Serve in a forked child; return once it is listening (``self.address`` set).

        Raises ``ServerError`` (with the child's reason) if the child cannot start.
        """
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        # The child inherits a blocked SIGTERM, so a terminate() sent before its
        # handler is installed is delivered only once it can be handled cleanly.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        try:
            self.process = context.Process(target=self._child_main,
                                           args=(sender, prefunc, args, log_level))
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        sender.close()
        try:
            addresses, error = receiver.recv()
        except EOFError:
            addresses, error = None, "server process exited during start-up"
        finally:
            receiver.close()
        if error is not None:
            self.process.join()
            raise ServerError("server failed to start: %s" % error)
        self.addresses = addresses
        self.address = addresses[0]
        return self.process

    def _child_main(self, sender: Any, prefunc: Optional[Callable[..., None]], args: tuple,
                    log_level: Optional[int]) -> None:
        raise_open_file_limit(self.logger)
        self._create_loop()

        def started() -> None:
            sender.send((self.addresses, None))
            sender.close()
            if prefunc is not None:
                prefunc(self, *args)
            if log_level is not None:
                self.logger.setLevel(log_level)

        start_failed = False

        def failed(exc: BaseException) -> None:
            nonlocal start_failed
            start_failed = True
            sender.send((None, "%s: %s" % (type(exc).__name__, exc)))
            sender.close()

        try:
            self._run(started, failed)
        except Exception:
            if start_failed:
                raise SystemExit(1) from None       # the parent reports it
            raise
