"""``prserv config --show``: the effective server settings and where each came from."""

from __future__ import annotations

import argparse
from typing import Callable

from .options import add_server_options, config_from_args
from .output import EXIT_OK, Output, exit_statuses


@exit_statuses()
def cmd_config(args: argparse.Namespace, out: Output) -> int:
    config = config_from_args(args)
    print(config.as_json() if out.as_json else config.show(), end="\n" if out.as_json else "",
          file=out.stream)
    return EXIT_OK


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``prserv config`` (``command(name, handler, help)``)."""
    sub = command("config", cmd_config, "print the effective server configuration and its sources")
    sub.add_argument("--show", action="store_true", help="print it (the default action)")
    add_server_options(sub)
