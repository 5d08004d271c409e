"""Where a serving process logs: a file (reopened after logrotate) or standard error."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys

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


def log_to_file(logger: logging.Logger, logfile: str) -> None:
    """``logger`` writes to ``logfile`` only, not through its parents' handlers (the
    private server of a bitbake build, inside the cooker's process tree)."""
    handler = logging.FileHandler(logfile)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
