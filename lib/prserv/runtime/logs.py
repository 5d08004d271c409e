"""Where a serving process logs: a file (reopened after logrotate) or standard error."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import logging.handlers
import sys
import time
from typing import List, Optional

from ..asyncrpc.session import Session
from .settings import STDERR_LOG

LOG_FORMAT = "%(asctime)-15s %(levelname)s %(message)s"


def configure_logging(log_file: str, log_level: str) -> None:
    """Send the root logger to ``log_file`` (``-``: standard error) at ``log_level``.

    A ``WatchedFileHandler`` reopens the file when logrotate moves it away.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):   # its file may be closed already
            handler.close()                              # (handlers inherited by a daemon)
    if log_file == STDERR_LOG:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, log_level))
    # This process only serves, and LOG_FORMAT shows neither source lines nor thread
    # or process names: skip collecting them for each record (the logging module's
    # documented switches; a quarter of the cost of a connection's INFO line).
    logging._srcfile = None                 # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if isinstance(Session.info_line, InfoLine):
        Session.info_line.flush()
    Session.info_line = InfoLine(handler) if root.isEnabledFor(logging.INFO) else None


class InfoLine:
    """The line every connection ends with, written to ``handler`` exactly as
    ``LOG_FORMAT`` renders it, but cheaply: no LogRecord or adapter, the timestamp's
    seconds formatted once per second, and lines written in batches -- one write
    (one wake-up of whoever reads the log) per ``FLUSH_SECONDS`` or ``BATCH_LINES``
    lines instead of one per connection.  Any other record flushes the batch first
    (a filter on the handler), so the log keeps its order; so does ``flush``
    (shutdown).  A rotated file is noticed as the handler itself notices it."""

    FLUSH_SECONDS = 0.1
    BATCH_LINES = 256

    def __init__(self, handler: logging.StreamHandler) -> None:
        self.handler = handler
        self._second = -1
        self._stamp = ""
        self._lines: List[str] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        handler.addFilter(self._before_other_records)
        atexit.register(self.flush)

    def __call__(self, message: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self._lines.append("%s,%03d INFO %s\n" % (self._stamp, int((now - second) * 1000), message))
        if len(self._lines) >= self.BATCH_LINES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:            # no loop running: nobody to flush later
                self.flush()

    def _before_other_records(self, record: logging.LogRecord) -> bool:
        if self._lines:
            self.flush()
        return True

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        handler = self.handler
        reopen = getattr(handler, "reopenIfNeeded", None)
        handler.acquire()
        try:
            if reopen is not None:
                reopen()
            handler.stream.write("".join(lines))
            handler.stream.flush()
        except (OSError, ValueError):
            pass                            # as logging does: a log that cannot be written stops nothing
        finally:
            handler.release()


def log_to_file(logger: logging.Logger, logfile: str) -> None:
    """``logger`` writes to ``logfile`` only, not through its parents' handlers (the
    private server of a bitbake build, inside the cooker's process tree)."""
    handler = logging.FileHandler(logfile)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False


def reopen_log_files(logger: logging.Logger) -> int:
    """Reopen the files of the ``FileHandler``s ``logger`` writes through (its own and
    its ancestors'), so a rotated log is left for the new file; returns how many."""
    reopened = 0
    current: Optional[logging.Logger] = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
                reopened += 1
        current = current.parent if current.propagate else None
    return reopened
