"""Test peers that sit where an upstream server would.

``Relay`` forwards TCP traffic to a real server, counting connections; it can
delay the server's replies (to widen race windows) and drop every connection.
``ScriptedPeer`` completes setup and answers each request with whatever a
function of the request returns (garbage, invoke-errors, a close, silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Callable, List, Optional, Set


class Relay:
    def __init__(self, target: str, reply_delay: float = 0.0) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host.strip("[]"), int(port))
        self.reply_delay = reply_delay
        self.connections = 0
        self.server: Optional[asyncio.AbstractServer] = None
        self._writers: Set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _handle(self, client_reader, client_writer) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(self._pipe(client_reader, server_writer, 0.0),
                             self._pipe(server_reader, client_writer, self.reply_delay),
                             return_exceptions=True)

    async def _pipe(self, reader, writer, delay: float) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if delay:
                    await asyncio.sleep(delay)      # simulated network latency
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def stop(self) -> None:
        self.server.close()
        self.drop_connections()
        await self.server.wait_closed()


CLOSE = "close"
SILENT = "silent"


class ScriptedPeer:
    """A server that completes setup, then answers request number ``n`` (from 1, over
    all connections) with ``answer(request, n)``: a line to send, ``CLOSE`` to close
    the connection, or ``SILENT`` to say nothing until the peer gives up."""

    def __init__(self, answer: Callable[[dict, int], str]) -> None:
        self.answer = answer
        self.requests: List[dict] = []
        self.connections = 0
        self.server: Optional[asyncio.AbstractServer] = None
        self._writers: set = set()

    async def start(self, port: int = 0) -> str:
        """Listen on ``port`` (0: any free one; else where a stopped server was)."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while (await reader.readline()).strip():
                pass
            while True:
                line = await reader.readline()
                if not line:
                    return
                request = json.loads(line)
                self.requests.append(request)
                reply = self.answer(request, len(self.requests))
                if reply == CLOSE:
                    return
                if reply == SILENT:
                    await reader.read()
                    return
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        """Stop listening and close the connections still open (since Python 3.12
        ``wait_closed`` waits for them: the server under test keeps its upstream pool)."""
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)
