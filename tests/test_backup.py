"""Backups (issue 7): SQL dumps, binary copies of a live database, the dump-db request,
restores, and the prserv subcommands -- against real servers and real files."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from typing import List, Set, Tuple

import pytest

import prserv
from prserv import dumptext
from prserv.cli import output as exits
from prserv.errors import DatabaseError, InvalidDumpAnswer
from prserv.runtime.priority import IDLE_THROTTLE
from prserv.server.dump import DumpStream
from prserv.storage.sqlite import backup, snapshot
from internals import committed, table_of
from prserv.asyncrpc import InvokeError
from prserv.db import PRData
from wire import SETUP, RawConnection, frame, open_slow_socket, parse_raw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DDL = ("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
       "checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
Row = Tuple[str, str, str, str]
CLI_TIMEOUT = 60

# Awkward but storable text: quotes, a backslash before an n, a newline, non-ASCII, non-BMP.
ODD_ROWS = [("it's-1.0-r0", 'x"86', "a\\nb", "1"), ("multi\nline-1.0", "arm", "\u00e9\U0001f600", "2.3"),
            ("plain-1.0-r0", "arm", "\\", "0")]


def prefill(path, count: int, prefix: str = "big") -> List[Row]:
    """A database file of ``count`` rows in bitbake's schema, written directly (fast)."""
    rows = [("%s%05d-1.0-r0" % (prefix, i // 100), "core2-64", "%064x" % i, str(i % 100)) for i in range(count)]
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(DDL)
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return rows


def all_rows(path) -> Set[Row]:
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return set(conn.execute("SELECT version, pkgarch, checksum, value FROM PRMAIN"))
    finally:
        conn.close()


def schema(path) -> List[tuple]:
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def restore_with_sqlite3(sql_path, db_path) -> None:
    """What the issue asks to work: ``sqlite3 NEW.db < dump.sql`` (the module without the CLI)."""
    if shutil.which("sqlite3"):
        with open(sql_path) as script:
            subprocess.run(["sqlite3", str(db_path)], stdin=script, check=True)
    else:
        conn = sqlite3.connect(str(db_path))
        with open(sql_path) as script:
            conn.executescript(script.read())
        conn.close()


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    env["PYTHONPATH"] = os.path.join(ROOT, "lib")
    return env


async def run_cli(*argv: str) -> Tuple[int, str, str]:
    """``python -m prserv ARGV`` in a separate process (the event loop keeps serving)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "prserv", *argv, env=cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("prserv %s did not finish within %d s" % (" ".join(argv), CLI_TIMEOUT)) from None
    return process.returncode, out.decode(), err.decode()


class Writers:
    """``clients`` connections allocating new checksums without pause until stopped.

    ``answered`` lists every row answered, in order.  In immediate mode an answer
    leaves after the commit that stored it, so each listed row is committed."""

    def __init__(self, address: str, clients: int = 4) -> None:
        self.address = address
        self.answered: List[Row] = []
        self._stop = False
        self._waiting: List[Tuple[int, asyncio.Future]] = []
        self._tasks = [asyncio.ensure_future(self._client(n)) for n in range(clients)]

    async def _client(self, n: int) -> None:
        async with await prserv.create_async_client(self.address) as client:
            i = 0
            while not self._stop:
                version, checksum = "w%d-1.0-r0" % (i % 3), "writer%d-%d" % (n, i)
                value = await client.getPR(version, "x86", checksum)
                self.answered.append((version, "x86", checksum, value))
                for target, future in self._waiting:
                    if len(self.answered) >= target and not future.done():
                        future.set_result(None)
                i += 1

    async def running(self, answers: int = 50) -> None:
        """Return once ``answers`` more answers have arrived (the writers are going)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((len(self.answered) + answers, future))
        await asyncio.wait_for(future, 30)

    async def stop(self) -> None:
        self._stop = True
        await asyncio.gather(*self._tasks)


async def open_slow_reader(address: str) -> RawConnection:
    """A raw connection with a 4 KiB receive buffer: what the server sends it piles up
    in the server as soon as the test stops reading."""
    sock = await open_slow_socket(address)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
    conn = RawConnection(reader, writer)
    await conn.send(SETUP)
    return conn


# --------------------------------------------------------------------------- SQL dumps

def test_dump_db_restores_with_sqlite3_to_an_equal_database(tmp_path):
    data = PRData(str(tmp_path / "pr.sqlite3"))
    table = data["PRMAIN"]
    for row in ODD_ROWS:
        table.importone(*row)
    for i in range(500):
        table.get_value("pkg%d-1.0-r0" % (i % 9), "core2-64", "c%d" % i, history=i % 2 == 0)
    dump = io.StringIO()
    written = table.dump_db(dump)
    assert written == len(dump.getvalue())
    assert "".join(line + "\n" for line in snapshot.iter_dump(data.connection)) == dump.getvalue()
    (tmp_path / "dump.sql").write_text(dump.getvalue())
    data.disconnect()
    restore_with_sqlite3(tmp_path / "dump.sql", tmp_path / "new.sqlite3")
    assert all_rows(tmp_path / "new.sqlite3") == all_rows(tmp_path / "pr.sqlite3")
    assert len(all_rows(tmp_path / "new.sqlite3")) == 503
    assert schema(tmp_path / "new.sqlite3") == schema(tmp_path / "pr.sqlite3")


def test_dump_answer_pieces_are_the_whole_json_and_decode_in_any_cut(tmp_path):
    lines = ["BEGIN TRANSACTION;", "INSERT INTO x VALUES('a\\nb','\u00e9\U0001f600','\"','\\');",
             "multi\nline", "\\\\n"] * 3000 + ["COMMIT;"]
    text = "".join(line + "\n" for line in lines)
    pieces = list(dumptext.answer_pieces(iter(lines), batch_chars=1000))
    assert "".join(pieces) == json.dumps({"dump": text})
    assert len(pieces) > 100 and max(len(piece) for piece in pieces) < 1000 * 6 + 100   # bounded
    whole = "".join(pieces)
    for size in (1, 7, 32767):                  # cuts inside escapes, inside the head, anywhere
        out = io.StringIO()
        decoder = dumptext.DumpDecoder(out)
        for start in range(0, len(whole), size):
            decoder.feed(whole[start:start + size])
        assert decoder.finish() == len(text) and out.getvalue() == text
    with pytest.raises(InvalidDumpAnswer):
        truncated = dumptext.DumpDecoder(io.StringIO())
        truncated.feed(whole[:-3])
        truncated.finish()
    with pytest.raises(InvalidDumpAnswer):
        dumptext.DumpDecoder(io.StringIO()).feed('{"export": "' + "x" * 100)


# --------------------------------------------------------------------------- backups of a live file

@pytest.mark.parametrize("form", ["binary", "sql"])
async def test_backup_completes_under_continuous_writes_and_restores(form, tmp_path, start_server):
    """Writers allocate from before the backup process starts until after it ended;
    the copy is one snapshot: every row answered before it started, nothing that was
    never written, and the restored database serves the same export."""
    prefill(tmp_path / "pr.sqlite3", 50000)
    server = await start_server()
    writers = Writers(server.address)
    await writers.running()
    before = set(writers.answered)
    out = str(tmp_path / ("copy.sql" if form == "sql" else "copy.sqlite3"))
    code, stdout, stderr = await run_cli("backup", server.dbfile, out, *(["--sql"] if form == "sql" else []))
    during = len(writers.answered) - len(before)
    await writers.running()
    await writers.stop()
    assert (code, stderr) == (0, ""), stdout
    assert during > 0, "no write was answered while the backup ran"
    assert "integrity_check: ok" in stdout and "PRMAIN: " in stdout

    code, stdout, stderr = await run_cli("restore", out, str(tmp_path / "restored.sqlite3"))
    assert (code, stderr) == (0, ""), stdout
    restored = all_rows(tmp_path / "restored.sqlite3")
    live = all_rows(tmp_path / "pr.sqlite3")
    assert before <= restored <= live
    assert len(restored) >= 50000 + len(before)
    assert "PRMAIN: %d rows" % len(restored) in stdout

    copy = await start_server(db="restored.sqlite3", read_only=True)
    async with await prserv.create_async_client(copy.address) as client:
        _, data = await client.export(None, None, None, False, True)
    assert {(r["version"], r["pkgarch"], r["checksum"], r["value"]) for r in data} == restored


async def test_backup_of_a_file_held_by_a_buffered_server_is_refused_clearly(tmp_path, start_server):
    server = await start_server(sync_mode="periodic:60")
    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR("a-1.0-r0", "x86", "c") == "0"
    code, stdout, stderr = await run_cli("backup", server.dbfile, str(tmp_path / "copy.sqlite3"))
    assert code == exits.EXIT_REFUSED and stdout == ""
    assert "buffered sync mode" in stderr and "prserv dump --server" in stderr
    assert not os.path.exists(tmp_path / "copy.sqlite3")


# --------------------------------------------------------------------------- dump-db over the wire

async def test_dump_db_over_the_wire_is_the_table_dump_chunked_as_one_message(start_server):
    server = await start_server()
    for row in ODD_ROWS:
        table_of(server).importone(*row)
    with table_of(server).transaction():
        for i in range(3000):
            table_of(server).importone("pkg%d-1.0-r0" % (i % 5), "x86", "%064x" % i, str(i))
    await committed(server)
    expected = io.StringIO()
    table_of(server).dump_db(expected)
    conn = await RawConnection.open(server.address, SETUP)
    await conn.send(frame(json.dumps({"dump-db": {}})))
    raw = await conn.recv_raw()
    assert raw.startswith('{"chunk-stream": null}\n')
    assert raw == "".join(frame(json.dumps({"dump": expected.getvalue()})))   # byte for byte
    assert parse_raw(raw) == {"dump": expected.getvalue()}
    assert await conn.request({"ping": {}}) == {"alive": True}    # the session goes on
    await conn.close()
    async with await prserv.create_async_client(server.address) as client:
        out = io.StringIO()
        assert await client.dump_db(out) == len(expected.getvalue())
        assert out.getvalue() == expected.getvalue()


async def test_small_dump_and_read_only_server(tmp_path, start_server):
    prefill(tmp_path / "ro.sqlite3", 10)
    server = await start_server(db="ro.sqlite3", read_only=True)
    conn = await RawConnection.open(server.address, SETUP)
    answer = await conn.request({"dump-db": {}})
    assert answer["dump"].startswith("BEGIN TRANSACTION;\nCREATE TABLE PRMAIN") and answer["dump"].count("INSERT") == 10
    assert await conn.request({"dump-db": []}) == {"invoke-error": {"message": "dump-db: the argument must "
                                                                    "be a JSON object, not an array"}}
    await conn.close()


async def test_dump_db_while_writers_run_is_a_snapshot(tmp_path, start_server):
    prefill(tmp_path / "pr.sqlite3", 20000)
    server = await start_server()
    writers = Writers(server.address)
    await writers.running()
    before = set(writers.answered)
    async with await prserv.create_async_client(server.address) as client:
        with open(tmp_path / "dump.sql", "w") as out:
            await client.dump_db(out)
    during = len(writers.answered) - len(before)
    await writers.running()
    await writers.stop()
    assert during > 0, "no write was answered while the dump was sent"
    restore_with_sqlite3(tmp_path / "dump.sql", tmp_path / "new.sqlite3")
    restored = all_rows(tmp_path / "new.sqlite3")
    assert before <= restored <= all_rows(tmp_path / "pr.sqlite3")
    assert len(restored) >= 20000 + len(before)


async def test_one_dump_at_a_time_and_the_slot_is_freed(tmp_path, start_server):
    """A dump stalled by a client that does not read keeps the slot: a second dump is
    refused; when the stalled client reads on, it gets all of it and the slot is free;
    a client that goes away mid-dump frees it too."""
    rows = prefill(tmp_path / "pr.sqlite3", 60000)                 # a dump of about 7 MB
    server = await start_server()
    for attempt in ("read", "vanish"):
        slow = await open_slow_reader(server.address)
        await slow.send(frame(json.dumps({"dump-db": {}})))
        assert await slow.readline() == '{"chunk-stream": null}\n'     # the dump has begun
        slow.writer.transport.pause_reading()                        # ... and stops here
        async with await prserv.create_async_client(server.address) as client:
            assert await client.getPR("other-1.0", "x86", attempt) is not None    # served meanwhile
            with pytest.raises(InvokeError, match="a dump is already in progress"):
                await client.dump_db(io.StringIO())
        assert server.dump is not None
        if attempt == "read":
            slow.writer.transport.resume_reading()
            rest = []
            while not rest or rest[-1] != "\n":
                rest.append(await slow.readline())
            answer = json.loads("".join(line[:-1] for line in rest))
            assert answer["dump"].count("INSERT INTO \"PRMAIN\"") == len(rows)
            assert server.dump is None                            # freed before the last bytes left
        else:
            slow.writer.transport.abort()
            deadline = time.monotonic() + 10
            while server.dump is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)                         # until the server sees the reset
            assert server.dump is None
        await slow.close()
    async with await prserv.create_async_client(server.address) as client:
        assert await client.dump_db(io.StringIO()) > 0


def test_snapshot_reports_sqlite_failures_as_database_errors(tmp_path):
    prefill(tmp_path / "pr.sqlite3", 10)
    dump = snapshot.open_snapshot(str(tmp_path / "pr.sqlite3"), None, exclusive=False, commit=None)
    lines = dump.lines()
    assert next(lines) == "BEGIN TRANSACTION;"
    dump.conn.close()                                   # the snapshot's file is gone mid-way
    with pytest.raises(DatabaseError):
        list(lines)
    dump.close()


@pytest.mark.parametrize("behind_a_write", [False, True])
async def test_a_dump_failing_half_way_ends_the_session(behind_a_write, start_server, monkeypatch):
    """The client gets a cut answer and EOF, never a well-formed one; the slot is freed.
    Behind a write the dump answer waits for that write's commit (the held-answers path)."""
    server = await start_server()

    def failing_lines(self):
        for i in range(1000):
            yield "INSERT INTO \"PRMAIN\" VALUES('v','a','c%d','%d');" % (i, i)
        raise DatabaseError("disk I/O error")     # what a storage engine raises

    monkeypatch.setattr(snapshot.SnapshotDump, "lines", failing_lines)
    conn = await RawConnection.open(server.address, SETUP)
    requests = [{"get-pr": {"version": "v-1.0", "pkgarch": "x86", "checksum": "c"}}] if behind_a_write else []
    await conn.send("".join(frame(json.dumps(r)) for r in requests + [{"dump-db": {}}]))
    if behind_a_write:
        assert json.loads(await conn.recv_raw()) == {"value": "0"}
    received = []
    while True:
        line = await conn.readline()
        if not line:
            break
        received.append(line)
    assert received and received[0] == '{"chunk-stream": null}\n' and received[-1] != "\n"
    assert server.dump is None
    await conn.close()
    monkeypatch.undo()
    async with await prserv.create_async_client(server.address) as client:
        out = io.StringIO()
        await client.dump_db(out)
        assert out.getvalue().count("INSERT INTO \"PRMAIN\"") == (1 if behind_a_write else 0)


@pytest.mark.parametrize("mode", ["periodic:60", "on-shutdown"])
async def test_dump_of_a_buffered_server_includes_its_buffer(mode, tmp_path, start_server):
    server = await start_server(sync_mode=mode)
    async with await prserv.create_async_client(server.address) as client:
        for i in range(20):
            assert await client.getPR("a-1.0-r0", "x86", "c%d" % i) == str(i)
        out = io.StringIO()
        await client.dump_db(out)
        assert out.getvalue().count("INSERT INTO \"PRMAIN\"") == 20
        assert await client.getPR("a-1.0-r0", "x86", "after") == "20"       # still serving
    assert not [name for name in os.listdir(tmp_path) if "dump" in name]    # no scratch copy left


# --------------------------------------------------------------------------- the prserv subcommands

@pytest.fixture
def cli(cli):
    """conftest's ``cli``, with ``backup --priority normal``: the test process keeps its priority."""
    def run(*argv: str):
        return cli(*(argv + ("--priority", "normal") if "backup" in argv else argv))

    return run


def test_backup_restore_commands_output_and_exit_codes(tmp_path, cli):
    db = str(tmp_path / "pr.sqlite3")
    prefill(db, 300)
    copy, dump, dest = (str(tmp_path / name) for name in ("copy.sqlite3", "dump.sql", "dest.sqlite3"))
    code, out, err = cli("backup", db, copy)
    assert (code, err) == (0, "")
    assert out.startswith("backed up %s to %s (binary, " % (db, copy))
    assert out.endswith("\nintegrity_check: ok\nPRMAIN: 300 rows\n")
    code, out, err = cli("--json", "backup", db, dump, "--sql")
    report = json.loads(out)
    assert (code, err) == (0, "") and report["format"] == "sql" and report["bytes"] == os.path.getsize(dump)
    assert report["verification"]["ok"] and report["verification"]["tables"] == {"PRMAIN": 300}

    assert cli("restore", dump, dest)[0] == 0 and all_rows(dest) == all_rows(db)
    code, out, err = cli("restore", copy, dest)                   # never overwrites by itself
    assert (code, out) == (exits.EXIT_USAGE, "") and "exists; use --force" in err
    code, out, err = cli("restore", copy, dest, "--force")
    assert (code, err) == (0, "") and out.endswith("integrity_check: ok\nPRMAIN: 300 rows\n")
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name or ".verify-" in name]
    assert not [name for name in os.listdir(tmp_path) if name.startswith("dest.sqlite3-")]

    code, out, err = cli("backup", str(tmp_path / "missing.sqlite3"), copy)
    assert (code, out) == (exits.EXIT_USAGE, "") and "does not exist" in err
    code, _, err = cli("backup", db, db)
    assert code == exits.EXIT_USAGE and "is the database itself" in err
    with open(dump) as full:
        (tmp_path / "cut.sql").write_text(full.read()[:-len("COMMIT;\n")])
    code, _, err = cli("restore", str(tmp_path / "cut.sql"), str(tmp_path / "new.sqlite3"))
    assert code == exits.EXIT_USAGE and "truncated" in err
    assert not os.path.exists(tmp_path / "new.sqlite3")


def test_failed_verification_exit_code(tmp_path, cli, monkeypatch):
    db = str(tmp_path / "pr.sqlite3")
    prefill(db, 3)
    monkeypatch.setattr(backup, "verify", lambda path, throttle=None: {"path": path, "integrity": ["page 2: bad"], "ok": False,
                                                        "tables": {"PRMAIN": 3}})
    code, out, err = cli("backup", db, str(tmp_path / "copy.sqlite3"))
    assert code == exits.EXIT_VERIFY and "integrity_check: page 2: bad" in out and "fails" in err


async def test_restore_refuses_to_replace_a_database_in_use(tmp_path, start_server):
    prefill(tmp_path / "pr.sqlite3", 5)
    await run_cli("backup", str(tmp_path / "pr.sqlite3"), str(tmp_path / "copy.sqlite3"))
    server = await start_server(db="live.sqlite3")
    async with await prserv.create_async_client(server.address) as client:
        assert await client.getPR("a-1.0-r0", "x86", "c") == "0"
    code, stdout, stderr = await run_cli("restore", str(tmp_path / "copy.sqlite3"), server.dbfile, "--force")
    assert code == exits.EXIT_REFUSED and "is in use" in stderr
    assert all_rows(server.dbfile) == {("a-1.0-r0", "x86", "c", "0")}


async def test_dump_command(tmp_path, start_server):
    prefill(tmp_path / "pr.sqlite3", 200)
    server = await start_server()
    out = str(tmp_path / "dump.sql")
    code, stdout, stderr = await run_cli("dump", "--server", server.address, out)
    assert (code, stderr) == (0, "")
    assert stdout.startswith("dumped %s to %s (sql, " % (server.address, out))
    assert stdout.endswith("integrity_check: ok\nPRMAIN: 200 rows\nprserv_PRMAIN_given: 0 rows\nprserv_meta: 1 rows\n")
    expected = io.StringIO()
    table_of(server).dump_db(expected)
    with open(out) as f:
        assert f.read() == expected.getvalue()
    code, stdout, stderr = await run_cli("--json", "dump", "--server", server.address, "-")
    assert code == 0 and stdout == expected.getvalue()
    assert json.loads(stderr)["bytes"] == len(expected.getvalue())
    code, stdout, stderr = await run_cli("dump", "--server", "127.0.0.1:1", out, "--timeout", "1")
    assert code == exits.EXIT_UNREACHABLE and "cannot reach" in stderr


PRIORITY_PROBE = """
import json, os, runpy, sys
import prserv.storage.sqlite.backup as b
real = b.backup_file
def probe(*args, **kwargs):
    policy = {os.SCHED_IDLE: "SCHED_IDLE", os.SCHED_OTHER: "SCHED_OTHER"}[os.sched_getscheduler(0)]
    print(json.dumps({"policy": policy, "niceness": os.nice(0)}), file=sys.stderr)
    return real(*args, **kwargs)
b.backup_file = probe
sys.argv = ["prserv", "--json", "backup"] + sys.argv[1:]
runpy.run_module("prserv", run_name="__main__")
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies")
@pytest.mark.parametrize("wal, argv, policy, niceness, applied, cpu_share", [
    (True, [], "SCHED_IDLE", 0, "idle", 0.25),
    (True, ["--priority", "low"], "SCHED_OTHER", 10, "niceness 10", None),
    (True, ["--priority", "normal"], "SCHED_OTHER", 0, "normal", None),
    (False, [], "SCHED_OTHER", 0, "normal", None),     # a reader blocks writers: no delay
])
def test_backup_priority(tmp_path, wal, argv, policy, niceness, applied, cpu_share):
    """By default the copy runs only on CPU time nothing else wants (``SCHED_IDLE``),
    so the PR server beside it keeps its latency; not on a rollback-journal file,
    where the copy's read lock holds every writer back until it ends."""
    db = str(tmp_path / "pr.sqlite3")
    if wal:
        PRData(db).disconnect()
    else:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE PRMAIN (version TEXT, pkgarch TEXT, checksum TEXT, value TEXT)")
        conn.commit()
        conn.close()
    argv = [db, str(tmp_path / "copy.sqlite3")] + argv
    result = subprocess.run([sys.executable, "-c", PRIORITY_PROBE] + argv, env=cli_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr) == {"policy": policy, "niceness": min(os.nice(0) + niceness, 19)}
    summary = json.loads(result.stdout)
    assert (summary["priority"], summary["cpu_share"]) == (applied, cpu_share)


def test_throttle_pauses_inside_one_long_statement(tmp_path):
    """The progress handler pauses in the middle of a statement, after each ``run``
    seconds of work, and leaves its result alone."""
    pauses: List[float] = []
    conn = sqlite3.connect(":memory:")
    backup.Throttle(run=0.0, pause=0.25, sleep=pauses.append).attach(conn)
    count = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT count(*) FROM n"
    assert conn.execute(count).fetchone() == (100000,)
    assert len(pauses) > 100 and set(pauses) == {0.25}      # run=0: a pause at every call
    del pauses[:]
    backup.Throttle(run=3600.0, pause=0.25, sleep=pauses.append).attach(conn)
    assert conn.execute(count).fetchone() == (100000,) and pauses == []
    assert IDLE_THROTTLE.cpu_share == 0.25


# --------------------------------------------------------------------------- the record of when each value was given

def given_rows(path) -> List[tuple]:
    """Every record with its row: (version, pkgarch, checksum, value, time, address, user)."""
    conn = sqlite3.connect(str(path))
    try:
        return sorted(conn.execute(
            "SELECT t.version, t.pkgarch, t.checksum, t.value, g.given, g.address, g.user "
            "FROM PRMAIN AS t JOIN prserv_PRMAIN_given AS g ON g.row = t.rowid"))
    finally:
        conn.close()


async def recorded_database(tmp_path, start_server) -> Tuple[str, List[tuple]]:
    """A file whose rows have records: values given to 127.0.0.1 (one to a user) and one
    imported (a time alone); its records."""
    db = str(tmp_path / "pr.sqlite3")
    prefill(db, 3)                                      # rows without a record
    server = await start_server()
    async with await prserv.create_async_client(server.address) as client:
        await client.getPR("g-1.0-r0", "x86", "given")
        await client.getPR("g-1.0-r0", "x86", "again")
        await client.importone("g-1.0-r0", "x86", "imported", "7")
    await server.stop_serving()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE prserv_PRMAIN_given SET user = 'builder' WHERE given = (SELECT max(given) "
                     "FROM prserv_PRMAIN_given WHERE address IS NOT NULL)")
    conn.close()
    records = given_rows(db)
    assert len(records) == 3 and {record[5] for record in records} == {"127.0.0.1", None}
    assert [record[6] for record in records].count("builder") == 1
    return db, records


async def test_backups_dumps_and_restores_keep_the_record(tmp_path, start_server):
    db, records = await recorded_database(tmp_path, start_server)
    for name, argv in [("binary", []), ("sql", ["--sql"])]:
        copy, restored = str(tmp_path / (name + ".copy")), str(tmp_path / (name + ".sqlite3"))
        code, out, err = await run_cli("backup", db, copy, "--priority", "normal", *argv)
        assert (code, err) == (0, "") and "prserv_PRMAIN_given: 3 rows" in out
        code, out, err = await run_cli("restore", copy, restored)
        assert (code, err) == (0, "") and "prserv_PRMAIN_given: 3 rows" in out
        assert given_rows(restored) == records, name
        assert all_rows(restored) == all_rows(db)
    server = await start_server(read_only=True)            # dump-db over the wire
    dump, restored = str(tmp_path / "dump.sql"), str(tmp_path / "dumped.sqlite3")
    code, out, err = await run_cli("dump", "--server", server.address, dump)
    assert (code, err) == (0, "") and "prserv_PRMAIN_given: 3 rows" in out
    assert (await run_cli("restore", dump, restored))[0] == 0
    assert given_rows(restored) == records and all_rows(restored) == all_rows(db)


async def test_a_copy_between_sqlite_files_keeps_the_record(tmp_path, start_server):
    """Exact times, addresses and users; a row the destination held without a record
    gains the source's, one with a record of its own keeps it; export files do not
    carry it (they never did)."""
    db, records = await recorded_database(tmp_path, start_server)
    copy = str(tmp_path / "copy.sqlite3")
    code, out, err = await run_cli("copy", db, copy)
    assert (code, err) == (0, "") and "verified: ok" in out
    assert given_rows(copy) == records and all_rows(copy) == all_rows(db)

    held = str(tmp_path / "held.sqlite3")
    conn = sqlite3.connect(held)
    with conn:
        conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                     "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
        conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", [record[:4] for record in records])
        conn.execute("CREATE TABLE prserv_PRMAIN_given (row INTEGER PRIMARY KEY, given INTEGER NOT NULL, "
                     "address TEXT, user TEXT)")
        conn.execute("INSERT INTO prserv_PRMAIN_given VALUES (1, 5, 'own', NULL)")
    conn.close()
    code, out, err = await run_cli("copy", db, held)
    assert (code, err) == (0, "") and "6 rows read, 3 added, 3 there already" in out
    first = sorted(records)[0]
    assert given_rows(held) == sorted([first[:4] + (5, "own", None)] + [r for r in records if r != first])

    oe = str(tmp_path / "export.conf")
    server = await start_server(db="copy.sqlite3", read_only=True)
    code, out, err = await run_cli("export-file", "--server", server.address, oe)
    assert code == 0
    with open(oe) as f:
        text = f.read()
    assert "127.0.0.1" not in text and "builder" not in text


async def test_a_copy_through_postgresql_and_back_keeps_the_record(tmp_path, start_server, pg_cluster):
    """SQLite -> PostgreSQL -> SQLite: every time, address and user arrives as it was
    (PostgreSQL keeps times to the microsecond); a row PostgreSQL held without a time
    gains the copied one."""
    pytest.importorskip("asyncpg")
    db, records = await recorded_database(tmp_path, start_server)
    url = pg_cluster.new_database()
    code, out, err = await run_cli("copy", db, url)
    assert (code, err) == (0, "") and "verified: ok" in out
    back = str(tmp_path / "back.sqlite3")
    code, out, err = await run_cli("copy", url, back)
    assert (code, err) == (0, "") and "verified: ok" in out
    assert given_rows(back) == records and all_rows(back) == all_rows(db)
