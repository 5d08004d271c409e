"""bitbake's ``prserv.serv``: the server class, its daemons, and the cooker's functions.

A facade with bitbake's names; the code lives in ``prserv.server`` (the server),
``prserv.runtime`` (processes, pidfiles, the cooker's private server) and
``prserv.cli.bitbake_prserv`` (``start_daemon``/``stop_daemon``, which print as
bitbake's do).
"""

from typing import Any

from .cli.bitbake_prserv import start_daemon, stop_daemon
from .errors import PRServiceConfigError
from .runtime import cooker
from .runtime.cooker import PRServSingleton, auto_shutdown, auto_start, connect, is_local_special, ping
from .runtime.daemon import PIDPREFIX, is_running
from .server.prserver import PRServer

__all__ = [
    "PIDPREFIX", "PRServSingleton", "PRServer", "PRServiceConfigError", "auto_shutdown", "auto_start",
    "connect", "is_local_special", "is_running", "ping", "singleton", "start_daemon", "stop_daemon",
]


def __getattr__(name: str) -> Any:
    """``singleton``: the cooker's running private server (it changes, so it is looked up)."""
    if name == "singleton":
        return cooker.singleton
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
