"""Client behaviour: lazy connect, retries, timeouts, invoke-errors (prserv.client)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

import prserv
from eager_context import start_from_a_callback
from peers import CLOSE, SILENT, ScriptedPeer
from prserv.asyncrpc import websocket
from prserv.asyncrpc import AddressError, InvokeError
from prserv.client import PRAsyncClient


async def client_for(address, timeout=30) -> PRAsyncClient:
    client = PRAsyncClient(timeout=timeout)
    await client.connect_address(address)
    return client


async def test_connects_lazily():
    peer = ScriptedPeer(lambda request, n: '{"alive": true}')
    address = await peer.start()
    client = await client_for(address)
    assert peer.connections == 0
    assert await client.ping() == {"alive": True}
    assert await client.ping() == {"alive": True}
    assert peer.connections == 1
    await client.close()
    await peer.stop()


async def test_four_attempts_then_connection_error():
    peer = ScriptedPeer(lambda request, n: CLOSE)
    address = await peer.start()
    client = await client_for(address)
    with pytest.raises(ConnectionError):
        await client.getPR("v", "a", "c")
    assert peer.connections == 4
    assert len(peer.requests) == 4 and all("get-pr" in r for r in peer.requests)
    await client.close()
    await peer.stop()


async def test_lost_answer_is_retried_on_a_new_connection():
    peer = ScriptedPeer(lambda request, n: CLOSE if n == 1 else '{"value": "5"}')
    address = await peer.start()
    client = await client_for(address)
    assert await client.getPR("v", "a", "c") == "5"
    assert peer.connections == 2
    await client.close()
    await peer.stop()


async def test_read_timeout_counts_as_failed_attempt():
    peer = ScriptedPeer(lambda request, n: SILENT)
    address = await peer.start()
    client = await client_for(address, timeout=0.1)
    with pytest.raises(ConnectionError):
        await client.ping()
    assert peer.connections == 4
    await client.close()
    await peer.stop()


async def test_garbage_answer_is_retried():
    peer = ScriptedPeer(lambda request, n: "not json" if n < 3 else '{"value": true}')
    address = await peer.start()
    client = await client_for(address)
    assert await client.test_package("v", "a") is True
    assert peer.connections == 3
    await client.close()
    await peer.stop()


async def test_invoke_error_raises_without_retry_and_next_call_reconnects():
    peer = ScriptedPeer(lambda request, n: '{"invoke-error": {"message": "nope"}}' if n == 1 else '{"alive": true}')
    address = await peer.start()
    client = await client_for(address)
    with pytest.raises(InvokeError, match="nope"):
        await client.ping()
    assert peer.connections == 1 and len(peer.requests) == 1
    assert await client.ping() == {"alive": True}
    assert peer.connections == 2 and len(peer.requests) == 2
    await client.close()
    await peer.stop()


async def test_empty_answers_give_none():
    peer = ScriptedPeer(lambda request, n: "null" if n == 1 else "{}")
    address = await peer.start()
    client = await client_for(address)
    assert await client.importone("v", "a", "c", 1) is None
    assert await client.export(None, None, None, False) is None
    await client.close()
    await peer.stop()


async def test_refused_connection_raises_connection_error():
    peer = ScriptedPeer(lambda request, n: CLOSE)
    address = await peer.start()
    await peer.stop()
    await peer.server.wait_closed()
    client = await client_for(address)
    with pytest.raises(ConnectionError):
        await client.ping()
    await client.close()


def test_create_client_rejects_bad_address():
    with pytest.raises(AddressError):
        prserv.create_client("no-port")


def test_blocking_client_context_manager(tmp_path, process_servers):
    server = process_servers("127.0.0.1:0", str(tmp_path / "b.sqlite3"))
    with prserv.create_client(server.address) as client:
        assert client.getPR("v", "a", "c") == "0"
        assert client.export(None, None, None, False, True)[1] == \
            [{"version": "v", "pkgarch": "a", "checksum": "c", "value": "0"}]
    assert client.loop is None
    with pytest.raises(ConnectionError):
        client.ping()


# --------------------------------------------------------------------------- deadlines

class Unanswered:
    """Servers that never answer, one way for each deadline of the client."""

    async def __aenter__(self) -> "Unanswered":
        # TCP listener with a full accept queue: Linux drops a new SYN, connect hangs.
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.queued = socket.create_connection(self.listener.getsockname())
        # Accepts TCP and says nothing: a websocket opening handshake hangs.
        self.mute = await asyncio.start_server(lambda reader, writer: reader.read(), "127.0.0.1", 0)
        # A websocket server that reads requests and never answers.
        self.websocket = await websocket.serve(self._read_forever, "127.0.0.1", 0, 1 << 20)
        return self

    @staticmethod
    async def _read_forever(connection, *path) -> None:
        async for _ in connection:
            pass

    def address(self, kind: str) -> str:
        if kind == "tcp connect":
            return "127.0.0.1:%d" % self.listener.getsockname()[1]
        if kind == "websocket handshake":
            return "ws://127.0.0.1:%d" % self.mute.sockets[0].getsockname()[1]
        return "ws://127.0.0.1:%d" % list(self.websocket.sockets)[0].getsockname()[1]

    async def __aexit__(self, *exc_info) -> None:
        self.websocket.close()
        self.mute.close()
        self.queued.close()
        self.listener.close()


@pytest.mark.parametrize("kind", ["tcp connect", "websocket handshake", "websocket answer"])
async def test_client_deadlines_hold_when_started_without_a_task(kind):
    """Every deadline of the client (connect, websocket handshake, reading an answer)
    works in a plain callback with no task, on every Python: a client inside a
    server's request (the upstream pool) may run there."""
    async with Unanswered() as servers:
        client = await client_for(servers.address(kind), timeout=0.1)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await start_from_a_callback(lambda: client.ping())
        assert time.monotonic() - started < 4          # 4 attempts of 0.1 s each, and set-up
        await client.close()
