"""Databases of older bitbake releases (``PRMAIN_nohist`` / ``PRMAIN_hist``): migration.

(Being written: issue 7.)
"""

from __future__ import annotations

from typing import Any, Callable


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
