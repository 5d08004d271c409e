"""Backups of a live database: SQL dumps, consistent binary copies, restores.

(Being written: issue 7.)
"""

from __future__ import annotations

from typing import Any, Callable


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
