"""The HAProxy PROXY protocol, versions 1 and 2, as a sans-I/O parser.

Behind a TCP proxy such as HAProxy, or nginx ``stream`` with ``proxy_protocol on``,
every connection the server accepts comes from the proxy's address.  The server
applies its network rules to the real client's address, so a trusted proxy sends
that address first, in a PROXY header, before any protocol bytes:

* version 1 is one ASCII line, ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n``
  (``TCP6`` likewise, or ``PROXY UNKNOWN[ anything]\\r\\n``), 107 bytes at most;
* version 2 is binary: a 12-byte signature, a version/command byte, a
  family/transport byte, a 16-bit length, the address block, and optional TLVs
  (skipped here, never interpreted).

``ProxyHeaderParser`` is fed the connection's first bytes as they arrive and hands
back the header and the bytes after it; the transport then passes those bytes on to
the normal protocol.  It does no I/O, so it can be tested without sockets.  The
format is haproxy's doc/proxy-protocol.txt; where that text leaves room, this
parser is strict (see ``ProxyHeaderParser``).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

__all__ = [
    "ABSENT", "MAX_V1_LINE", "MAX_V2_HEADER", "MAX_V2_PAYLOAD", "ProxyHeader", "ProxyHeaderError",
    "ProxyHeaderParser", "V1_SIGNATURE", "V2_SIGNATURE", "begins_header",
]

MAX_V1_LINE = 107
"""Longest v1 line, CRLF included (``PROXY UNKNOWN`` with two full IPv6 addresses)."""

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

V2_FIXED_LENGTH = 16
"""Signature, version/command, family/transport, and the 16-bit length."""

MAX_V2_PAYLOAD = 4096
"""Longest v2 address block plus TLVs accepted (a UNIX block is 216 bytes)."""

MAX_V2_HEADER = V2_FIXED_LENGTH + MAX_V2_PAYLOAD

_V2_LOCAL = 0x0
_V2_PROXY = 0x1

_AF_UNSPEC = 0x0
_AF_INET = 0x1
_AF_INET6 = 0x2
_AF_UNIX = 0x3

_ADDRESS_BLOCK_LENGTHS = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_FAMILY_NAMES = {_AF_UNSPEC: "UNSPEC", _AF_INET: "INET", _AF_INET6: "INET6", _AF_UNIX: "UNIX"}
_TRANSPORTS = (0x0, 0x1, 0x2)  # UNSPEC, STREAM, DGRAM: checked, not interpreted

_IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class ProxyHeaderError(ValueError):
    """Bytes that cannot be a PROXY header; the message says what is wrong."""


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY header says about the connection.

    ``source_host`` is the real client's IP address as text (``"203.0.113.7"``,
    ``"2001:db8::1"``; an IPv4-mapped address stays IPv6, ``"::ffff:192.0.2.1"``).
    All four address fields are None when the header carries no client address:
    v1 ``UNKNOWN``, v2 ``LOCAL`` (the proxy's own connection, e.g. a health check),
    and v2 ``UNSPEC`` or ``UNIX`` families.  Then the connection's own endpoints apply.
    """

    version: int
    source_host: Optional[str]
    source_port: Optional[int]
    dest_host: Optional[str]
    dest_port: Optional[int]


_NO_ADDRESS = (None, None, None, None)


class ProxyHeaderParser:
    """Feed bytes as they arrive; get the header and the bytes after it once complete.

    The header must be the connection's very first bytes.  The version is decided
    from the first bytes: as soon as they cannot begin ``PROXY `` (v1) or the v2
    signature, ``feed`` raises.  A v1 line is rejected as soon as it cannot end with
    CRLF within ``MAX_V1_LINE`` bytes, a v2 header as soon as its fixed 16 bytes are
    wrong (including a length above ``MAX_V2_PAYLOAD`` or below what the family's
    address block needs).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._finished = False

    def feed(self, data: bytes) -> Optional[Tuple[ProxyHeader, bytes]]:
        """None while more bytes are needed; (header, rest) once the header is complete
        (rest: bytes that followed it, to be handed to the normal protocol);
        ProxyHeaderError if the bytes cannot be a PROXY header. After a result or an
        error, feeding again raises ProxyHeaderError."""
        if self._finished:
            raise ProxyHeaderError("PROXY header: parser already finished; nothing more to feed")
        buffer = self._buffer + data
        try:
            parsed = _parse(buffer)
        except ProxyHeaderError:
            self._finish()
            raise
        if parsed is None:
            self._buffer = buffer
            return None
        self._finish()
        header, length = parsed
        return header, bytes(buffer[length:])

    def _finish(self) -> None:
        self._finished = True
        self._buffer = b""


# --------------------------------------------------------------------------- dispatch

def _parse(buffer: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    """(header, its length in bytes), or None while more bytes are needed."""
    version = _detect_version(buffer)
    if version is None:
        return None
    if version == 1:
        return _parse_v1(buffer)
    return _parse_v2(buffer)


def begins_header(buffer: bytes) -> Optional[bool]:
    """Whether a connection's first bytes begin a PROXY header: True once a v1 or v2
    signature is complete, False once they cannot become one, None while they still
    could (where a header is optional: the HTTP listener's trusted proxies)."""
    try:
        return _detect_version(buffer) is not None or None
    except ProxyHeaderError:
        return False


ABSENT = ProxyHeader(0, None, None, None, None)
"""An optional header that was not sent: the connection's own endpoints apply."""


def _detect_version(buffer: bytes) -> Optional[int]:
    """1 or 2 once a signature is complete; None while the bytes could still become one."""
    if buffer.startswith(V1_SIGNATURE):
        return 1
    if buffer.startswith(V2_SIGNATURE):
        return 2
    if _could_become(buffer, V1_SIGNATURE) or _could_become(buffer, V2_SIGNATURE):
        return None
    raise ProxyHeaderError("PROXY header: the connection starts with %r, not a PROXY v1 or v2 "
                           "signature" % buffer[:len(V2_SIGNATURE)])


def _could_become(buffer: bytes, signature: bytes) -> bool:
    """Whether ``buffer`` is the beginning of ``signature`` (more bytes may complete it)."""
    return signature.startswith(buffer)


def _show(text: bytes) -> str:
    """Bytes from the wire, quoted for an error message."""
    return repr(text.decode("ascii", "backslashreplace"))


def _ip_text(address: _IPAddress) -> str:
    """The address as text, with IPv4-mapped IPv6 as ``::ffff:a.b.c.d`` on every Python
    (``str()`` gives ``::ffff:102:304`` before 3.13 and ``::ffff:1.2.3.4`` from 3.13)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "::ffff:%s" % address.ipv4_mapped
    return str(address)


# --------------------------------------------------------------------------- version 1

def _parse_v1(buffer: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    end = _v1_line_end(buffer)
    if end is None:
        return None
    return _parse_v1_line(buffer[:end - 2]), end


def _v1_line_end(buffer: bytes) -> Optional[int]:
    """The index just past the line's CRLF; None while it may still arrive.

    The line ends at its first CR, which must be followed by LF.  An LF before that
    CR is an error, and so is a line whose CR is not among its first
    ``MAX_V1_LINE - 1`` bytes (the line could not end within ``MAX_V1_LINE``).
    """
    window = buffer[:MAX_V1_LINE]
    cr = window.find(b"\r")
    lf = window.find(b"\n")
    if lf != -1 and (cr == -1 or lf < cr):
        raise ProxyHeaderError("PROXY v1 header: line ends with LF instead of CRLF")
    if cr == -1 or cr > MAX_V1_LINE - 2:
        if len(buffer) >= MAX_V1_LINE - 1:
            raise ProxyHeaderError("PROXY v1 header: no CRLF within the first %d bytes"
                                   % MAX_V1_LINE)
        return None
    if cr + 1 == len(buffer):
        return None
    if buffer[cr + 1:cr + 2] != b"\n":
        raise ProxyHeaderError("PROXY v1 header: CR not followed by LF")
    return cr + 2


def _parse_v1_line(line: bytes) -> ProxyHeader:
    """The line without its CRLF: ``PROXY <protocol> ...``, fields one space apart."""
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        return ProxyHeader(1, *_NO_ADDRESS)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 header: unknown protocol %s (expected TCP4, TCP6 "
                               "or UNKNOWN)" % _show(protocol))
    if len(fields) != 6:
        raise ProxyHeaderError("PROXY v1 header: %s needs source and destination addresses "
                               "and ports, one space apart, not %s"
                               % (protocol.decode(), _show(line)))
    ipv6 = protocol == b"TCP6"
    return ProxyHeader(
        version=1,
        source_host=_v1_address(fields[2], ipv6, "source"),
        source_port=_v1_port(fields[4], "source"),
        dest_host=_v1_address(fields[3], ipv6, "destination"),
        dest_port=_v1_port(fields[5], "destination"),
    )


def _v1_address(text: bytes, ipv6: bool, which: str) -> str:
    address = _v1_ip(text, ipv6)
    if address is None:
        raise ProxyHeaderError("PROXY v1 header: bad %s address %s (not an %s address)"
                               % (which, _show(text), "IPv6" if ipv6 else "IPv4"))
    return _ip_text(address)


def _v1_ip(text: bytes, ipv6: bool) -> Optional[_IPAddress]:
    """An IPv6 address without a zone (``%eth0``) for TCP6, or an IPv4 address in
    dotted-quad form without leading zeros for TCP4; None if ``text`` is neither."""
    try:
        address_text = text.decode("ascii")
        if ipv6:
            return None if "%" in address_text else ipaddress.IPv6Address(address_text)
        address = ipaddress.IPv4Address(address_text)
    except ValueError:  # UnicodeDecodeError is a ValueError
        return None
    # Python before 3.9.5 accepted leading zeros ("01.2.3.4"); the spec forbids them.
    return address if str(address) == address_text else None


def _v1_port(text: bytes, which: str) -> int:
    """Decimal digits, 0..65535, no sign and no leading zero (the spec forbids them)."""
    if not text.isdigit() or (len(text) > 1 and text.startswith(b"0")) or int(text) > 65535:
        raise ProxyHeaderError("PROXY v1 header: bad %s port %s" % (which, _show(text)))
    return int(text)


# --------------------------------------------------------------------------- version 2

def _parse_v2(buffer: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    if len(buffer) < V2_FIXED_LENGTH:
        return None
    command, family, length = _parse_v2_fixed(buffer[len(V2_SIGNATURE):V2_FIXED_LENGTH])
    end = V2_FIXED_LENGTH + length
    if len(buffer) < end:
        return None
    if command == _V2_LOCAL:
        return ProxyHeader(2, *_NO_ADDRESS), end
    return ProxyHeader(2, *_v2_addresses(family, buffer[V2_FIXED_LENGTH:end])), end


def _parse_v2_fixed(fixed: bytes) -> Tuple[int, int, int]:
    """Command, family and payload length from the 4 bytes after the signature."""
    version_command, family_transport, length = struct.unpack("!BBH", fixed)
    version, command = version_command >> 4, version_command & 0xF
    family, transport = family_transport >> 4, family_transport & 0xF
    if version != 2:
        raise ProxyHeaderError("PROXY v2 header: bad version %d (expected 2)" % version)
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError("PROXY v2 header: bad command %d (expected 0 LOCAL or 1 PROXY)"
                               % command)
    if family not in _ADDRESS_BLOCK_LENGTHS:
        raise ProxyHeaderError("PROXY v2 header: bad address family %d" % family)
    if transport not in _TRANSPORTS:
        raise ProxyHeaderError("PROXY v2 header: bad transport protocol %d" % transport)
    if length > MAX_V2_PAYLOAD:
        raise ProxyHeaderError("PROXY v2 header: length %d is over the %d accepted"
                               % (length, MAX_V2_PAYLOAD))
    needed = _ADDRESS_BLOCK_LENGTHS[family]
    if command == _V2_PROXY and length < needed:
        raise ProxyHeaderError("PROXY v2 header: length %d is too short for the %s address "
                               "block of %d bytes" % (length, _FAMILY_NAMES[family], needed))
    return command, family, length


def _v2_addresses(family: int, payload: bytes
                  ) -> Tuple[Optional[str], Optional[int], Optional[str], Optional[int]]:
    """Source host and port, destination host and port; TLVs after the block are skipped."""
    if family == _AF_INET:
        source, dest, source_port, dest_port = struct.unpack("!4s4sHH", payload[:12])
        return (_ip_text(ipaddress.IPv4Address(source)), source_port,
                _ip_text(ipaddress.IPv4Address(dest)), dest_port)
    if family == _AF_INET6:
        source, dest, source_port, dest_port = struct.unpack("!16s16sHH", payload[:36])
        return (_ip_text(ipaddress.IPv6Address(source)), source_port,
                _ip_text(ipaddress.IPv6Address(dest)), dest_port)
    return _NO_ADDRESS  # UNSPEC, UNIX: no IP address to report
