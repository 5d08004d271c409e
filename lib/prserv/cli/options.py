"""The server settings as command-line options, made from ``runtime.settings.SETTINGS``.

bitbake's ``--host``/``--port`` pair is the one addition: it names one listen
address, added to ``--bind``'s.  Unset options fall through to the environment, the
config file, then the defaults.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from ..runtime.settings import (DEFAULT_HOST, DEFAULT_PORT, REPEATED, SETTINGS, SWITCH, Config,
                                describe_default, load_config)

LIMITS_TITLE = "limits (per connection; see README)"


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Every server setting's option (no defaults here: see the module docstring)."""
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file with server settings (default: $PRSERV_CONFIG)")
    parser.add_argument("--host", help="ip address to bind (default: %s)" % DEFAULT_HOST)
    parser.add_argument("--port", type=int, help="port number (default: %d)" % DEFAULT_PORT)
    limits = parser.add_argument_group(LIMITS_TITLE)
    for setting in SETTINGS:
        group = limits if setting.limit else parser
        help_text = "%s (default: %s; %s)" % (setting.help, describe_default(setting), setting.env)
        if setting.kind == SWITCH:
            group.add_argument(*setting.options, dest=setting.name, action="store_const", const=True,
                               help=help_text)
        elif setting.kind == REPEATED:
            group.add_argument(*setting.options, dest=setting.name, action="append",
                               metavar=setting.metavar, help=help_text)
        else:
            group.add_argument(*setting.options, dest=setting.name, metavar=setting.metavar,
                               help=help_text)


def config_from_args(args: argparse.Namespace) -> Config:
    """Settings from parsed options layered over environment, file and defaults."""
    flags: Dict[str, Any] = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
    bind: Optional[List[str]] = None
    if args.host is not None or args.port is not None:
        host = args.host if args.host is not None else DEFAULT_HOST
        port = args.port if args.port is not None else DEFAULT_PORT
        bind = ["[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)]
    if flags["bind"]:
        bind = (bind or []) + flags["bind"]
    flags["bind"] = bind
    return load_config(flags, config_file=args.config)
