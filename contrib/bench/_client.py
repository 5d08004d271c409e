"""A raw PRSERVICE 1.0 client for the benchmarks (standard library only, no prserv
import, so that any server can be measured), shared by scale.py and mirror.py."""

from __future__ import annotations

import json
import socket
import time
from typing import Tuple

SETUP = b"PRSERVICE 1.0\nneeds-headers: false\n\n"


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
