"""The PROXY protocol parser (prserv.asyncrpc.proxyproto): versions 1 and 2."""

from __future__ import annotations

import ast
import dataclasses
import ipaddress
import struct
from typing import Optional, Tuple

import pytest

from prserv.asyncrpc import proxyproto
from prserv.asyncrpc.proxyproto import (MAX_V1_LINE, ProxyHeader, ProxyHeaderError,
                                        ProxyHeaderParser)

SIG = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"

LOCAL = 0x20
PROXY = 0x21
UNSPEC = 0x00
TCP4 = 0x11
UDP4 = 0x12
TCP6 = 0x21
UNIX_STREAM = 0x31

NO_ADDRESS_V1 = ProxyHeader(1, None, None, None, None)
NO_ADDRESS_V2 = ProxyHeader(2, None, None, None, None)


# --------------------------------------------------------------------------- helpers

def parse(data: bytes) -> Optional[Tuple[ProxyHeader, bytes]]:
    """One parser, one chunk."""
    return ProxyHeaderParser().feed(data)


def parse_bytewise(data: bytes) -> Tuple[ProxyHeader, bytes]:
    """Feed one byte at a time: None for every byte but the last, which completes it."""
    parser = ProxyHeaderParser()
    for i in range(len(data) - 1):
        assert parser.feed(data[i:i + 1]) is None, "done after %d of %d bytes" % (i + 1, len(data))
    result = parser.feed(data[-1:])
    assert result is not None
    return result


def error_of(data: bytes) -> str:
    with pytest.raises(ProxyHeaderError) as excinfo:
        parse(data)
    return str(excinfo.value)


def error_at(data: bytes) -> int:
    """Feed byte by byte; the number of bytes fed when the parser raised."""
    parser = ProxyHeaderParser()
    for i in range(len(data)):
        try:
            assert parser.feed(data[i:i + 1]) is None
        except ProxyHeaderError:
            return i + 1
    raise AssertionError("no error after all %d bytes" % len(data))


def v2(ver_cmd: int, fam: int, payload: bytes) -> bytes:
    return SIG + struct.pack("!BBH", ver_cmd, fam, len(payload)) + payload


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!4s4sHH", ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed, sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!16s16sHH", ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed, sport, dport)


def unix(src: bytes, dst: bytes) -> bytes:
    return struct.pack("!108s108s", src, dst)


# --------------------------------------------------------------------------- module

def test_constants():
    assert MAX_V1_LINE == 107
    assert proxyproto.V2_SIGNATURE == SIG
    assert proxyproto.MAX_V2_HEADER == 4096 + 16


def test_error_is_a_value_error():
    assert issubclass(ProxyHeaderError, ValueError)


def test_header_is_frozen():
    header = ProxyHeader(1, "192.0.2.1", 1, "192.0.2.2", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.source_host = "192.0.2.9"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(ProxyHeader)] == [
        "version", "source_host", "source_port", "dest_host", "dest_port"]


def test_imports_only_the_standard_library():
    with open(proxyproto.__file__, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add(node.module)
    assert imported == {"__future__", "ipaddress", "struct", "dataclasses", "typing"}


# --------------------------------------------------------------------------- v1

def test_v1_tcp4():
    assert parse(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 8585\r\n") == (
        ProxyHeader(1, "203.0.113.7", 56324, "192.0.2.1", 8585), b"")


def test_v1_tcp6():
    assert parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8585\r\n") == (
        ProxyHeader(1, "2001:db8::1", 40000, "2001:db8::2", 8585), b"")


@pytest.mark.parametrize("given, text", [
    (b"2001:DB8::1", "2001:db8::1"),
    (b"2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    (b"::1", "::1"),
    (b"::", "::"),
    (b"::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    (b"::ffff:c000:201", "::ffff:192.0.2.1"),
    (b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
])
def test_v1_tcp6_address_text(given, text):
    """Compressed lower-case text; an IPv4-mapped address stays IPv6, in one form on
    every Python."""
    header, rest = parse(b"PROXY TCP6 " + given + b" ::1 1 2\r\n")
    assert header == ProxyHeader(1, text, 1, "::1", 2)
    assert rest == b""


def test_v1_extreme_values():
    assert parse(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n") == (
        ProxyHeader(1, "0.0.0.0", 0, "255.255.255.255", 65535), b"")


def test_v1_unknown_short():
    assert parse(b"PROXY UNKNOWN\r\n") == (NO_ADDRESS_V1, b"")


def test_v1_unknown_ignores_the_rest_of_its_line():
    line = b"PROXY UNKNOWN not parsed: 1.2.3 \xff\x00 99999 TCP4\r\n"
    assert parse(line + b"after") == (NO_ADDRESS_V1, b"after")


def test_v1_longest_line_is_accepted():
    ffff = b":".join([b"ffff"] * 8)
    line = b"PROXY UNKNOWN " + ffff + b" " + ffff + b" 65535 65535\r\n"
    assert len(line) == MAX_V1_LINE
    assert parse(line + b"x") == (NO_ADDRESS_V1, b"x")
    assert parse_bytewise(line) == (NO_ADDRESS_V1, b"")


def test_v1_longest_tcp6_line():
    ffff = b":".join([b"ffff"] * 8)
    line = b"PROXY TCP6 " + ffff + b" " + ffff + b" 65535 65535\r\n"
    assert len(line) == 104
    header, rest = parse(line)
    assert header == ProxyHeader(1, ffff.decode(), 65535, ffff.decode(), 65535)


def test_v1_byte_by_byte():
    assert parse_bytewise(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 8585\r\n") == (
        ProxyHeader(1, "203.0.113.7", 56324, "192.0.2.1", 8585), b"")


def test_v1_with_following_bytes_in_one_chunk():
    data = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 8585\r\nPRSERVICE 1.0\nneeds-headers: false\n\n"
    assert parse(data) == (ProxyHeader(1, "203.0.113.7", 56324, "192.0.2.1", 8585),
                           b"PRSERVICE 1.0\nneeds-headers: false\n\n")


def test_v1_rest_keeps_crlf_and_binary():
    data = b"PROXY TCP6 ::1 ::1 1 2\r\n\r\n\x00PROXY TCP4\r\n"
    assert parse(data) == (ProxyHeader(1, "::1", 1, "::1", 2), b"\r\n\x00PROXY TCP4\r\n")


def test_v1_every_split_point():
    data = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 8585\r\nPRSERVICE 1.0\n"
    expected = (ProxyHeader(1, "203.0.113.7", 56324, "192.0.2.1", 8585), b"PRSERVICE 1.0\n")
    header_length = data.index(b"\n") + 1
    for split in range(len(data) + 1):
        parser = ProxyHeaderParser()
        first = parser.feed(data[:split])
        if split >= header_length:
            assert first == (expected[0], data[header_length:split])
        else:
            assert first is None
            assert parser.feed(data[split:]) == expected


def test_v1_too_long_in_one_chunk():
    data = b"PROXY UNKNOWN " + b"x" * (MAX_V1_LINE - len(b"PROXY UNKNOWN "))
    assert len(data) == MAX_V1_LINE
    assert error_of(data) == "PROXY v1 header: no CRLF within the first 107 bytes"


def test_v1_too_long_errors_without_waiting():
    """A line whose CR is not among its first 106 bytes cannot end within 107: the
    parser says so at the 106th byte, and never waits past the 107th."""
    data = b"PROXY UNKNOWN " + b"x" * 200
    assert error_at(data) == MAX_V1_LINE - 1
    parser = ProxyHeaderParser()
    assert parser.feed(data[:MAX_V1_LINE - 2]) is None
    with pytest.raises(ProxyHeaderError, match="no CRLF within the first 107 bytes"):
        parser.feed(data[MAX_V1_LINE - 2:MAX_V1_LINE - 1])


def test_v1_line_one_byte_too_long():
    ffff = b":".join([b"ffff"] * 8)
    line = b"PROXY UNKNOWN " + ffff + b" " + ffff + b" 65535 655355\r\n"
    assert len(line) == MAX_V1_LINE + 1
    assert error_of(line) == "PROXY v1 header: no CRLF within the first 107 bytes"
    assert error_at(line) == MAX_V1_LINE - 1


def test_v1_long_tail_after_a_complete_line_is_fine():
    data = b"PROXY UNKNOWN\r\n" + b"y" * 10000
    assert parse(data) == (NO_ADDRESS_V1, b"y" * 10000)


@pytest.mark.parametrize("line, message", [
    (b"PROXY TCP4 1.2.3 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad source address '1.2.3' (not an IPv4 address)"),
    (b"PROXY TCP4 192.0.2.1 1.2.3.256 1 2\r\n",
     "PROXY v1 header: bad destination address '1.2.3.256' (not an IPv4 address)"),
    (b"PROXY TCP4 01.2.3.4 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad source address '01.2.3.4' (not an IPv4 address)"),
    (b"PROXY TCP4 localhost 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad source address 'localhost' (not an IPv4 address)"),
    (b"PROXY TCP4 1.2.3.4/32 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad source address '1.2.3.4/32' (not an IPv4 address)"),
    (b"PROXY TCP4 \xc9.2.3.4 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad source address '\\\\xc9.2.3.4' (not an IPv4 address)"),
    (b"PROXY TCP6 2001:db8::g ::1 1 2\r\n",
     "PROXY v1 header: bad source address '2001:db8::g' (not an IPv6 address)"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
     "PROXY v1 header: bad source address 'fe80::1%eth0' (not an IPv6 address)"),
    (b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n",
     "PROXY v1 header: bad source address '1:2:3:4:5:6:7' (not an IPv6 address)"),
])
def test_v1_bad_address(line, message):
    assert error_of(line) == message


@pytest.mark.parametrize("line, message", [
    (b"PROXY TCP4 ::1 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad source address '::1' (not an IPv4 address)"),
    (b"PROXY TCP4 192.0.2.1 ::ffff:192.0.2.2 1 2\r\n",
     "PROXY v1 header: bad destination address '::ffff:192.0.2.2' (not an IPv4 address)"),
    (b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
     "PROXY v1 header: bad source address '192.0.2.1' (not an IPv6 address)"),
    (b"PROXY TCP6 ::1 192.0.2.1 1 2\r\n",
     "PROXY v1 header: bad destination address '192.0.2.1' (not an IPv6 address)"),
])
def test_v1_address_of_the_wrong_family(line, message):
    assert error_of(line) == message


@pytest.mark.parametrize("port", [b"70000", b"65536", b"-1", b"+1", b"01", b"00", b"1a", b"0x50",
                                  b"\xd9\xa1", b"\xef\xbc\x91"])
def test_v1_bad_port(port):
    """Decimal digits only, 0..65535, no sign, no leading zero (the spec forbids
    them); non-ASCII digits are not digits."""
    source = b"PROXY TCP4 192.0.2.1 192.0.2.2 " + port + b" 80\r\n"
    expected = "PROXY v1 header: bad source port %r" % port.decode("ascii", "backslashreplace")
    assert error_of(source) == expected
    dest = b"PROXY TCP4 192.0.2.1 192.0.2.2 80 " + port + b"\r\n"
    assert error_of(dest) == expected.replace("source", "destination")


@pytest.mark.parametrize("port, value", [(b"0", 0), (b"1", 1), (b"80", 80), (b"65535", 65535)])
def test_v1_good_port(port, value):
    header, _ = parse(b"PROXY TCP4 192.0.2.1 192.0.2.2 " + port + b" " + port + b"\r\n")
    assert (header.source_port, header.dest_port) == (value, value)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4\r\n",
    b"PROXY TCP4 \r\n",
    b"PROXY TCP4 192.0.2.1\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",
    b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",
    b"PROXY TCP6 ::1 ::1 1\r\n",
])
def test_v1_wrong_number_of_fields(line):
    protocol = line[6:10].decode()
    assert error_of(line) == (
        "PROXY v1 header: %s needs source and destination addresses and ports, one space "
        "apart, not %r" % (protocol, line[:-2].decode()))


@pytest.mark.parametrize("line, protocol", [
    (b"PROXY \r\n", ""),
    (b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n", "TCP5"),
    (b"PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n", "tcp4"),
    (b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n", "UDP4"),
    (b"PROXY UNKNOWNX\r\n", "UNKNOWNX"),
    (b"PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n", ""),
    (b"PROXY TCP4\t192.0.2.1 192.0.2.2 1 2\r\n", "TCP4\t192.0.2.1"),
])
def test_v1_unknown_protocol(line, protocol):
    assert error_of(line) == ("PROXY v1 header: unknown protocol %r (expected TCP4, TCP6 or "
                              "UNKNOWN)" % protocol)


def test_v1_lf_without_cr():
    line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n"
    assert error_of(line) == "PROXY v1 header: line ends with LF instead of CRLF"
    assert error_at(line + b"more bytes") == len(line)
    assert error_of(b"PROXY UNKNOWN\n\r\n") == "PROXY v1 header: line ends with LF instead of CRLF"


def test_v1_cr_without_lf():
    line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX\n"
    assert error_of(line) == "PROXY v1 header: CR not followed by LF"
    assert error_at(line) == len(line) - 1


def test_v1_waits_for_the_lf_after_cr():
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r") is None
    assert parser.feed(b"\nrest") == (ProxyHeader(1, "192.0.2.1", 1, "192.0.2.2", 2), b"rest")


# --------------------------------------------------------------------------- v2

def test_v2_inet():
    data = v2(PROXY, TCP4, inet("203.0.113.7", "192.0.2.1", 56324, 8585))
    assert len(data) == 28
    assert parse(data) == (ProxyHeader(2, "203.0.113.7", 56324, "192.0.2.1", 8585), b"")


def test_v2_inet6():
    data = v2(PROXY, TCP6, inet6("2001:db8::1", "2001:db8::2", 40000, 8585))
    assert len(data) == 52
    assert parse(data) == (ProxyHeader(2, "2001:db8::1", 40000, "2001:db8::2", 8585), b"")


def test_v2_inet6_ipv4_mapped_stays_ipv6():
    data = v2(PROXY, TCP6, inet6("::ffff:203.0.113.7", "::1", 1, 2))
    assert parse(data) == (ProxyHeader(2, "::ffff:203.0.113.7", 1, "::1", 2), b"")


def test_v2_extreme_ports():
    data = v2(PROXY, TCP4, inet("0.0.0.0", "255.255.255.255", 0, 65535))
    assert parse(data) == (ProxyHeader(2, "0.0.0.0", 0, "255.255.255.255", 65535), b"")


def test_v2_real_world_header():
    """127.0.0.3:40000 -> 127.0.0.1:8585 as HAProxy's ``send-proxy-v2`` writes it,
    spelled out in hex rather than built with struct."""
    data = bytes.fromhex(
        "0d0a0d0a000d0a515549540a"  # signature
        "21"                        # version 2, command PROXY
        "11"                        # AF_INET, STREAM
        "000c"                      # 12 bytes follow
        "7f000003"                  # 127.0.0.3
        "7f000001"                  # 127.0.0.1
        "9c40"                      # 40000
        "2189")                     # 8585
    assert parse(data + b"PRSERVICE 1.0\n") == (
        ProxyHeader(2, "127.0.0.3", 40000, "127.0.0.1", 8585), b"PRSERVICE 1.0\n")


def test_v2_haproxy_capture_with_http_after():
    """A header HAProxy sent to netcat, followed by the client's HTTP request."""
    data = bytes.fromhex(
        "0d0a0d0a000d0a515549540a211100 0c"
        "ac130001ac130003a6520050") + b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"
    assert parse(data) == (ProxyHeader(2, "172.19.0.1", 42578, "172.19.0.3", 80),
                           b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n")


def test_v2_datagram_transport_still_gives_addresses():
    data = v2(PROXY, UDP4, inet("192.0.2.1", "192.0.2.2", 53, 5353))
    assert parse(data) == (ProxyHeader(2, "192.0.2.1", 53, "192.0.2.2", 5353), b"")


def test_v2_local():
    assert parse(v2(LOCAL, UNSPEC, b"")) == (NO_ADDRESS_V2, b"")


def test_v2_local_ignores_its_address_block():
    data = v2(LOCAL, TCP4, inet("192.0.2.1", "192.0.2.2", 1, 2))
    assert parse(data + b"rest") == (NO_ADDRESS_V2, b"rest")


def test_v2_local_does_not_need_an_address_block():
    """LOCAL's family is ignored, so a length shorter than its block is not an error."""
    assert parse(v2(LOCAL, TCP4, b"")) == (NO_ADDRESS_V2, b"")


def test_v2_unspec():
    assert parse(v2(PROXY, UNSPEC, b"")) == (NO_ADDRESS_V2, b"")
    assert parse(v2(PROXY, UNSPEC, b"\x01\x02\x03") + b"rest") == (NO_ADDRESS_V2, b"rest")


def test_v2_unix():
    data = v2(PROXY, UNIX_STREAM, unix(b"/run/client.sock", b"/run/prserv.sock"))
    assert len(data) == 16 + 216
    assert parse(data + b"rest") == (NO_ADDRESS_V2, b"rest")


def test_v2_tlvs_are_skipped():
    tlvs = (b"\x01\x00\x02h2"              # PP2_TYPE_ALPN "h2"
            b"\x04\x00\x03\x00\x00\x00"    # PP2_TYPE_NOOP, 3 bytes
            b"\x05\x00\x04abcd")           # PP2_TYPE_UNIQUE_ID
    data = v2(PROXY, TCP4, inet("203.0.113.7", "192.0.2.1", 1234, 8585) + tlvs)
    assert parse(data + b"PRSERVICE 1.0\n") == (
        ProxyHeader(2, "203.0.113.7", 1234, "192.0.2.1", 8585), b"PRSERVICE 1.0\n")


def test_v2_tlvs_after_inet6_are_skipped_even_if_malformed():
    data = v2(PROXY, TCP6, inet6("2001:db8::1", "2001:db8::2", 1, 2) + b"\xff\xff\xff")
    assert parse(data + b"x") == (ProxyHeader(2, "2001:db8::1", 1, "2001:db8::2", 2), b"x")


def test_v2_largest_accepted_length():
    data = v2(PROXY, TCP4, inet("192.0.2.1", "192.0.2.2", 1, 2) + b"\x00" * (4096 - 12))
    assert len(data) == proxyproto.MAX_V2_HEADER
    assert parse(data + b"z") == (ProxyHeader(2, "192.0.2.1", 1, "192.0.2.2", 2), b"z")


def test_v2_length_over_the_cap():
    header = SIG + struct.pack("!BBH", PROXY, TCP4, 4097)
    assert error_of(header) == "PROXY v2 header: length 4097 is over the 4096 accepted"
    assert error_at(header + b"\x00" * 100) == 16
    assert error_of(SIG + struct.pack("!BBH", LOCAL, UNSPEC, 0xFFFF)) == (
        "PROXY v2 header: length 65535 is over the 4096 accepted")


@pytest.mark.parametrize("fam, length, name, needed", [
    (TCP4, 0, "INET", 12),
    (TCP4, 11, "INET", 12),
    (TCP6, 12, "INET6", 36),
    (TCP6, 35, "INET6", 36),
    (UNIX_STREAM, 215, "UNIX", 216),
])
def test_v2_length_too_short_for_family(fam, length, name, needed):
    data = SIG + struct.pack("!BBH", PROXY, fam, length) + b"\x00" * length
    assert error_of(data) == ("PROXY v2 header: length %d is too short for the %s address "
                              "block of %d bytes" % (length, name, needed))
    assert error_at(data + b"\x00") == 16


@pytest.mark.parametrize("ver_cmd, version", [(0x11, 1), (0x31, 3), (0x01, 0), (0xF1, 15),
                                              (0x10, 1)])
def test_v2_bad_version(ver_cmd, version):
    data = v2(ver_cmd, TCP4, inet("192.0.2.1", "192.0.2.2", 1, 2))
    assert error_of(data) == "PROXY v2 header: bad version %d (expected 2)" % version
    assert error_at(data) == 16


@pytest.mark.parametrize("ver_cmd, command", [(0x22, 2), (0x2F, 15)])
def test_v2_bad_command(ver_cmd, command):
    data = v2(ver_cmd, TCP4, inet("192.0.2.1", "192.0.2.2", 1, 2))
    assert error_of(data) == ("PROXY v2 header: bad command %d (expected 0 LOCAL or 1 PROXY)"
                              % command)


@pytest.mark.parametrize("ver_cmd", [PROXY, LOCAL])
def test_v2_bad_family(ver_cmd):
    assert error_of(v2(ver_cmd, 0x41, b"\x00" * 12)) == "PROXY v2 header: bad address family 4"


@pytest.mark.parametrize("ver_cmd", [PROXY, LOCAL])
def test_v2_bad_transport(ver_cmd):
    data = v2(ver_cmd, 0x13, inet("192.0.2.1", "192.0.2.2", 1, 2))
    assert error_of(data) == "PROXY v2 header: bad transport protocol 3"


def test_v2_byte_by_byte():
    tlv = b"\x04\x00\x02\x00\x00"
    data = v2(PROXY, TCP6, inet6("2001:db8::7", "2001:db8::1", 40000, 8585) + tlv)
    assert parse_bytewise(data) == (ProxyHeader(2, "2001:db8::7", 40000, "2001:db8::1", 8585), b"")


def test_v2_local_byte_by_byte():
    assert parse_bytewise(v2(LOCAL, UNSPEC, b"")) == (NO_ADDRESS_V2, b"")


def test_v2_every_split_point():
    data = v2(PROXY, TCP4, inet("127.0.0.3", "127.0.0.1", 40000, 8585)) + b"PRSERVICE 1.0\n"
    expected = (ProxyHeader(2, "127.0.0.3", 40000, "127.0.0.1", 8585), b"PRSERVICE 1.0\n")
    for split in range(len(data) + 1):
        parser = ProxyHeaderParser()
        first = parser.feed(data[:split])
        if split >= 28:
            assert first == (expected[0], data[28:split])
        else:
            assert first is None
            assert parser.feed(data[split:]) == expected


# --------------------------------------------------------------------------- signatures

def test_empty_feed_waits():
    parser = ProxyHeaderParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"PROXY UNKNOWN\r\n") == (NO_ADDRESS_V1, b"")


def test_garbage_first_byte_is_an_error_at_once():
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError) as excinfo:
        parser.feed(b"G")
    assert str(excinfo.value) == (
        "PROXY header: the connection starts with b'G', not a PROXY v1 or v2 signature")


def test_http_request_is_an_error():
    assert error_of(b"GET / HTTP/1.1\r\n\r\n") == (
        "PROXY header: the connection starts with b'GET / HTTP/1', not a PROXY v1 or v2 "
        "signature")


@pytest.mark.parametrize("first", [b"\x00", b"p", b" ", b"\n", b"\x16", b"{"])
def test_other_first_bytes_are_errors(first):
    assert error_at(first + b"PROXY ") == 1


def test_prservice_handshake_is_an_error():
    """A client that talks to the server directly, bypassing the proxy: "PR" could
    still begin "PROXY ", "PRS" cannot."""
    assert error_of(b"PRSERVICE 1.0\n") == (
        "PROXY header: the connection starts with b'PRSERVICE 1.', not a PROXY v1 or v2 "
        "signature")
    assert error_at(b"PRSERVICE 1.0\n") == 3


@pytest.mark.parametrize("data, at", [
    (b"PROXY_TCP4", 6),
    (b"PROXYTCP4", 6),
    (b"PROX ", 5),
    (b"\r\n\r\n\x00\r\nQUIT\r", 12),
    (b"\r\n\r\nPROXY", 5),
    (b"\r\r", 2),
    (b"\r\n\n", 3),
])
def test_prefix_mismatch_is_an_error_at_the_first_wrong_byte(data, at):
    assert error_at(data) == at


@pytest.mark.parametrize("prefix", [b"P", b"PROXY", b"\r", b"\r\n\r\n\x00\r\nQUIT", SIG[:-1], SIG,
                                    SIG + b"\x21\x11\x00"])
def test_signature_prefixes_wait(prefix):
    assert parse(prefix) is None


def test_feeding_after_a_result_raises():
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") == (NO_ADDRESS_V1, b"")
    with pytest.raises(ProxyHeaderError, match="already finished"):
        parser.feed(b"PRSERVICE 1.0\n")
    with pytest.raises(ProxyHeaderError, match="already finished"):
        parser.feed(b"")


def test_feeding_after_a_v2_result_raises():
    parser = ProxyHeaderParser()
    assert parser.feed(v2(LOCAL, UNSPEC, b"") + b"x") == (NO_ADDRESS_V2, b"x")
    with pytest.raises(ProxyHeaderError, match="already finished"):
        parser.feed(b"y")


def test_feeding_after_an_error_raises():
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError, match="not a PROXY v1 or v2 signature"):
        parser.feed(b"GET")
    with pytest.raises(ProxyHeaderError, match="already finished"):
        parser.feed(b"PROXY UNKNOWN\r\n")
