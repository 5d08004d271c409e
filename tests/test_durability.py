"""Sync modes: nothing acknowledged is lost (immediate), buffers seen by the next
request, exclusive files for buffered modes, several writer processes on one file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

import prserv
from prserv.client import PRAsyncClient
from prserv.errors import DatabaseError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin", "bitbake-prserv")


def start(tmp_path, db: str, *flags: str) -> Tuple[subprocess.Popen, str]:
    """A ``--foreground`` server process and its TCP address (from its announce line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    process = subprocess.Popen([sys.executable, BIN, "-F", "-f", str(tmp_path / db),
                                "--bind", "127.0.0.1:0", *flags],
                               stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stderr:
        if " serving " in line:
            return process, line.split(" on ", 1)[1].split()[0].rstrip(",")
    process.wait(10)
    raise AssertionError("server did not start (exit %s)" % process.returncode)


def rows(path) -> List[Tuple[str, str, str, str]]:
    with sqlite3.connect(str(path)) as conn:
        return sorted(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))


async def load_until_killed(address: str, process: subprocess.Popen, clients: int,
                            kill_after: int) -> Dict[Tuple[str, str], str]:
    """get-pr for new checksums from ``clients`` connections; SIGKILL the server once
    ``kill_after`` answers have arrived; return every answer received."""
    answers: Dict[Tuple[str, str], str] = {}

    async def client(n: int) -> None:
        c = PRAsyncClient(timeout=5)
        await c.connect_address(address)
        try:
            for i in range(100000):
                package, checksum = "pkg%d-1.0-r0" % (i % 4), "c%d-%d" % (n, i)
                value = await c.getPR(package, "core2-64", checksum)
                answers[(package, checksum)] = value
                if len(answers) == kill_after:
                    process.send_signal(signal.SIGKILL)
        except (ConnectionError, OSError):
            return
        finally:
            await c.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return answers


async def test_sigkill_under_load_loses_no_answered_value(tmp_path):
    process, address = start(tmp_path, "pr.sqlite3")
    answers = await load_until_killed(address, process, clients=16, kill_after=1500)
    assert process.wait(10) == -signal.SIGKILL
    assert len(answers) >= 1500
    stored = {(version, checksum): value for version, _, checksum, value in rows(tmp_path / "pr.sqlite3")}
    missing = {key: value for key, value in answers.items() if stored.get(key) != value}
    assert missing == {}
    per_package: Dict[str, List[str]] = {}
    for (package, _), value in answers.items():
        per_package.setdefault(package, []).append(value)
    assert all(len(values) == len(set(values)) for values in per_package.values())

    process, address = start(tmp_path, "pr.sqlite3")               # restarts and continues
    try:
        async with PRAsyncClient() as c:
            await c.connect_address(address)
            top = max(int(v) for (p, _), v in answers.items() if p == "pkg0-1.0-r0")
            assert int(await c.getPR("pkg0-1.0-r0", "core2-64", "after")) > top
    finally:
        process.terminate()
        assert process.wait(10) == 0


@pytest.mark.parametrize("mode", ["periodic:30", "on-shutdown"])
def test_buffered_modes_answer_from_the_buffer_and_commit_on_sigterm(tmp_path, mode):
    process, address = start(tmp_path, "pr.sqlite3", "--sync-mode", mode)
    try:
        with prserv.create_client(address) as c:
            assert [c.getPR("1.0-r0", "x86", "c%d" % i) for i in range(5)] == ["0", "1", "2", "3", "4"]
            assert c.getPR("1.0-r0", "x86", "c4") == "4"
            assert c.max_package_pr("1.0-r0", "x86") == "4"
        # the buffer is this process's alone: another server cannot open the file
        with pytest.raises(DatabaseError, match="in use by another process"):
            prserv.db.PRData(str(tmp_path / "pr.sqlite3"))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert rows(tmp_path / "pr.sqlite3") == [("1.0-r0", "x86", "c%d" % i, str(i)) for i in range(5)]


def test_on_shutdown_mode_loses_the_run_on_sigkill_but_stays_consistent(tmp_path):
    process, address = start(tmp_path, "pr.sqlite3")
    with prserv.create_client(address) as c:
        assert c.getPR("1.0-r0", "x86", "kept") == "0"
    process.terminate()
    assert process.wait(10) == 0

    process, address = start(tmp_path, "pr.sqlite3", "--sync-mode", "on-shutdown")
    with prserv.create_client(address) as c:
        assert c.getPR("1.0-r0", "x86", "lost") == "1"
    process.kill()
    process.wait(10)
    assert rows(tmp_path / "pr.sqlite3") == [("1.0-r0", "x86", "kept", "0")]


def test_immediate_mode_allows_several_writer_processes(tmp_path):
    servers = [start(tmp_path, "shared.sqlite3") for _ in range(3)]
    try:
        async def hammer(address: str, n: int) -> List[str]:
            async with PRAsyncClient() as c:
                await c.connect_address(address)
                return [await c.getPR("1.0-r0", "x86", "p%d-c%d" % (n, i)) for i in range(60)]

        async def all_servers() -> List[List[str]]:
            return await asyncio.gather(*(hammer(address, n * 4 + k)
                                          for n, (_, address) in enumerate(servers) for k in range(4)))

        values = [v for answers in asyncio.run(all_servers()) for v in answers]
        assert len(values) == 720 and sorted(values, key=int) == [str(i) for i in range(720)]
    finally:
        for process, _ in servers:
            process.terminate()
            assert process.wait(10) == 0


async def test_no_answer_is_written_before_its_value_is_committed(tmp_path, start_server, monkeypatch):
    """Deterministic counterpart of the SIGKILL test: at the moment the server writes
    an answer to the socket, another connection to the file already sees the row."""
    from prserv.asyncrpc.stream import StreamConnection

    server = await start_server(db="pr.sqlite3")
    observer = sqlite3.connect(str(tmp_path / "pr.sqlite3"))
    seen_at_write: List[Tuple[str, bool]] = []
    original_write = StreamConnection._write

    def write(self, data: bytes) -> None:
        if data.startswith(b'{"value": "'):
            value = data.decode().split('"')[3]
            row = observer.execute("SELECT 1 FROM PRMAIN WHERE checksum = ? AND value = ?",
                                   ("c" + value, value)).fetchone()
            seen_at_write.append((value, row is not None))
        original_write(self, data)

    monkeypatch.setattr(StreamConnection, "_write", write)
    async with PRAsyncClient() as client:
        await client.connect_address(server.address)
        for i in range(30):
            assert await client.getPR("p-1.0-r0", "core2-64", "c%d" % i) == str(i)
    observer.close()
    assert seen_at_write == [(str(i), True) for i in range(30)]


async def test_the_servers_log_starts_over_while_clients_keep_writing(tmp_path, start_server, monkeypatch):
    """Under writes that never pause, the server's WAL is copied in the background and
    started over after a commit (``GroupCommit(after_commit=...)``): it stays near its
    threshold instead of growing for ever (1.4 GB in 16 s of new-PR load before)."""
    from prserv.storage.sqlite import checkpoint

    monkeypatch.setattr(checkpoint, "WAL_COPY_BYTES", 16 << 10)
    monkeypatch.setattr(checkpoint, "WAL_RESTART_BYTES", 64 << 10)
    monkeypatch.setattr(checkpoint, "WAL_CHECK_INTERVAL", 0.001)
    server = await start_server()
    checkpointer = server.engine.db.checkpointer
    wal = server.dbfile + "-wal"
    largest, asked = 0, 0
    async with await prserv.create_async_client(server.address) as client:
        while checkpointer.tails < 5:       # progress of the real thread, not a sleep
            assert await client.getPR("pkg-1.0-r0", "x86", "c%d" % asked) == str(asked)
            asked += 1
            largest = max(largest, os.path.getsize(wal))
            assert asked < 5_000, "no tail checkpoint after %d writes" % asked
    assert largest < 1 << 20, largest
    assert len(rows(server.dbfile)) == asked
