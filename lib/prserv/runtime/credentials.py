"""Where a client's token comes from: a setting, ``PRSERV_TOKEN``, or ``~/.netrc``.

The ``prserv`` command and a server's own outgoing connections (its upstream, a
mirror's source) prove a user with ``USER:TOKEN`` (``prserv.tokens``).  The first
of these that is set wins:

1. the explicit value (``--upstream-token``, ``--mirror-token``, the CLI's
   ``--token``), ``USER:TOKEN``;
2. the environment variable ``PRSERV_TOKEN``, ``USER:TOKEN``;
3. a ``~/.netrc`` entry for the server's host (``machine HOST login USER password
   TOKEN``), as curl and git read it.

None of them: the connection stays anonymous (what its network allows).
"""

from __future__ import annotations

import netrc
import os
from typing import Mapping, Optional, Tuple

from ..asyncrpc.address import ADDR_TYPE_TCP, ADDR_TYPE_UNIX, AddressError, parse_address, split_ws_uri
from ..errors import ConfigError
from ..tokens import parse_credentials

TOKEN_ENV = "PRSERV_TOKEN"


def credentials_for(address: str, explicit: Optional[str] = None, source: str = "setting",
                    environ: Optional[Mapping[str, str]] = None,
                    netrc_file: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """(user, token) for talking to ``address``, or None.  ``ConfigError`` for a value
    that is not ``USER:TOKEN`` (the token itself is never in the message)."""
    environ = os.environ if environ is None else environ
    if explicit:
        return _parsed(explicit, source)
    if environ.get(TOKEN_ENV):
        return _parsed(environ[TOKEN_ENV], "environment %s" % TOKEN_ENV)
    host = _host_of(address)
    if host is None:
        return None
    return _from_netrc(host, netrc_file if netrc_file is not None else os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".netrc"))


def _parsed(text: str, source: str) -> Tuple[str, str]:
    try:
        return parse_credentials(text)
    except ValueError as exc:
        raise ConfigError("credentials from %s: %s (expected USER:TOKEN)"
                          % (source, str(exc).split(", not ")[0])) from None


def _host_of(address: str) -> Optional[str]:
    try:
        kind, args = parse_address(address)
        if kind == ADDR_TYPE_UNIX:
            return None
        if kind == ADDR_TYPE_TCP:
            return str(args[0])
        return str(split_ws_uri(str(args[0]))[0])
    except AddressError:
        return None


def _from_netrc(host: str, path: str) -> Optional[Tuple[str, str]]:
    if not os.path.exists(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise ConfigError("cannot read %s: %s" % (path, getattr(exc, "msg", exc))) from None
    if entry is None or not entry[0] or not entry[2]:
        return None
    return _parsed("%s:%s" % (entry[0], entry[2]), "%s (machine %s)" % (path, host))
