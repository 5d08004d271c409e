"""A PostgreSQL outage costs the builds time, not failed tasks.

A build host raises on an error answer and fails its packaging task; a late answer
only costs time.  So a server waits out an outage (``db_outage_wait``) and answers
after it, and a failover to a synchronous standby must not lose or double an
acknowledged value.  The databases here are real: a primary and its synchronous
standby of the test's own with durable settings (``pgpair``), stopped as in a crash
and promoted; servers and mirrors are real processes, clients real connections.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from typing import Dict, List, Tuple

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from prserv.asyncrpc.limits import Limits

from pgpair import Node, Pair
from processes import start_process

V, A = "zlib-1.3-r0", "core2-64"
CLIENTS = 8


def stop(process, sig=signal.SIGTERM):
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(30)


class Load:
    """``CLIENTS`` connections asking get-pr of new checksums of one package in a
    loop, each on a connection of its own, until stopped; what each was answered."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.answers: Dict[str, str] = {}
        self.sequences: List[List[int]] = [[] for _ in range(CLIENTS)]
        self.errors: List[Tuple[str, str]] = []
        self.longest = 0.0
        self.requests = 0
        self._stopping = asyncio.Event()
        self._tasks: List["asyncio.Task[None]"] = []

    def start(self) -> "Load":
        self._tasks = [asyncio.ensure_future(self._client(n)) for n in range(CLIENTS)]
        return self

    async def answered(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` more requests have been answered."""
        target = len(self.answers) + count
        deadline = time.monotonic() + timeout
        while len(self.answers) < target:
            assert time.monotonic() < deadline, "the load stalled: %d errors %r" % (len(self.errors), self.errors[:3])
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, n: int) -> None:
        client = await prserv.create_async_client(self.address)
        try:
            i = 0
            while not self._stopping.is_set():
                checksum = "c%d-%d" % (n, i)
                i += 1
                started = time.monotonic()
                try:
                    value = await client.getPR(V, A, checksum)
                except (InvokeError, ConnectionError) as exc:
                    self.errors.append((checksum, str(exc)))
                    continue
                finally:
                    self.requests += 1
                    self.longest = max(self.longest, time.monotonic() - started)
                self.answers[checksum] = value
                self.sequences[n].append(int(value))
        finally:
            await client.close()


def rows(node: Node, database: str) -> List[Tuple[str, str]]:
    out = node.psql("SELECT checksum, value FROM prmain WHERE version = '%s' AND pkgarch = '%s' ORDER BY id"
                    % (V, A), database)
    return [tuple(line.split("|")) for line in out.splitlines() if line]      # type: ignore[misc]


def assert_nothing_lost_or_doubled(load: Load, stored: List[Tuple[str, str]]) -> None:
    by_checksum: Dict[str, List[str]] = {}
    for checksum, value in stored:
        by_checksum.setdefault(checksum, []).append(value)
    for checksum, value in load.answers.items():
        assert by_checksum.get(checksum) == [value], (checksum, value, by_checksum.get(checksum))
    values = [value for _, value in stored]
    assert len(values) == len(set(values)), "a value held by two checksums"
    for sequence in load.sequences:             # each client's new checksums: ever larger values
        assert sequence == sorted(set(sequence))


def outage_lines(lines: List[str]) -> Tuple[List[str], List[str]]:
    out = [line for line in lines if " is out (" in line]
    back = [line for line in lines if " is back after " in line]
    return out, back


@pytest.fixture
def pair():
    started = Pair().start()
    yield started
    started.stop()


async def test_a_failover_under_load_answers_every_request_and_loses_nothing(tmp_path, pair):
    server, address, lines = start_process(tmp_path, "-f", pair.url)
    mirror, mirror_address, _ = start_process(tmp_path, "--mirror", address, "--mirror-timeout", "1",
                                              db="mirror.sqlite3")
    try:
        load = Load(address).start()
        await load.answered(300)
        failover = await asyncio.get_running_loop().run_in_executor(None, pair.fail_over, 1.0)
        answered_before = len(load.answers)
        await load.answered(300)                        # the promoted standby serves
        await load.stop()
        print("\nfailover: %d requests, %d errors, longest answer %.2f s, primary stopped to standby "
              "promoted %.2f s, %d answered after the failover; %d slow-commit warnings" % (
                  load.requests, len(load.errors), load.longest, failover, len(load.answers) - answered_before,
                  len([line for line in lines if "has waited" in line])))
        assert load.errors == []
        stored = rows(pair.standby, pair.database)
        assert_nothing_lost_or_doubled(load, stored)
        async with await prserv.create_async_client(address) as client:
            for checksum, value in list(load.answers.items())[::97]:
                assert await client.test_pr(V, A, checksum) == value        # answered unchanged
        # A mirror of this server follows it across the failover, not diverged.
        deadline = time.monotonic() + 30
        while True:
            async with await prserv.create_async_client(mirror_address) as client:
                state = await client.mirror_status()
            assert state["state"] != "diverged", state.get("reason")
            if state["state"] == "following" and state["rows_behind"] == 0 and \
                    await _mirror_rows(mirror_address) == len(stored):
                break
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.05)
        async with await prserv.create_async_client(mirror_address) as client:
            for checksum, value in list(load.answers.items())[::53]:
                assert await client.test_pr(V, A, checksum) == value
    finally:
        stop(mirror)
        stop(server)
    out, back = outage_lines(lines)
    print("".join(out + back))
    assert len(out) == 1 and "127.0.0.1" in out[0] and "WARNING" in out[0]
    assert len(back) == 1 and "INFO" in back[0]
    assert not any("Traceback" in line for line in lines)


async def _mirror_rows(address: str) -> int:
    async with await prserv.create_async_client(address) as client:
        _, rows = await client.export(None, None, None, False, history=True)
        return len(rows)


async def test_a_restart_under_load_answers_every_request(tmp_path, pair):
    server, address, lines = start_process(tmp_path, "-f", pair.url)
    try:
        load = Load(address).start()
        await load.answered(200)
        await asyncio.get_running_loop().run_in_executor(None, _restart, pair.primary)
        await load.answered(200)
        await load.stop()
        assert load.errors == []
        assert_nothing_lost_or_doubled(load, rows(pair.primary, pair.database))
    finally:
        stop(server)
    out, back = outage_lines(lines)
    assert (len(out), len(back)) == (1, 1)


def _restart(node: Node) -> None:
    node.stop("fast")
    node.start()


async def test_an_outage_longer_than_the_wait_is_an_error_after_the_wait_then_service_again(tmp_path, pair):
    server, address, lines = start_process(tmp_path, "-f", pair.url, "--db-outage-wait", "1.5")
    try:
        assert await _get_pr(address, "before") == "0"
        for node in pair.nodes:
            node.stop("fast")
        started = time.monotonic()
        with pytest.raises(InvokeError, match=r"^the database postgresql://postgres@127\.0\.0\.1:\d+,127\.0\.0\.1:"
                           r"\d+/prserv\?target_session_attrs=read-write is unreachable or not the primary, "
                           r"waited 1\.5 s \(db_outage_wait\): "):
            async with await prserv.create_async_client(address) as client:
                await client.getPR(V, A, "during")
        waited = time.monotonic() - started
        assert 1.5 <= waited < 5.0
        for node in pair.nodes:
            node.start()
        async with await prserv.create_async_client(address) as client:
            assert await client.getPR(V, A, "after") == "1"     # "during" was never stored
            assert await client.test_pr(V, A, "before") == "0"
    finally:
        stop(server)
    out, back = outage_lines(lines)
    assert (len(out), len(back)) == (1, 1)
    assert "1 request(s) waited for it, 1 of them answered with an error after 1.5 s" in back[0]
    assert not any("Traceback" in line or "database error" in line for line in lines)


async def test_a_demoted_primary_is_left_for_the_new_one(tmp_path, pair):
    server, address, lines = start_process(tmp_path, "-f", pair.url)
    try:
        async with await prserv.create_async_client(address) as client:
            acknowledged = {"k%d" % i: await client.getPR(V, A, "k%d" % i) for i in range(20)}
        # The standby becomes the primary; the old one stays up, but read-only.
        pair.standby.promote()
        pair.primary.psql("ALTER SYSTEM SET default_transaction_read_only = on")
        pair.primary.psql("ALTER SYSTEM SET synchronous_standby_names = ''")
        pair.primary.psql("SELECT pg_reload_conf()")
        # pg_reload_conf() only signals the postmaster: until it has read the file (a
        # fresh session sees it), the server's pooled session could still write there.
        pair.wait_for(lambda: pair.primary.psql("SHOW default_transaction_read_only") == "on",
                       "the old primary to be read-only")
        async with await prserv.create_async_client(address) as client:
            for i in range(20, 40):
                assert await client.getPR(V, A, "k%d" % i) == str(i)
            for checksum, value in acknowledged.items():
                assert await client.test_pr(V, A, checksum) == value
        assert [value for _, value in rows(pair.standby, pair.database)] == [str(i) for i in range(40)]
        assert len(rows(pair.primary, pair.database)) == 20
    finally:
        stop(server)
    out, back = outage_lines(lines)
    assert len(out) == 1 and "ReadOnlySQLTransactionError" in out[0]


async def test_a_host_that_drops_packets_does_not_hold_up_the_next(tmp_path, pair):
    """The first host of the URL accepts TCP connections and never answers (packets
    dropped past the handshake): each attempt on it is bounded, and the next host
    serves."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held: List[socket.socket] = []
    accepting = threading.Thread(target=_hold_connections, args=(silent, held), daemon=True)
    accepting.start()
    url = "postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?target_session_attrs=read-write&connect_timeout=1" % (
        silent.getsockname()[1], pair.primary.port, pair.database)
    try:
        started = time.monotonic()
        server, address, _ = start_process(tmp_path, "-f", url)
        try:
            async with await prserv.create_async_client(address) as client:
                assert await client.getPR(V, A, "c") == "0"
            assert time.monotonic() - started < 10.0       # asyncpg alone: 60 s on the silent host
        finally:
            stop(server)
    finally:
        silent.close()
        for connection in held:
            connection.close()


def _hold_connections(listener: socket.socket, held: List[socket.socket]) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        held.append(connection)


async def test_shutdown_during_an_outage_ends_within_the_shutdown_timeout(tmp_path, pair):
    server, address, lines = start_process(tmp_path, "-f", pair.url, "--shutdown-timeout", "1")
    try:
        assert await _get_pr(address, "before") == "0"
        for node in pair.nodes:
            node.stop("immediate")
        waiting = asyncio.ensure_future(_get_pr(address, "during"))
        while not any(" is out (" in line for line in lines):
            await asyncio.sleep(0.02)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, server.wait, 30)
        assert time.monotonic() - started < 1.0 + 2.0
        assert server.returncode == 0
        with pytest.raises((ConnectionError, InvokeError)):
            await waiting
    finally:
        stop(server)


async def _get_pr(address: str, checksum: str) -> str:
    async with await prserv.create_async_client(address) as client:
        return await client.getPR(V, A, checksum)


async def test_a_commit_held_for_a_missing_standby_is_logged_and_never_cancelled(pair, caplog):
    """The standby is gone: PostgreSQL holds every commit.  The server logs the wait
    once and never cancels it (a cancelled wait leaves the commit on the primary
    alone).  Cancelled from outside, PostgreSQL says the commit is local only, and
    the server logs that at ERROR."""
    caplog.set_level(logging.INFO, logger="BitBake.PRserv")
    server = prserv.create_server("127.0.0.1:0", pair.url)
    await server.start_serving()
    try:
        server.engine.slow_commit_seconds = 0.3
        async with await prserv.create_async_client(server.address) as client:
            assert await client.getPR(V, A, "before") == "0"
        pair.standby.stop("fast")
        held = asyncio.ensure_future(_get_pr(server.address, "held"))
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        while not any("has waited 0.3 s" in record.getMessage() for record in caplog.records):
            assert not held.done()
            await asyncio.sleep(0.02)
        pid = pair.primary.psql(waiting)
        assert pid.isdigit()                                     # one commit, still waiting
        pair.primary.psql("SELECT pg_cancel_backend(%s)" % pid)
        assert await held == "1"                                 # committed on the primary alone
        errors = [record for record in caplog.records if record.levelname == "ERROR"]
        assert len(errors) == 1 and "committed locally" in errors[0].getMessage()
        assert "A value answered now may be lost" in errors[0].getMessage()
        warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
        assert len([w for w in warnings if "has waited 0.3 s" in w]) == 1
        assert any("commits on postgresql://" in record.getMessage() and "complete again" in record.getMessage()
                   for record in caplog.records if record.levelname == "INFO")
    finally:
        await server.stop_serving()


async def test_a_commit_waiting_for_a_missing_standby_is_not_cancelled_by_shutdown(pair, caplog):
    """Shutdown gives up on the request behind a held commit, but the commit itself is
    left waiting in PostgreSQL: cancelled, it would stay on the primary alone."""
    caplog.set_level(logging.INFO, logger="BitBake.PRserv")
    server = prserv.create_server("127.0.0.1:0", pair.url, limits=Limits(shutdown_timeout=0.3))
    await server.start_serving()
    stopped = False
    try:
        async with await prserv.create_async_client(server.address) as client:
            assert await client.getPR(V, A, "before") == "0"
        pair.standby.stop("fast")
        held = asyncio.ensure_future(_get_pr(server.address, "held"))
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        while pair.primary.psql(waiting) != "1":
            assert not held.done()
            await asyncio.sleep(0.02)
        await server.stop_serving()
        stopped = True
        with pytest.raises((ConnectionError, InvokeError)):
            await held
        assert pair.primary.psql(waiting) == "1"                # still waiting: never cancelled
        assert not any("committed locally" in record.getMessage() for record in caplog.records)
    finally:
        if not stopped:
            await server.stop_serving()


def test_a_failure_on_a_connection_older_than_the_last_outage_is_its_tail_not_a_new_one():
    """After an outage ends, a request still on a connection opened before it began
    can fail once more (CI saw a restart logged as two outages): that is the last
    outage's tail, not another; a failure on a newer connection, or while connecting,
    begins one."""
    from prserv.storage.postgresql.availability import Outage

    logged: List[str] = []

    class Log:
        def warning(self, message, *args):
            logged.append("out")

        def info(self, message, *args):
            logged.append("back")

    outage = Outage("postgresql://db/prserv", 20.0, Log(), lambda text: text)
    before = time.monotonic()
    outage.failed(OSError("refused"), True)                    # connecting: no connection
    assert outage.started is not None and outage.started >= before
    began = outage.started
    outage.reached(time.monotonic())                           # a connection opened since
    assert logged == ["out", "back"] and outage.started is None
    outage.failed(OSError("reset"), True, opened_at=began - 1.0)
    assert logged == ["out", "back"] and outage.started is None  # the tail: nothing begins
    outage.failed(OSError("reset"), True, opened_at=time.monotonic())
    assert logged == ["out", "back", "out"] and outage.started is not None
