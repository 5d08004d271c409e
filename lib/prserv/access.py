"""Who may connect and who may store values, decided by the client's network address.

bitbake's client sends no credentials (OpenEmbedded calls
``prserv.serv.connect(host, port)``), so a shared server can only tell its build
hosts from everyone else by address.  Two lists of networks decide:

* ``allow``: who may connect at all (empty: everyone);
* ``allow_write``: who, among those, may store values (empty: everyone); the others
  are served as a read-only server serves.

Behind a proxy every connection comes from the proxy's address.  Connections from
``trusted_proxies`` carry the real client's address (the PROXY protocol on TCP,
``X-Forwarded-For`` on websockets); the rules then apply to that address.  Nobody
else can claim an address: a header from any other peer is not read as one.

A unix-socket client is on this host: it may always connect, and may write unless
``allow_write_unix`` is false (the socket file's permissions decide who reaches it).

Addresses compare as what they are: an IPv4-mapped IPv6 address (``::ffff:10.1.2.3``,
what a dual-stack listener reports for an IPv4 client) matches IPv4 networks, and a
network written in that form matches IPv4 clients.  Pure: no sockets, no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_DECISIONS_KEPT = 4096
"""Decisions remembered per address (a farm reconnects from the same few hosts)."""


def parse_networks(items: Iterable[str]) -> Tuple[Network, ...]:
    """Networks from ``10.0.0.0/8``, ``2001:db8::/32``, ``192.0.2.7`` (one address) ...;
    ``ValueError`` naming the first item that is none."""
    networks: List[Network] = []
    for item in items:
        text = item.strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError("%r is not an IP address or network (CIDR such as 10.0.0.0/8 or "
                             "2001:db8::/32)" % item) from None
        networks.append(_unmapped_network(network))
    return tuple(networks)


def _unmapped_network(network: Network) -> Network:
    """``::ffff:10.0.0.0/104`` -> ``10.0.0.0/8``; any other network unchanged."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network("%s/%d" % (mapped, network.prefixlen - 96))
    return network


def parse_address(host: str) -> Optional[Address]:
    """The client's address as compared (IPv4-mapped IPv6 made IPv4, a zone dropped);
    None if ``host`` is not an IP address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AccessRules:
    """The ``allow`` / ``allow_write`` / ``allow_write_unix`` settings, ready to ask."""

    def __init__(self, allow: Sequence[str] = (), allow_write: Sequence[str] = (),
                 allow_write_unix: bool = True, trusted_proxies: Sequence[str] = ()) -> None:
        self.allow = parse_networks(allow)
        self.allow_write = parse_networks(allow_write)
        self.allow_write_unix = allow_write_unix
        self.trusted_proxies = parse_networks(trusted_proxies)
        self._decided: Dict[Optional[str], Tuple[bool, bool]] = {}
        self._proxies: Dict[str, bool] = {}

    def is_trusted_proxy(self, host: Optional[str]) -> bool:
        """Whether a connection from ``host`` carries its client's real address."""
        if host is None or not self.trusted_proxies:
            return False
        trusted = self._proxies.get(host)
        if trusted is None:
            trusted = _within(parse_address(host), self.trusted_proxies)
            if len(self._proxies) >= _DECISIONS_KEPT:
                self._proxies.clear()
            self._proxies[host] = trusted
        return trusted

    def forwarded_client(self, peer: str, forwarded_for: Optional[str]) -> str:
        """The client a websocket request comes from: ``peer``, unless ``peer`` is a
        trusted proxy -- then the rightmost address of its ``X-Forwarded-For`` that is
        not itself a trusted proxy (each proxy appends the address it saw)."""
        if not forwarded_for or not self.is_trusted_proxy(peer):
            return peer
        for entry in reversed([part.strip() for part in forwarded_for.split(",")]):
            if parse_address(entry) is None:
                return peer                 # garbage: believe nothing further left
            if not self.is_trusted_proxy(entry):
                return entry
        return peer

    @property
    def open_to_all(self) -> bool:
        """No rule set: every client may connect and write (bitbake's behaviour)."""
        return not self.allow and not self.allow_write and self.allow_write_unix and not self.trusted_proxies

    def may_connect(self, host: Optional[str]) -> bool:
        """``host``: the client's IP address as text; None for a unix-socket client."""
        return self._decide(host)[0]

    def may_write(self, host: Optional[str]) -> bool:
        return self._decide(host)[1]

    def _decide(self, host: Optional[str]) -> Tuple[bool, bool]:
        decision = self._decided.get(host)
        if decision is None:
            if host is None:
                decision = (True, self.allow_write_unix)
            else:
                address = parse_address(host)
                connect = _within(address, self.allow)
                decision = (connect, connect and _within(address, self.allow_write))
            if len(self._decided) >= _DECISIONS_KEPT:
                self._decided.clear()
            self._decided[host] = decision
        return decision

    def describe(self) -> str:
        """One line for the log: what the rules let through."""
        def networks(items: Tuple[Network, ...]) -> str:
            return ", ".join(str(n) for n in items) if items else "everyone"
        return "connect: %s; write: %s%s%s" % (
            networks(self.allow), networks(self.allow_write),
            "" if self.allow_write_unix else " (not unix-socket clients)",
            "; client addresses from proxies %s" % ", ".join(str(n) for n in self.trusted_proxies)
            if self.trusted_proxies else "")


def _within(address: Optional[Address], networks: Tuple[Network, ...]) -> bool:
    if not networks:
        return True
    if address is None:
        return False
    return any(address.version == network.version and address in network for network in networks)
