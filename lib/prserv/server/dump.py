"""Sending a ``dump-db`` answer: a snapshot's SQL text, streamed as it is read."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Optional

from .. import dumptext
from ..asyncrpc.exceptions import ConnectionClosedError
from ..errors import DatabaseError
from ..storage.engine import DumpSource


class DumpAborted(ConnectionClosedError):
    """The dump failed half-way: the answer cannot be completed.  The sending code
    treats it as a lost connection (it stops sending, on either of its paths) and
    ``on_failure`` closes the session: the client sees a cut answer, then EOF."""


class DumpStream:
    """One ``dump-db`` answer on its way: the pieces, the log lines, the clean-up.

    ``pieces()`` is consumed while the answer is sent (``JSONStream``); whatever
    ends it -- the last piece, an error, ``close()`` when the session ends first --
    releases the snapshot and calls ``on_end`` once (the server's
    one-dump-at-a-time slot).  A database error half-way calls ``on_failure``
    with the reason (the server ends the session) and raises ``DumpAborted``.
    """

    def __init__(self, source: DumpSource, logger: Any, on_end: Callable[["DumpStream"], None],
                 on_failure: Optional[Callable[[str], None]] = None) -> None:
        self.source = source
        self.logger = logger
        self.on_end = on_end
        self.on_failure = on_failure
        self.rows = 0
        self.chars = 0
        self.completed = False
        self._ended = False
        self._started = time.monotonic()
        self._generator = self._pieces()
        logger.info("dump-db: started from a %s", source.description)

    def pieces(self) -> Iterator[str]:
        return self._generator

    def _lines(self) -> Iterator[str]:
        for line in self.source.lines():
            if line.startswith("INSERT INTO "):
                self.rows += 1
            yield line

    def _pieces(self) -> Iterator[str]:
        try:
            for piece in dumptext.answer_pieces(self._lines()):
                self.chars += len(piece)
                yield piece
            self.completed = True
        except DatabaseError as exc:
            self.logger.error("dump-db: failed after %d rows: %s", self.rows, exc)
            if self.on_failure is not None:
                self.on_failure("dump failed: %s" % exc)
            raise DumpAborted("dump failed: %s" % exc) from exc
        finally:
            self._end()

    def close(self) -> None:
        """Stop the dump now (its session ended); a no-op once it has ended."""
        self._generator.close()         # runs _pieces' finally if it started
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.source.close()
        seconds = time.monotonic() - self._started
        if self.completed:
            self.logger.info("dump-db: sent %d rows, %d bytes in %.2f s", self.rows, self.chars, seconds)
        else:
            self.logger.warning("dump-db: stopped after %d rows, %d bytes, %.2f s (the client went away?)",
                                self.rows, self.chars, seconds)
        self.on_end(self)
