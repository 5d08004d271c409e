"""Publishing mirrors: a read-only server that follows another over the PR protocol.

Sources and mirrors are real server processes (``bin/bitbake-prserv -F``); sources
that answer nonsense or nothing are ``ScriptedPeer``s.  A wait for a mirror to
reach a state polls its ``mirror-status`` with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import prserv
from prserv.asyncrpc import InvokeError
from prserv.server import mirror as mirroring
from prserv.storage import open_engine

from peers import CLOSE, SILENT, ScriptedPeer
from processes import start_process

V, A = "zlib-1.3-r0", "core2-64"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ("--mirror-timeout", "1")
"""A source silent for 1 s is given up on (the long-poll waits 0.5 s)."""


def fill(path, count, start=0, version=V):
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE IF NOT EXISTS PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
                 "checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                     [(version, A, "c%d" % i, str(i)) for i in range(start, start + count)])
    conn.commit()
    conn.close()


def table(path):
    """Every row, in rowid order (what bitbake's server would read)."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN ORDER BY rowid").fetchall()
    finally:
        conn.close()


def stop(process, sig=signal.SIGTERM):
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(15)


async def status(address):
    async with await prserv.create_async_client(address) as client:
        return await client.mirror_status()


async def wait_for(address, predicate, timeout=20.0):
    """The mirror's status once ``predicate(status)`` holds (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        current = await status(address)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError("mirror never reached the state; last status: %r" % current)
        await asyncio.sleep(0.02)


async def diverged_because(address):
    """Why the mirror stopped following (once it has)."""
    return (await wait_for(address, lambda s: s["state"] == "diverged"))["reason"]


async def following(address, position):
    return await wait_for(address, lambda s: s["state"] == "following" and s["position"] == position)


def start_mirror(tmp_path, source, *flags, db="mirror.sqlite3"):
    return start_process(tmp_path, "--mirror", source, *FAST, *flags, db=db)


# --------------------------------------------------------------------------- copying and following

async def test_a_mirror_copies_its_source_and_then_follows_it(tmp_path):
    fill(tmp_path / "pr.sqlite3", 12000)
    source, source_address, _ = start_process(tmp_path)
    mirror, address, lines = start_mirror(tmp_path, source_address)
    try:
        state = await following(address, "12000")
        assert (state["source"], state["complete"], state["rows_behind"]) == (source_address, True, 0)
        assert table(tmp_path / "mirror.sqlite3") == table(tmp_path / "pr.sqlite3")
        async with await prserv.create_async_client(source_address) as writer, \
                await prserv.create_async_client(address) as reader:
            assert state["identity"] == (await writer.mirror_pull(None, 1, 0))["identity"]
            assert await reader.is_readonly() is True
            assert await reader.test_pr(V, A, "c11999") == "11999"
            assert await reader.max_package_pr(V, A) == "11999"
            assert await reader.getPR(V, A, "unknown") == "12000"          # answered, not stored
            assert await reader.test_pr(V, A, "unknown") is None
            assert await reader.importone(V, A, "imp", "7") is None
            started = time.monotonic()
            assert await writer.getPR(V, A, "new") == "12000"
            await following(address, "12001")
            assert time.monotonic() - started < 1.0                     # a long-poll, not a timer
            assert await reader.test_pr(V, A, "new") == "12000"
            assert await reader.getPR(V, A, "new") == "12000"
    finally:
        stop(mirror)
        stop(source)
    assert table(tmp_path / "mirror.sqlite3") == table(tmp_path / "pr.sqlite3")
    assert any("Started PRServer" in line and "mirror of: %s" % source_address in line for line in lines)


async def test_a_mirror_answers_nothing_but_its_state_before_its_first_copy(tmp_path):
    peer = ScriptedPeer(lambda request, n: SILENT)
    silent = await peer.start()
    mirror, address, lines = start_mirror(tmp_path, silent)
    try:
        async with await prserv.create_async_client(address) as client:
            assert await client.ping() == {"alive": True}
            assert await client.is_readonly() is True
            state = await client.mirror_status()
            assert (state["state"], state["complete"], state["position"]) == ("catching-up", False, None)
            with pytest.raises(InvokeError, match=r"this mirror is catching up with %s \(" % silent):
                await client.getPR(V, A, "c")
        for call in (lambda c: c.test_pr(V, A, "c"), lambda c: c.max_package_pr(V, A),
                     lambda c: c.export(None, None, None, False)):
            async with await prserv.create_async_client(address) as client:
                with pytest.raises(InvokeError, match="catching up"):
                    await call(client)
        state = await wait_for(address, lambda s: s["state"] == "disconnected")
        assert "source %s is unreachable: " % silent in state["reason"]
        code, out, err = run_cli("--server", address, "mirror-status")
        assert (code, err) == (0, "")
        assert out.splitlines()[2:4] == ["position:   none yet", "behind:     unknown"]
        code, out, err = run_cli("--server", address, "--json", "mirror-status")
        state = json.loads(out)["mirror"]
        assert (code, state["position"], state["rows_behind"], state["source_behind"]) == (0, None, None, None)
        await reconnected(peer, 3)
    finally:
        stop(mirror)
        await peer.stop()
    assert sum("is unreachable" in line for line in lines) == 1          # logged once


async def test_a_mirror_follows_a_source_over_a_websocket(tmp_path):
    fill(tmp_path / "pr.sqlite3", 20)
    source, _, lines = start_process(tmp_path, "--bind", "ws://127.0.0.1:0")
    websocket = [word.rstrip(",") for line in lines if " serving " in line
                 for word in line.split() if word.startswith("ws://")][0]
    mirror, address, _ = start_mirror(tmp_path, websocket)
    try:
        assert (await following(address, "20"))["source"] == websocket
    finally:
        stop(mirror)
        stop(source)
    assert table(tmp_path / "mirror.sqlite3") == table(tmp_path / "pr.sqlite3")


async def test_a_source_of_exactly_full_batches_is_caught_up_without_waiting_on_it(tmp_path):
    fill(tmp_path / "pr.sqlite3", 10000)                # two batches of 5,000, nothing after
    source, source_address, _ = start_process(tmp_path)
    mirror, address, _ = start_mirror(tmp_path, source_address, "--mirror-timeout", "60")
    try:
        started = time.monotonic()
        await following(address, "10000")
        assert time.monotonic() - started < 10          # not after a 30 s long-poll
    finally:
        stop(mirror)
        stop(source)


async def copied_and_stopped(tmp_path, rows):
    """A source of ``rows`` rows copied by a mirror, both stopped; the source's address."""
    fill(tmp_path / "pr.sqlite3", rows)
    source, source_address, _ = start_process(tmp_path)
    mirror, mirror_address, _ = start_mirror(tmp_path, source_address)
    try:
        await following(mirror_address, str(rows))
    finally:
        stop(mirror)
        stop(source)
    return source_address


async def reconnected(peer, connections=2):
    """Once the mirror has dropped its connection to ``peer`` and come back (so often)."""
    deadline = time.monotonic() + 10
    while peer.connections < connections:
        assert time.monotonic() < deadline, "%d connections in 10 s" % peer.connections
        await asyncio.sleep(0.02)


async def test_a_mirror_restarted_after_its_first_copy_answers_at_once(tmp_path):
    source_address = await copied_and_stopped(tmp_path, 50)     # the source is gone now
    mirror, address, _ = start_mirror(tmp_path, source_address)
    try:
        async with await prserv.create_async_client(address) as client:
            assert await client.test_pr(V, A, "c49") == "49"
            assert (await client.mirror_status())["complete"] is True
    finally:
        stop(mirror)


async def test_killing_either_side_at_any_moment_skips_and_repeats_nothing(tmp_path):
    socket = "unix://" + str(tmp_path / "source.sock")
    source, source_address, _ = start_process(tmp_path, "--bind", socket)
    mirror, address, _ = start_mirror(tmp_path, socket)
    written = 0

    async def write(count):
        nonlocal written
        async with await prserv.create_async_client(source_address) as client:
            for _ in range(count):
                await client.getPR(V, A, "k%d" % written)
                written += 1

    try:
        for round_ in range(3):
            writing = asyncio.ensure_future(write(400))
            await asyncio.sleep(0.05 * (round_ + 1))    # a moment inside the copy: any will do
            mirror.send_signal(signal.SIGKILL)
            mirror.wait(10)
            await writing
            mirror, address, _ = start_mirror(tmp_path, socket)
        source.send_signal(signal.SIGKILL)
        source.wait(10)
        source, source_address, _ = start_process(tmp_path, "--bind", socket)
        await write(100)
        await following(address, str(written))
    finally:
        stop(mirror)
        stop(source)
    copied = table(tmp_path / "mirror.sqlite3")
    assert copied == table(tmp_path / "pr.sqlite3") and len(copied) == written == 1300
    conn = sqlite3.connect(str(tmp_path / "mirror.sqlite3"))
    positions = conn.execute("SELECT position FROM prserv_PRMAIN_positions ORDER BY row").fetchall()
    conn.close()
    assert positions == [(str(i),) for i in range(1, 1301)]


# --------------------------------------------------------------------------- chains and failover

async def test_a_mirror_of_a_mirror_fails_over_to_another_mirror_without_copying_again(tmp_path):
    fill(tmp_path / "pr.sqlite3", 3000)
    source, source_address, _ = start_process(tmp_path)
    first, first_address, _ = start_mirror(tmp_path, source_address, db="m1.sqlite3")
    second, second_address, _ = start_mirror(tmp_path, source_address, db="m2.sqlite3")
    chained, chained_address, _ = start_mirror(tmp_path, first_address, db="m3.sqlite3")
    try:
        state = await following(chained_address, "3000")
        identity = state["identity"]
        assert identity == (await following(first_address, "3000"))["identity"]
        stop(first)
        stop(chained)
        async with await prserv.create_async_client(source_address) as writer:
            await writer.getPR(V, A, "after")
        chained, chained_address, lines = start_mirror(tmp_path, second_address, db="m3.sqlite3")
        state = await following(chained_address, "3001")
        assert state["identity"] == identity
        assert table(tmp_path / "m3.sqlite3") == table(tmp_path / "pr.sqlite3")
        conn = sqlite3.connect(str(tmp_path / "m3.sqlite3"))
        assert conn.execute("SELECT max(rowid), count(*) FROM PRMAIN").fetchone() == (3001, 3001)
        conn.close()                                     # rows 1..3000 were kept, one added
    finally:
        for process in (chained, second, source):
            stop(process)


async def test_a_downstream_server_with_a_mirror_upstream_computes_what_the_source_gives(tmp_path):
    source, source_address, _ = start_process(tmp_path)
    async with await prserv.create_async_client(source_address) as writer:
        for i in range(5):
            await writer.getPR(V, A, "up%d" % i)
        await writer.getPR("other-1.0-r0", A, "o")
    mirror, mirror_address, _ = start_mirror(tmp_path, source_address)
    await following(mirror_address, "6")
    via_source, via_source_address, _ = start_process(tmp_path, "-u", source_address, db="d1.sqlite3")
    via_mirror, via_mirror_address, _ = start_process(tmp_path, "-u", mirror_address, db="d2.sqlite3")
    try:
        answers = []
        for address in (via_source_address, via_mirror_address):
            async with await prserv.create_async_client(address) as client:
                answers.append([await client.getPR(V, A, "up3"), await client.getPR(V, A, "local1"),
                                await client.getPR(V, A, "local2"), await client.getPR("other-1.0-r0", A, "x"),
                                await client.getPR("new-1.0-r0", A, "n")])
        assert answers[0] == answers[1] == ["3", "4.0", "4.1", "0.0", "0"]
    finally:
        for process in (via_mirror, via_source, mirror, source):
            stop(process)


async def test_a_read_only_source_on_a_file_bitbake_wrote_names_its_history_as_a_writer_later_does(tmp_path):
    socket = "unix://" + str(tmp_path / "s.sock")
    fill(tmp_path / "pr.sqlite3", 25)                   # no table of ours: bitbake wrote it
    source, _, _ = start_process(tmp_path, "-r", "--bind", socket)
    mirror, address, _ = start_mirror(tmp_path, socket)
    try:
        identity = (await following(address, "25"))["identity"]
        assert identity.startswith("rows-")             # derived from the first row
        stop(source)
        source, source_address, _ = start_process(tmp_path, "--bind", socket)     # now read-write
        async with await prserv.create_async_client(source_address) as writer:
            assert (await writer.mirror_pull(None, 1, 0))["identity"] == identity   # stored as derived
            await writer.getPR(V, A, "written")
        state = await following(address, "26")
        assert state["identity"] == identity
    finally:
        stop(mirror)
        stop(source)


async def test_a_read_only_server_on_the_mirrors_file_sees_rows_as_they_arrive(tmp_path):
    source, source_address, _ = start_process(tmp_path)
    mirror, mirror_address, _ = start_mirror(tmp_path, source_address)
    await following(mirror_address, None)
    reader, reader_address, _ = start_process(tmp_path, "-r", db="mirror.sqlite3")
    try:
        async with await prserv.create_async_client(source_address) as writer, \
                await prserv.create_async_client(reader_address) as client:
            for i in range(3):
                await writer.getPR(V, A, "r%d" % i)
                await following(mirror_address, str(i + 1))
                assert await client.test_pr(V, A, "r%d" % i) == str(i)
    finally:
        for process in (reader, mirror, source):
            stop(process)


async def test_a_mirrors_file_served_as_a_database_continues_from_its_maxima(tmp_path):
    await copied_and_stopped(tmp_path, 40)              # the source's host is lost
    promoted, address, lines = start_process(tmp_path, db="mirror.sqlite3")
    try:
        async with await prserv.create_async_client(address) as client:
            assert await client.is_readonly() is False
            assert await client.getPR(V, A, "c39") == "39"
            assert await client.getPR(V, A, "after-the-loss") == "40"
            assert await client.getPR("fresh-1.0-r0", A, "f") == "0"
            assert await client.mirror_status() is None
    finally:
        stop(promoted)
    assert any("it is now a database of its own" in line for line in lines)


# --------------------------------------------------------------------------- same history or stop

async def test_a_source_restored_from_an_older_copy_makes_the_mirror_stop(tmp_path):
    source_db = tmp_path / "pr.sqlite3"
    source, source_address, _ = start_process(tmp_path, "--bind", "unix://" + str(tmp_path / "s.sock"))
    socket = "unix://" + str(tmp_path / "s.sock")
    async with await prserv.create_async_client(source_address) as writer:
        for i in range(10):
            await writer.getPR(V, A, "h%d" % i)
    stop(source)
    shutil.copy(source_db, tmp_path / "old.sqlite3")    # a backup of 10 rows
    source, source_address, _ = start_process(tmp_path, "--bind", socket)
    async with await prserv.create_async_client(source_address) as writer:
        for i in range(10, 20):
            await writer.getPR(V, A, "h%d" % i)
    mirror, mirror_address, lines = start_mirror(tmp_path, socket)
    await following(mirror_address, "20")
    stop(source)
    shutil.copy(tmp_path / "old.sqlite3", source_db)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(source_db) + suffix):
            os.remove(str(source_db) + suffix)
    source, source_address, _ = start_process(tmp_path, "--bind", socket)
    try:
        assert await diverged_because(mirror_address) == (
            "the source does not hold position 20, which this mirror does: restored from an older copy?")
        async with await prserv.create_async_client(source_address) as writer:
            for i in range(20, 35):                     # positions 11..25 again, other rows
                await writer.getPR(V, A, "other%d" % i)
        async with await prserv.create_async_client(mirror_address) as client:
            assert await client.test_pr(V, A, "h19") == "19"       # still serving what it holds
            assert await client.test_pr(V, A, "other20") is None
            assert (await client.mirror_status())["state"] == "diverged"
        code, out, err = run_cli("--server", mirror_address, "mirror-status")
        assert code == 4 and out.splitlines()[1:4] == ["state:      diverged", "position:   20",
                                                        "behind:     unknown"]
        code, out, err = run_cli("--server", mirror_address, "--json", "mirror-status")
        state = json.loads(out)["mirror"]
        assert (code, state["position"], state["rows_behind"], state["source_behind"]) == (4, "20", None, None)
    finally:
        stop(mirror)
        stop(source)
    assert sum("diverged" in line and "ERROR" in line for line in lines) == 1
    assert len(table(tmp_path / "mirror.sqlite3")) == 20
    code, out, err = run_cli("mirror-reset", str(tmp_path / "mirror.sqlite3"))
    assert (code, err) == (0, "") and "removed the mirror's 20 rows" in out
    source, source_address, _ = start_process(tmp_path, "--bind", socket)
    mirror, mirror_address, _ = start_mirror(tmp_path, socket)
    try:
        await following(mirror_address, "25")
    finally:
        stop(mirror)
        stop(source)
    assert table(tmp_path / "mirror.sqlite3") == table(source_db)


@pytest.mark.slow        # the same SQL and comparisons on every Python
async def test_another_database_or_renumbered_rows_make_the_mirror_stop(tmp_path):
    socket = "unix://" + str(tmp_path / "s.sock")
    fill(tmp_path / "pr.sqlite3", 30)
    source, _, _ = start_process(tmp_path, "--bind", socket)
    mirror, mirror_address, _ = start_mirror(tmp_path, socket)
    await following(mirror_address, "30")
    stop(source)
    # A dump and restore that renumbered the rows (same identity, other order).
    conn = sqlite3.connect(str(tmp_path / "pr.sqlite3"))
    rows = conn.execute("SELECT * FROM PRMAIN ORDER BY rowid DESC").fetchall()
    conn.execute("DELETE FROM PRMAIN")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    source, _, _ = start_process(tmp_path, "--bind", socket)
    try:
        assert await diverged_because(mirror_address) == (
            "the source holds %r at position 30; this mirror holds %r" % ([V, A, "c0", "0"], [V, A, "c29", "29"]))
    finally:
        stop(mirror)
        stop(source)
    os.rename(str(tmp_path / "pr.sqlite3"), str(tmp_path / "renumbered.sqlite3"))
    fill(tmp_path / "pr.sqlite3", 30, version="another-1.0-r0")     # another database
    source, _, _ = start_process(tmp_path, "--bind", socket)
    mirror, mirror_address, _ = start_mirror(tmp_path, socket)
    try:
        state = await wait_for(mirror_address, lambda s: s["state"] == "diverged")
        assert state["reason"].startswith("the source holds history rows-")
        assert state["reason"].endswith("; this mirror copied %s" % state["identity"])
    finally:
        stop(mirror)
        stop(source)


@pytest.mark.slow        # the same SQL and comparisons on every Python
async def test_the_audit_keeps_rows_deleted_at_the_source_and_stops_on_a_changed_value(tmp_path):
    socket = "unix://" + str(tmp_path / "s.sock")
    fill(tmp_path / "pr.sqlite3", 5000)
    source, source_address, _ = start_process(tmp_path, "--bind", socket)
    mirror, mirror_address, _ = start_mirror(tmp_path, socket, "--mirror-audit-interval", "0.2")
    try:
        await following(mirror_address, "5000")
        state = await wait_for(mirror_address, lambda s: s["audit"].get("rows_checked") == 5000)
        assert state["audit"]["result"] == "ok"
        conn = sqlite3.connect(str(tmp_path / "pr.sqlite3"))
        conn.execute("DELETE FROM PRMAIN WHERE checksum IN ('c10', 'c4321')")   # by hand
        conn.commit()
        state = await wait_for(mirror_address, lambda s: s["audit"].get("missing_at_source") == 2)
        assert state["state"] == "following"
        assert state["warnings"] == ["2 rows held here are no longer held by the source (kept here)"]
        async with await prserv.create_async_client(mirror_address) as client:
            assert await client.test_pr(V, A, "c10") == "10"
        conn.execute("UPDATE PRMAIN SET value = '9999' WHERE checksum = 'c77'")
        conn.commit()
        conn.close()
        assert await diverged_because(mirror_address) == (
            "audit: the source holds %r at position 78; this mirror holds %r"
            % ([V, A, "c77", "9999"], [V, A, "c77", "77"]))
    finally:
        stop(mirror)
        stop(source)


# --------------------------------------------------------------------------- sources that fail

def pull_answer(rows, identity="db-x", **fields):
    answer = {"identity": identity, "origin": True, "complete": True, "reached": True, "at": None,
              "rows": rows, "pending": None}
    answer.update(fields)
    return json.dumps(answer)


async def test_a_source_down_and_back_is_logged_once_each_way(tmp_path):
    """Refused, then closed by a peer on the source's port, then refused again: one
    outage, one WARNING; the source serving again: one INFO; each attempt's failure
    is DEBUG (not shown at the default INFO)."""
    fill(tmp_path / "pr.sqlite3", 5)
    source, source_address, _ = start_process(tmp_path)
    port = int(source_address.rsplit(":", 1)[1])
    mirror, address, lines = start_mirror(tmp_path, source_address)
    peer = ScriptedPeer(lambda request, n: CLOSE)
    try:
        await following(address, "5")
        stop(source)
        await peer.start(port)                  # closes every connection at once
        await reconnected(peer, 8)              # two rounds of the client's 4 attempts, at least
        await peer.stop()
        state = await status(address)
        assert state["state"] == "disconnected", state
        source, _, _ = start_process(tmp_path, "--bind", source_address)
        async with await prserv.create_async_client(source_address) as writer:
            assert await writer.getPR(V, A, "after") == "5"
        await following(address, "6")
    finally:
        stop(mirror)
        stop(source)
    problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
    assert len(problems) == 1 and " WARNING mirror: source %s is unreachable: " % source_address in problems[0] \
        and problems[0].endswith("; answering from what is held, retrying\n"), "".join(lines)
    back = [line for line in lines if " is back " in line]
    assert len(back) == 1 and " INFO mirror: source %s is back after " % source_address in back[0], "".join(lines)
    assert not any("Error talking" in line for line in lines)


GOOD_ROW = ["1", V, A, "c", "0"]


@pytest.mark.parametrize("reply, logged", [
    ('{"identity": 5}', "identity is not a string"),
    (pull_answer([["1", V, A, "c", "0.x"]]), "a row holds a value that is not a revision"),
    (pull_answer([["1", V, A, "c"]]), "a row is not a list of 5 fields"),
    (pull_answer([GOOD_ROW] * 2), "a position appears twice in one answer"),
    (pull_answer([[str(i), V, A, "c%d" % i, "0"] for i in range(5001)]), "5001 rows where at most 5000"),
    (pull_answer([GOOD_ROW])[:40], "invalid JSON"),                        # truncated
    ("[1, 2]", "the answer is not a JSON object"),
    (pull_answer([GOOD_ROW + ["1795657515000000"]]), "a row's time is not null or a count of microseconds"),
    (pull_answer([GOOD_ROW + [True]]), "a row's time is not null or a count of microseconds"),
    (pull_answer([GOOD_ROW + [-1]]), "a row's time is not null or a count of microseconds"),
    (pull_answer([GOOD_ROW + [1.5]]), "a row's time is not null or a count of microseconds"),
    (pull_answer([GOOD_ROW + [2 ** 63]]), "a row's time is not null or a count of microseconds"),
    (pull_answer([["1", V, A, "c", "0.x", 5]]), "a row holds a value that is not a revision"),
    (pull_answer([GOOD_ROW + [5, "10.0.0.1"]]), "a row is not a list of 5 fields"),
], ids=["identity", "revision", "short-row", "repeated-position", "oversized", "truncated", "array",
        "time-string", "time-bool", "time-negative", "time-float", "time-huge", "timed-revision", "long-row"])
async def test_a_source_answering_garbage_has_nothing_applied_and_is_retried(tmp_path, reply, logged):
    peer = ScriptedPeer(lambda request, n: reply)
    garbage = await peer.start()
    mirror, address, lines = start_mirror(tmp_path, garbage)
    try:
        await reconnected(peer)                         # dropped, and tried again
        state = await status(address)
        assert state["state"] in ("disconnected", "catching-up") and state["position"] is None, state
    finally:
        stop(mirror)
        await peer.stop()
    assert table(tmp_path / "mirror.sqlite3") == []
    assert any("ERROR" in line and "source %s answered nonsense" % garbage in line and logged in line
               for line in lines), "".join(lines)


async def test_a_position_going_backwards_is_refused_whole(tmp_path):
    first = pull_answer([["1", V, A, "a", "0"], ["2", V, A, "b", "1"]], complete=True)
    again = pull_answer([["3", V, A, "c", "2"], ["1", V, A, "d", "3"]], at=[V, A, "b", "1"])
    peer = ScriptedPeer(lambda request, n: first if n == 1 else again)
    source = await peer.start()
    mirror, address, lines = start_mirror(tmp_path, source)
    try:
        await reconnected(peer)
        assert (await status(address))["position"] == "2"
    finally:
        stop(mirror)
        await peer.stop()
    assert table(tmp_path / "mirror.sqlite3") == [(V, A, "a", "0"), (V, A, "b", "1")]
    assert any("position '1' is held already (the feed went backwards)" in line for line in lines)


# --------------------------------------------------------------------------- when each value was given

def given_records(path):
    """Each row with its record (rowid order): (version, pkgarch, checksum, value, time,
    address, user); rows without a record are left out."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT t.version, t.pkgarch, t.checksum, t.value, g.given, g.address, g.user "
                            "FROM PRMAIN AS t JOIN prserv_PRMAIN_given AS g ON g.row = t.rowid "
                            "ORDER BY t.rowid").fetchall()
    finally:
        conn.close()


def times_only(records):
    return [record[:5] + (None, None) for record in records]


async def copy_into(path, source):
    """``source``'s feed copied once into the mirror file ``path`` (in this process)."""
    target = await open_engine(str(path), mirror=True)
    try:
        return await mirroring.Follower(source, target, logging.getLogger("test-mirror")).copy()
    finally:
        await target.close()


async def test_a_mirror_keeps_when_each_value_was_given_but_never_to_whom(tmp_path):
    """The source's times arrive in the mirror's record, addresses and users do not; a
    mirror of the mirror gets the same times; the audit's digest is over the rows
    alone, the same on every side."""
    fill(tmp_path / "pr.sqlite3", 3)                    # rows bitbake wrote: no record
    source = prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    await source.start_serving()
    try:
        async with await prserv.create_async_client(source.address) as client:
            await client.getPR(V, A, "new")
            await client.importone(V, A, "imported", "7")
            await client.getPR("other-1.0-r0", A, "o")
        recorded = given_records(tmp_path / "pr.sqlite3")
        assert [record[2] for record in recorded] == ["new", "imported", "o"]
        assert recorded[0][5] == "127.0.0.1" and recorded[1][5] is None
        assert await copy_into(tmp_path / "m1.sqlite3", source.address) == 6
        mirror = prserv.create_server("127.0.0.1:0", str(tmp_path / "m1.sqlite3"), mirror=source.address)
        await mirror.start_serving()
        try:
            await wait_for(mirror.address, lambda s: s["state"] == "following")
            assert await copy_into(tmp_path / "m2.sqlite3", mirror.address) == 6
            async with await prserv.create_async_client(source.address) as theirs, \
                    await prserv.create_async_client(mirror.address) as ours:
                assert await theirs.mirror_audit(None, "6") == await ours.mirror_audit(None, "6")
                assert (await ours.mirror_pull(None, 10, 0, given=True))["rows"][3:] == [
                    [str(rowid)] + list(record[:5]) for rowid, record in zip((4, 5, 6), recorded)]
        finally:
            await mirror.stop_serving()
    finally:
        await source.stop_serving()
    for copy in ("m1.sqlite3", "m2.sqlite3"):
        assert table(tmp_path / copy) == table(tmp_path / "pr.sqlite3")
        assert given_records(tmp_path / copy) == times_only(recorded), copy


async def test_a_source_that_predates_times_is_copied_without_any(tmp_path):
    """A source that ignores ``given`` (a real server whose session drops the field, as
    a server before it did) sends rows of 5 fields: copied, with unknown times."""
    from prserv.server.session import PRServerClient

    class OldSession(PRServerClient):
        async def handle_mirror_pull(self, request):
            seen.append(dict(request))
            return await super().handle_mirror_pull({k: v for k, v in request.items() if k != "given"})

    seen = []
    source = prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    source.accept_client = lambda connection: OldSession(connection, source)
    await source.start_serving()
    try:
        async with await prserv.create_async_client(source.address) as client:
            await client.getPR(V, A, "a")
            await client.getPR(V, A, "b")
            assert len((await client.mirror_pull(None, 10, 0, given=True))["rows"][0]) == 5
        assert await copy_into(tmp_path / "mirror.sqlite3", source.address) == 2
    finally:
        await source.stop_serving()
    assert seen[-1]["given"] is True                    # asked, and not answered
    assert len(given_records(tmp_path / "pr.sqlite3")) == 2
    assert table(tmp_path / "mirror.sqlite3") == table(tmp_path / "pr.sqlite3")
    assert given_records(tmp_path / "mirror.sqlite3") == []


async def test_a_scripted_source_s_times_are_stored_as_sent_and_unknown_ones_not_at_all(tmp_path):
    rows = [["1", V, A, "a", "0", 1795657515123456], ["2", V, A, "b", "1", None], ["3", V, A, "c", "2", 0]]
    peer = ScriptedPeer(lambda request, n: pull_answer(rows))
    source = await peer.start()
    try:
        assert await copy_into(tmp_path / "mirror.sqlite3", source) == 3
    finally:
        await peer.stop()
    assert given_records(tmp_path / "mirror.sqlite3") == [(V, A, "a", "0", 1795657515123456, None, None),
                                                          (V, A, "c", "2", 0, None, None)]


# --------------------------------------------------------------------------- the source's side

async def test_a_buffered_source_feeds_only_committed_rows(tmp_path):
    source, address, _ = start_process(tmp_path, "--sync-mode", "periodic:60")
    try:
        async with await prserv.create_async_client(address) as client:
            assert await client.getPR(V, A, "held") == "0"
            answer = await client.mirror_pull(None, 10, 0)
            assert answer["rows"] == []
    finally:
        stop(source, signal.SIGKILL)
    source, address, _ = start_process(tmp_path)
    try:
        async with await prserv.create_async_client(address) as client:
            assert await client.test_pr(V, A, "held") is None      # lost: nobody could have it
    finally:
        stop(source)


async def test_a_long_poll_is_not_idleness_and_shutdown_ends_it_at_once(tmp_path):
    source, address, lines = start_process(tmp_path, "--idle-timeout", "0.5")
    try:
        async with await prserv.create_async_client(address) as client:
            started = time.monotonic()
            answer = await client.mirror_pull(None, 10, 1.5)
            assert answer["rows"] == [] and time.monotonic() - started >= 1.5
            await asyncio.sleep(0.3)        # idle, but less than idle_timeout since the answer
            assert await client.ping() == {"alive": True}            # not closed as idle
            waiting = asyncio.ensure_future(client.mirror_pull(None, 10, 60))
            await asyncio.sleep(0.2)                                  # the poll is waiting
            started = time.monotonic()
            source.send_signal(signal.SIGTERM)
            assert (await waiting)["rows"] == []
            source.wait(10)
            assert time.monotonic() - started < 2.0                   # shutdown_timeout is 10 s
    finally:
        stop(source)
    # (the client reconnects by itself: only the server's log tells a closed session)
    assert not any("idle_timeout" in line for line in lines), "".join(lines)
    assert sum("connection closed after" in line for line in lines) == 1


# --------------------------------------------------------------------------- the command line

def run_cli(*argv):
    process = subprocess.run([sys.executable, "-m", "prserv", *argv], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib")), timeout=60)
    return process.returncode, process.stdout, process.stderr


@pytest.mark.slow        # the same SQL and comparisons on every Python
async def test_a_one_shot_copy_can_be_served_as_a_mirror_later(tmp_path):
    fill(tmp_path / "pr.sqlite3", 7000)
    source, source_address, _ = start_process(tmp_path)
    copy = str(tmp_path / "carried.sqlite3")
    try:
        code, out, err = run_cli("--json", "mirror", source_address, copy)
        summary = json.loads(out)
        assert (code, err) == (0, "")
        assert (summary["rows_copied"], summary["position"], summary["complete"]) == (7000, "7000", True)
        async with await prserv.create_async_client(source_address) as writer:
            await writer.getPR(V, A, "later")
        code, out, err = run_cli("mirror", source_address, copy)
        assert code == 0 and out.startswith("copied 1 rows from %s to %s in " % (source_address, copy))
        mirror, address, _ = start_mirror(tmp_path, source_address, db="carried.sqlite3")
        try:
            state = await following(address, "7001")
            code, out, err = run_cli("--server", address, "--json", "mirror-status")
            assert code == 0 and json.loads(out)["mirror"]["position"] == "7001"
            assert state["identity"] == json.loads(out)["mirror"]["identity"]
            code, out, err = run_cli("mirror-reset", copy)      # refused while it runs
            assert code == 2 and "a mirror is running on %s" % copy in err
        finally:
            stop(mirror)
        code, out, err = run_cli("--server", source_address, "mirror-status")
        assert code == 1 and err == "prserv: %s is not a mirror\n" % source_address
    finally:
        stop(source)
    assert table(copy) == table(tmp_path / "pr.sqlite3")


async def test_a_counted_pull_answers_the_rows_pending_after_it_and_an_uncounted_one_null(tmp_path):
    fill(tmp_path / "pr.sqlite3", 25)
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    await server.start_serving()
    try:
        async with await prserv.create_async_client(server.address) as client:
            for since, limit, rows, pending in [(None, 10, 10, 15), (None, 25, 25, 0), (None, 100, 25, 0),
                                                ("5", 10, 10, 10), ("20", 10, 5, 0), ("25", 10, 0, 0)]:
                answer = await client.mirror_pull(since, limit, 0, count=True)
                assert (len(answer["rows"]), answer["pending"]) == (rows, pending), (since, limit)
                answer = await client.mirror_pull(since, limit, 0, count=False)
                assert (len(answer["rows"]), answer["pending"]) == (rows, None), (since, limit)
            assert (await client.mirror_pull(None, 10, 0))["pending"] is None      # not counted unless asked
    finally:
        await server.stop_serving()


async def test_a_mirror_catching_up_reports_the_rows_its_source_counted(tmp_path, monkeypatch):
    """The first pull of a copy is counted: the mirror is as far behind as the source
    said (``rows_behind``), then counts down by the rows copied, then 0 when caught up."""
    monkeypatch.setattr(mirroring, "PULL_ROWS", 10)
    fill(tmp_path / "pr.sqlite3", 25)
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    await server.start_serving()
    target = await open_engine(str(tmp_path / "mirror.sqlite3"), mirror=True)
    try:
        follower = mirroring.Follower(server.address, target, logging.getLogger("test-mirror"))
        seen = []
        copied = await follower.copy(lambda rows, behind: seen.append(
            (rows, behind, follower.status()["rows_behind"])))
        assert copied == 25
        assert seen == [(10, 15, 15), (20, 5, 5), (25, 0, 0)]
    finally:
        await target.close()
        await server.stop_serving()
    assert table(tmp_path / "mirror.sqlite3") == table(tmp_path / "pr.sqlite3")


async def test_feed_requests_with_bad_fields_get_an_invoke_error(tmp_path):
    server = prserv.create_server("127.0.0.1:0", str(tmp_path / "pr.sqlite3"))
    await server.start_serving()
    try:
        for request, message in [
                ({"since": "x"}, "mirror-pull: not a position of this database: 'x'"),
                ({"since": 5}, "mirror-pull: field 'since' must be a position (a string or null), not a number"),
                ({"limit": 0}, "mirror-pull: field 'limit' must be a number from 1 to 10000"),
                ({"wait": 121}, "mirror-pull: field 'wait' must be a number from 0 to 120"),
                ({"count": "yes"}, "mirror-pull: field 'count' must be true or false, not a string"),
                ({"given": 1}, "mirror-pull: field 'given' must be true or false, not a number")]:
            async with await prserv.create_async_client(server.address) as client:
                with pytest.raises(InvokeError) as info:
                    await client.invoke({"mirror-pull": request})
                assert str(info.value) == message
        async with await prserv.create_async_client(server.address) as client:
            assert await client.mirror_audit(None, "9") == {"count": None, "digest": None}
            await client.getPR(V, A, "a")
            await client.getPR(V, A, "b")
            answer = await client.mirror_audit(None, "2", rows=True)
            assert answer["count"] == 2 and answer["rows"] == [["1", V, A, "a", "0"], ["2", V, A, "b", "1"]]
            assert (await client.mirror_pull(None, 10, 0))["rows"] == answer["rows"]     # as a mirror before times
            timed = (await client.mirror_pull(None, 10, 0, given=True))["rows"]
            assert [row[:5] for row in timed] == answer["rows"]
            assert all(type(row[5]) is int and row[5] > 1.7e15 for row in timed)
            assert answer["digest"] == (await client.mirror_audit(None, "2"))["digest"]
            assert await client.mirror_status() is None
    finally:
        await server.stop_serving()
    with pytest.raises(prserv.errors.ConfigError, match="a mirror has no upstream"):
        prserv.create_server("127.0.0.1:0", str(tmp_path / "m.sqlite3"), upstream="u:1", mirror="m:2")
