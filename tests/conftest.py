"""Shared fixtures: real servers on 127.0.0.1 port 0 with SQLite files in tmp dirs."""

from __future__ import annotations

import os
from typing import AsyncIterator, Awaitable, Callable, List

import pytest

import prserv
from prserv.serv import PRServer

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")


@pytest.fixture
async def start_server(tmp_path) -> AsyncIterator[Callable[..., Awaitable[PRServer]]]:
    """Start in-process servers (this test's event loop); all stopped at the end."""
    servers: List[PRServer] = []

    async def start(addr: str = "127.0.0.1:0", db: str = "pr.sqlite3", upstream=None,
                    read_only: bool = False, **options) -> PRServer:
        server = prserv.create_server(addr, str(tmp_path / db), upstream=upstream, read_only=read_only,
                                      **options)
        await server.start_serving()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop_serving()


@pytest.fixture
def process_servers():
    """Servers in forked child processes (``serve_as_process``); terminated at the end."""
    started: List[PRServer] = []

    def start(addr: str, dbpath: str, upstream=None, read_only: bool = False, **options) -> PRServer:
        server = prserv.create_server(addr, dbpath, upstream=upstream, read_only=read_only, **options)
        server.serve_as_process()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        if server.process.is_alive():
            server.process.terminate()
        server.process.join(10)


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*argv)`` -> (exit code, stdout, stderr) of the ``prserv`` command, run in
    this process with no ``PRSERV_*`` variable set."""
    from prserv.cli import tool

    for name in list(os.environ):
        if name.startswith("PRSERV_"):
            monkeypatch.delenv(name)

    def run(*argv: str):
        try:
            code = tool.main(list(argv))
        except SystemExit as exc:               # argparse refusing the arguments
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
