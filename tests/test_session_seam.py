"""The listener seam (asyncrpc.session): a kind of session other than JSON lines,
handed to the same ``AsyncServer.admit``, is admitted, evicted, timed out, stopped
and logged through the ``Session`` interface alone; and SIGHUP runs a serving
process's ``on_reload`` hooks (asyncrpc.process), which the runtime fills."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import List, Optional

import pytest

from prserv.asyncrpc import AsyncServer, AsyncServerConnection
from prserv.asyncrpc.connection import Connection
from prserv.asyncrpc.exceptions import ConnectionClosedError
from prserv.asyncrpc.limits import Limits
from prserv.asyncrpc.session import Session
from waiting import until

LOGGER = logging.getLogger("test.seam")


class EchoSession(Session):
    """Another kind of session: no setup, each line echoed back."""

    def __init__(self, connection: Connection) -> None:
        self.begin(connection, LOGGER)
        self.setup_done = True
        self.answering = False

    async def process_requests(self) -> None:
        try:
            while True:
                line = await self.connection.recv_line()
                self.requests += 1
                self.answering = True
                await self.connection.send_lines([line])
                self.answering = False
        except ConnectionClosedError:
            pass
        finally:
            await self.close()
            self.log_closed()

    def silent_since(self) -> Optional[float]:
        if self.evicted or self.answering:
            return None
        return self.connection.last_activity

    def stop_receiving(self) -> None:
        self.end_reason = "server stopping"
        asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        await self.connection.close()


class EchoServer(AsyncServer):
    def __init__(self, limits: Limits) -> None:
        super().__init__(LOGGER, limits)

    def accept_client(self, connection: Connection) -> Session:
        return EchoSession(connection)


@pytest.fixture
async def echo_server():
    servers: List[EchoServer] = []

    async def start(**limits) -> EchoServer:
        server = EchoServer(Limits(**limits))
        server.start_server("127.0.0.1:0")
        await server.start_serving()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop_serving()


async def connect(server: AsyncServer):
    host, port = server.address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def echo(reader, writer, text: str) -> str:
    writer.write(text.encode() + b"\n")
    await writer.drain()
    return (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\n")


async def closed(reader) -> bool:
    return await asyncio.wait_for(reader.read(), 10) == b""


def test_the_json_lines_session_implements_the_whole_interface():
    assert issubclass(AsyncServerConnection, Session)
    assert not AsyncServerConnection.__abstractmethods__


async def test_another_kind_of_session_is_served_and_logged_through_the_interface(echo_server, caplog):
    caplog.set_level(logging.INFO, LOGGER.name)
    server = await echo_server()
    reader, writer = await connect(server)
    assert await echo(reader, writer, "one") == "one"
    assert await echo(reader, writer, "two") == "two"
    ((session, _),) = server.sessions.items()
    assert isinstance(session, EchoSession)
    writer.close()
    await until(lambda: not server.sessions)
    assert "connection closed after 2 requests in" in caplog.text
    assert "s: closed by the client" in caplog.text


async def test_the_idle_timeout_ends_it(echo_server, caplog):
    server = await echo_server(idle_timeout=0.2)
    reader, writer = await connect(server)
    assert await echo(reader, writer, "x") == "x"
    assert await closed(reader)
    assert "idle for more than 0.2 s (idle_timeout)" in caplog.text
    writer.close()


async def test_admission_evicts_its_longest_idle_for_a_newcomer_from_the_same_address(echo_server, caplog):
    caplog.set_level(logging.INFO, LOGGER.name)
    server = await echo_server(max_connections_per_address=1)
    first_reader, first_writer = await connect(server)
    assert await echo(first_reader, first_writer, "first") == "first"
    second_reader, second_writer = await connect(server)
    assert await echo(second_reader, second_writer, "second") == "second"
    assert await closed(first_reader)
    assert "closed to admit a new connection from the same address" in caplog.text
    assert [s.evicted for s in server.sessions] == [False]
    first_writer.close()
    second_writer.close()


async def test_shutdown_stops_it(echo_server):
    server = await echo_server(shutdown_timeout=5)
    reader, writer = await connect(server)
    assert await echo(reader, writer, "x") == "x"
    started = time.monotonic()
    await server.stop_serving()
    assert time.monotonic() - started < 3
    assert await closed(reader)
    writer.close()


def test_sighup_calls_the_reload_hooks_in_order_and_the_process_goes_on(tmp_path):
    marks = tmp_path / "marks"
    server = EchoServer(Limits())
    server.start_server("127.0.0.1:0")
    server.on_reload.append(lambda: marks.open("a").write("first\n"))
    server.on_reload.append(lambda: marks.open("a").write("second\n"))
    process = server.serve_as_process()
    try:
        for times in (1, 2):
            os.kill(process.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not (marks.exists() and marks.read_text().count("second") == times):
                assert time.monotonic() < deadline, "the hooks did not run"
                time.sleep(0.02)
        assert marks.read_text() == "first\nsecond\n" * 2
        assert process.is_alive()
    finally:
        process.terminate()
        process.join(10)
    assert process.exitcode == 0
