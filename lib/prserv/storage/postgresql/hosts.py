"""Connecting to a PostgreSQL URL one host at a time, each attempt bounded.

A URL may name several hosts (``postgresql://u@h1:5432,h2:5432/db`` or
``?host=/run/a,/run/b``), with ``target_session_attrs=read-write`` to find the
primary among them.  asyncpg tries the hosts in order within one overall timeout,
so a host that drops packets uses all of it and the next host is never tried.
``HostConnector`` gives each host its own bound, as libpq does: the URL's
``connect_timeout`` (which asyncpg would otherwise send to the server as a setting),
else ``HOST_CONNECT_TIMEOUT``.  It tries the host that answered last first: after a
failover, the old primary, still first in the URL, then costs a new connection
nothing once the new primary is known.  asyncpg still checks
``target_session_attrs`` on each host.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, List, Optional, Sequence, Tuple

from ...errors import ConfigError
from .errors import is_outage

HOST_CONNECT_TIMEOUT = 5.0
"""Seconds one host has to accept a connection and finish its start-up."""


def per_host_urls(url: str) -> Tuple[List[str], float]:
    """One URL per host that ``url`` names (``url`` itself, less ``connect_timeout``,
    when it names one host or none), and the bound on each attempt."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    timeout = HOST_CONNECT_TIMEOUT
    kept = []
    for name, value in query:
        if name == "connect_timeout":
            timeout = _connect_timeout(value)
        else:
            kept.append((name, value))
    userinfo, at, hostlist = parts.netloc.rpartition("@")

    def rebuilt(netloc: str, pairs: Sequence[Tuple[str, str]]) -> str:
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=urllib.parse.urlencode(pairs)))

    if "," in hostlist:
        return [rebuilt(userinfo + at + host, kept) for host in hostlist.split(",")], timeout
    hosts = [value for name, value in kept if name == "host"]
    if hostlist or len(hosts) != 1 or "," not in hosts[0]:
        return [rebuilt(parts.netloc, kept)], timeout
    names = hosts[0].split(",")
    ports = [value for name, value in kept if name == "port"]
    port_list = ports[0].split(",") if ports else []
    others = [(name, value) for name, value in kept if name not in ("host", "port")]
    urls = []
    for index, host in enumerate(names):
        pairs = others + [("host", host)]
        if len(port_list) == len(names):
            pairs.append(("port", port_list[index]))
        elif ports:
            pairs.append(("port", ports[0]))
        urls.append(rebuilt(parts.netloc, pairs))
    return urls, timeout


def _connect_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError("connect_timeout=%r in the PostgreSQL URL: not a positive number of seconds" % value)
    return seconds


class HostConnector:
    """asyncpg's ``connect`` for a pool: the hosts of one URL, one bounded attempt each."""

    def __init__(self, url: str, driver: Any) -> None:
        self.urls, self.timeout = per_host_urls(url)
        self.driver = driver
        self.preferred = 0
        """The index of the host that accepted the last connection."""

    async def __call__(self, _dsn: Optional[str] = None, **kwargs: Any) -> Any:
        """A connection to the first host (the one that answered last, then the URL's
        order) that accepts one and matches ``target_session_attrs``."""
        order = [self.preferred] + [index for index in range(len(self.urls)) if index != self.preferred]
        last: Optional[BaseException] = None
        for index in order:
            try:
                connection = await self.driver.connect(self.urls[index], timeout=self.timeout, **kwargs)
            except Exception as exc:
                if not is_outage(exc, self.driver):
                    raise
                last = exc
                continue
            self.preferred = index
            return connection
        assert last is not None
        raise last
