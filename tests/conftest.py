"""Shared fixtures: real servers on 127.0.0.1 port 0 with SQLite files in tmp dirs, or
databases of a real PostgreSQL the session starts (``pgcluster``).

A test module runs its servers on both engines by defining ``engine_kind`` as a
fixture with ``params=ENGINES`` (the default here is SQLite alone)."""

from __future__ import annotations

import os
from typing import AsyncIterator, Awaitable, Callable, Dict, List

import pytest

import prserv
from prserv.serv import PRServer

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
"""The engines a module's servers run on.  PostgreSQL's runs of the server and upstream
suites are marked slow: CI runs them under the default Python, and test_postgresql.py
(what only a shared database has) under every Python."""


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL for the whole session (started on first use)."""
    from pgcluster import Cluster

    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def engine_kind() -> str:
    return "sqlite"


@pytest.fixture
def database_for(engine_kind, tmp_path, request) -> Callable[[str], str]:
    """``database_for(name)``: the SQLite file ``tmp_path/name``, or under PostgreSQL a
    fresh database per name (the same name gives the same database in one test)."""
    made: Dict[str, str] = {}

    def make(name: str = "pr.sqlite3") -> str:
        if engine_kind.startswith("sqlite"):
            return str(tmp_path / name)
        if name not in made:
            made[name] = request.getfixturevalue("pg_cluster").new_database()
        return made[name]

    return make


@pytest.fixture
async def start_server(database_for) -> AsyncIterator[Callable[..., Awaitable[PRServer]]]:
    """Start in-process servers (this test's event loop); all stopped at the end."""
    servers: List[PRServer] = []

    async def start(addr: str = "127.0.0.1:0", db: str = "pr.sqlite3", upstream=None,
                    read_only: bool = False, **options) -> PRServer:
        server = prserv.create_server(addr, database_for(db), upstream=upstream, read_only=read_only,
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
