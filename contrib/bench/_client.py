"""A raw PRSERVICE 1.0 client for the benchmarks (standard library only, no prserv
import, so that any server can be measured): one request at a time on one TCP
connection, and a whole export read and counted."""

from __future__ import annotations

import json
import socket
import time
from typing import Tuple

SETUP = b"PRSERVICE 1.0\nneeds-headers: false\n\n"
EXPORT_ROW = b'{"version": '


class Client:
    """One connection, one request at a time."""

    def __init__(self, address: Tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.sock.sendall(SETUP)

    def ask(self, message: dict) -> Tuple[object, float]:
        """The answer to ``message`` and the seconds it took."""
        started = time.perf_counter()
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        line = self.file.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        return json.loads(line), time.perf_counter() - started

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def count_export(self, history: bool) -> Tuple[int, int, float]:
        """(rows, bytes, seconds) of an export of the whole table, read line by line
        (a chunk stream: its marker, chunks, an empty line) and counted, never parsed
        whole.  A chunk may cut a row anywhere, so rows are counted across chunks."""
        started = time.monotonic()
        self.sock.sendall(json.dumps({"export": {"version": None, "pkgarch": None, "checksum": None,
                                                 "colinfo": False, "history": history}}).encode() + b"\n")
        line = self.file.readline()
        size, rows, tail = len(line), 0, b""
        chunked = line.startswith(b'{"chunk-stream"')
        while line:
            window = tail + line.rstrip(b"\n")
            rows += window.count(EXPORT_ROW)          # the tail is too short to hold one
            tail = window[-(len(EXPORT_ROW) - 1):]
            if not chunked or line == b"\n":
                break
            line = self.file.readline()
            size += len(line)
        if not line:
            raise ConnectionError("the server closed the connection during the export")
        return rows, size, time.monotonic() - started
