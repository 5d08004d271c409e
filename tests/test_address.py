"""Address strings (prserv.asyncrpc.address)."""

import socket

import pytest

from prserv.asyncrpc.address import (ADDR_TYPE_TCP, ADDR_TYPE_UNIX, ADDR_TYPE_WS, AddressError,
                                     format_tcp_address, parse_address, split_ws_uri)


@pytest.mark.parametrize("addr, parsed", [
    ("localhost:8585", (ADDR_TYPE_TCP, ("localhost", 8585))),
    ("127.0.0.1:0", (ADDR_TYPE_TCP, ("127.0.0.1", 0))),
    ("[::1]:8585", (ADDR_TYPE_TCP, ("::1", 8585))),
    ("[fe80::1%eth0]:1", (ADDR_TYPE_TCP, ("fe80::1%eth0", 1))),
    ("unix:///run/pr.sock", (ADDR_TYPE_UNIX, ("/run/pr.sock",))),
    ("unix://relative.sock", (ADDR_TYPE_UNIX, ("relative.sock",))),
    ("ws://host:80", (ADDR_TYPE_WS, ("ws://host:80",))),
    ("wss://host:443/pr", (ADDR_TYPE_WS, ("wss://host:443/pr",))),
])
def test_parse_address(addr, parsed):
    assert parse_address(addr) == parsed


@pytest.mark.parametrize("addr", ["localhost", "::1:8585", "host:port", "a:1:2", "host:", "unix://",
                                  "host:99999", "[::1]:x", ""])
def test_parse_address_errors(addr):
    with pytest.raises(AddressError):
        parse_address(addr)


def test_split_ws_uri():
    assert split_ws_uri("ws://127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_ws_uri("ws://[::1]:8080/path") == ("::1", 8080)
    with pytest.raises(AddressError):
        split_ws_uri("ws://host")


def test_format_tcp_address():
    assert format_tcp_address(("127.0.0.1", 5), socket.AF_INET) == "127.0.0.1:5"
    assert format_tcp_address(("::1", 5, 0, 0), socket.AF_INET6) == "[::1]:5"
    assert format_tcp_address(("::1", 5, 0, 0), socket.AF_INET6, "ws://") == "ws://[::1]:5"
