"""What SIGHUP reloads in a serving process: its log files, then its access rules.

The asyncrpc layer only calls a server's ``on_reload`` hooks on SIGHUP
(``asyncrpc.process``); ``reload_on_sighup`` adds the runtime's, before the server
serves.  Open connections keep what they were granted.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..access import AccessRules
from ..asyncrpc.lifecycle import AsyncServer
from ..errors import PRServiceError
from .logs import reopen_log_files


def reload_on_sighup(server: AsyncServer, access_reloader: Optional[Callable[[], AccessRules]] = None) -> None:
    """On SIGHUP, ``server`` reopens its log files (logrotate) and, given
    ``access_reloader`` (reads the rules again from where they came from), replaces
    its access rules."""
    server.on_reload.append(lambda: reopen_logs(server))
    if access_reloader is not None:
        server.on_reload.append(lambda: reload_access(server, access_reloader))


def reopen_logs(server: AsyncServer) -> None:
    """Reopen every log file the server's logger writes to."""
    reopened = reopen_log_files(server.logger)
    server.logger.info("SIGHUP: reopened %d log file(s)", reopened)


def reload_access(server: AsyncServer, access_reloader: Callable[[], AccessRules]) -> None:
    """Read the access rules again; a rule that does not parse leaves the old rules
    in force."""
    try:
        rules = access_reloader()
    except (ValueError, OSError, PRServiceError) as exc:
        server.logger.error("SIGHUP: access rules not reloaded, the previous ones stay: %s", exc)
        return
    server.access = rules
    server.logger.info("SIGHUP: access rules: %s", rules.describe())
