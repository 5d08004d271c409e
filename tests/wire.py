"""A raw-socket peer for tests: sends exact bytes, reads exact messages.

Deliberately independent of ``prserv.asyncrpc`` so that protocol tests do not
check the implementation against itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import List, Optional

READ_TIMEOUT = 10.0
SETUP = "PRSERVICE 1.0\nneeds-headers: false\n\n"


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: str, setup: Optional[str] = None,
                   source: Optional[str] = None) -> "RawConnection":
        """``source``: the local address to connect from (any 127.x.y.z is this host)."""
        if address.startswith("unix://"):
            reader, writer = await asyncio.open_unix_connection(address[len("unix://"):], limit=1 << 24)
        else:
            host, port = address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=1 << 24,
                                                           local_addr=(source, 0) if source else None)
        conn = cls(reader, writer)
        if setup is not None:
            await conn.send(setup)
        return conn

    async def send(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))
        await self.writer.drain()

    async def readline(self) -> str:
        line = await asyncio.wait_for(self.reader.readline(), READ_TIMEOUT)
        return line.decode("utf-8")

    async def recv_raw(self) -> str:
        """One message as sent: a line, or a whole chunk stream; "" at EOF."""
        first = await self.readline()
        if not first:
            return ""
        try:
            head = json.loads(first)
        except ValueError:
            return first
        if not (isinstance(head, dict) and "chunk-stream" in head):
            return first
        lines = [first]
        while True:
            line = await self.readline()
            if not line:
                raise AssertionError("EOF inside a chunk stream")
            lines.append(line)
            if line == "\n":
                return "".join(lines)

    async def recv_headers(self) -> str:
        lines: List[str] = []
        while True:
            line = await self.readline()
            lines.append(line)
            if line in ("\n", ""):
                return "".join(lines)

    async def request(self, message: object) -> object:
        await self.send(frame(json.dumps(message)))
        return parse_raw(await self.recv_raw())

    async def expect_closed(self) -> None:
        data = await asyncio.wait_for(self.reader.read(), READ_TIMEOUT)
        assert data == b"", "expected the server to close, got %r" % data[:200]

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def frame(text: str) -> str:
    """Independent implementation of the framing rule (docs/protocol.md §3)."""
    if len(text) <= 32766:
        return text + "\n"
    chunks = [text[i:i + 32767] + "\n" for i in range(0, len(text), 32767)]
    return '{"chunk-stream": null}\n' + "".join(chunks) + "\n"


def parse_raw(raw: str) -> object:
    """Parse what ``recv_raw`` returned (joining chunk lines, removing only '\\n')."""
    lines = raw.split("\n")
    head = json.loads(lines[0])
    if isinstance(head, dict) and "chunk-stream" in head:
        return json.loads("".join(lines[1:-2]))
    return head


def free_refused_address() -> socket.socket:
    """A bound, never-listening TCP socket: connecting to its port is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def open_slow_socket(address: str) -> socket.socket:
    """A non-blocking TCP socket with a 4 KiB receive buffer: the server's writes to
    it soon have to wait for the test to read."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock
