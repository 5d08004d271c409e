"""``--http-process true``: the HTTP listener in a child process of the server (the
same program, read-only on the same database, at ``SCHED_IDLE``), supervised by it:
started once the server serves, restarted when it dies, stopped with the server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from typing import List, Optional, Tuple

import pytest

import prserv
from prserv.client import PRAsyncClient
from prserv.runtime import users, webprocess
from prserv.runtime.daemon import read_pid
from prserv.runtime.settings import load_config
from prserv.server.parentstate import ParentState
from prserv.storage import open_engine
from prserv.timestamps import now_us, parse_rfc3339

from certificates import issue
from processes import BIN, running, start_process
from test_http import get, status_document
from waiting import until

pytest.importorskip("h11")

V, A = "zlib-1.3-r0", "core2-64"
LISTENING = re.compile(r"HTTP listener on (https?://\S+) \(process (\d+), (idle|niceness 19) priority\)")


def children(lines: List[str]) -> List[Tuple[str, int, str]]:
    """(address, pid, priority) of every child the server's log announced, in order."""
    return [(m.group(1), int(m.group(2)), m.group(3)) for m in LISTENING.finditer("".join(lines))]


def is_running(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def test_the_pages_come_from_an_idle_child_that_is_restarted_and_stopped_with_the_server(tmp_path):
    process, address, lines = start_process(tmp_path, "--http", "127.0.0.1:0", "--http-process", "true")
    try:
        await until(lambda: len(children(lines)) == 1, 30, lambda: lines)
        http_address, pid, priority = children(lines)[0]
        assert pid != process.pid
        assert http_address != "http://" + address
        if hasattr(os, "SCHED_IDLE"):
            assert priority == "idle" and os.sched_getscheduler(pid) == os.SCHED_IDLE
        status = (await get(http_address)).json()
        assert (status["role"], status["upstream"], status["mirror_of"]) == ("read-write", None, None)

        async with await prserv.create_async_client(address) as client:
            value = await client.getPR("zlib-1.3-r0", "core2-64", "c1")
        recent = (await get(http_address, "/api/v1/recent")).json()
        assert [(i["version"], i["value"]) for i in recent["items"]] == [("zlib-1.3-r0", value)]

        os.kill(pid, 9)
        await until(lambda: len(children(lines)) == 2, 30, lambda: lines)
        http_address, new_pid, _ = children(lines)[1]
        assert new_pid != pid
        assert "HTTP process (pid %d) exited" % pid in "".join(lines)
        assert (await get(http_address)).json()["role"] == "read-write"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0
    assert not any(is_running(child) for _, child, _ in children(lines))


async def test_sighup_replaces_the_child_with_one_of_the_settings_read_again(tmp_path):
    conf = tmp_path / "prserv.toml"
    conf.write_text('allow = ["127.0.0.0/8"]\n')
    process, address, lines = start_process(tmp_path, "--config", str(conf), "--http", "127.0.0.1:0",
                                             "--http-process", "true")
    try:
        await until(lambda: len(children(lines)) == 1, 30, lambda: lines)
        http_address, pid, _ = children(lines)[0]
        assert (await get(http_address)).status == 200
        conf.write_text('allow = ["10.0.0.0/8"]\n')
        process.send_signal(signal.SIGHUP)
        await until(lambda: len(children(lines)) == 2, 30, lambda: lines)
        assert "HTTP process (pid %d) replaced to reload its settings" % pid in "".join(lines)
        assert "exited" not in "".join(lines)
        http_address = children(lines)[1][0]
        with pytest.raises((ConnectionError, OSError, AssertionError, ValueError)):
            answer = await get(http_address)            # 127.0.0.1 is no longer allowed: closed at once
            assert answer.status == 200
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_sighup_gives_the_child_the_access_rules_read_again_and_nothing_else(tmp_path):
    started = load_config({"database": str(tmp_path / "a.sqlite3"), "http": "127.0.0.1:8586",
                           "allow": ["127.0.0.0/8"], "idle_timeout": 7}, environ={})
    reloaded = load_config({"database": str(tmp_path / "b.sqlite3"), "http": "127.0.0.1:9999",
                            "allow": ["10.0.0.0/8"], "allow_write": ["10.1.0.0/16"], "idle_timeout": 9},
                           environ={})
    renewed = webprocess.with_reloaded_access(started, reloaded)
    assert (renewed.database, renewed.http, renewed.idle_timeout) == (str(tmp_path / "a.sqlite3"),
                                                                       "127.0.0.1:8586", 7.0)
    assert [str(net) for net in renewed.allow] == ["10.0.0.0/8"]
    assert [str(net) for net in renewed.allow_write] == ["10.1.0.0/16"]


async def test_the_child_shows_the_server_s_upstream_and_asks_it_for_the_upstream_s_state(tmp_path):
    with running(tmp_path, db="upstream.sqlite3") as (_, upstream_address, _), \
            running(tmp_path, "-u", upstream_address, "--http", "127.0.0.1:0") as (_, address, lines):
        http_address = children(lines)[0][0]
        async with await prserv.create_async_client(address) as client:
            await client.getPR("zlib-1.3-r0", "core2-64", "c1")
        status = (await get(http_address)).json()
        assert (status["role"], status["upstream"], status["mirror"]) == ("read-write", upstream_address, None)
        state = status["upstream_state"]
        assert state["address"] == upstream_address and state["ok"] >= 1 and state["error"] == 0


async def test_a_mirror_s_child_shows_the_mirror_s_state_and_the_rows_it_copied(tmp_path):
    with running(tmp_path, db="source.sqlite3") as (_, source_address, _), \
            running(tmp_path, "--mirror", source_address, "--http", "127.0.0.1:0",
                    db="mirror.sqlite3") as (_, _, lines):
        http_address = children(lines)[0][0]
        async with await prserv.create_async_client(source_address) as client:
            value = await client.getPR("zlib-1.3-r0", "core2-64", "c1")
        seen: List[object] = []

        async def copied() -> bool:
            seen[:] = [(await get(http_address, "/api/v1/recent")).json()]
            return [(i["version"], i["value"]) for i in seen[0]["items"]] == [("zlib-1.3-r0", value)]

        for _ in range(300):
            if await copied():
                break
            await asyncio.sleep(0.05)
        assert await copied(), seen
        status = (await get(http_address)).json()
        assert (status["role"], status["mirror_of"]) == ("mirror", source_address)
        assert status["mirror"]["source"] == source_address and status["mirror"]["complete"] is True


def test_the_child_gets_the_access_tls_and_limit_settings_and_shows_the_server_s_role(tmp_path, monkeypatch):
    monkeypatch.setenv("PRSERV_MIRROR", "ignored:1")
    config = load_config({"database": str(tmp_path / "pr.sqlite3"), "http": "127.0.0.1:0", "http_process": True,
                          "allow": ["10.0.0.0/8"], "allow_write": ["10.1.0.0/16"], "trusted_proxies": ["10.9.0.1"],
                          "mirror": "source:8585", "idle_timeout": 7},
                         environ={})
    argv = webprocess.child_argv(config, "-", str(tmp_path / "pr.sock"))
    assert "-f" not in argv and str(tmp_path / "pr.sqlite3") not in argv and "-r" in argv
    assert argv[argv.index("--bind") + 1] == "unix://%s" % (tmp_path / "pr.sock")
    assert argv[argv.index("--http-process") + 1] == "false"
    for option, value in (("--allow", "10.0.0.0/8"), ("--allow-write", "10.1.0.0/16"),
                          ("--trusted-proxy", "10.9.0.1/32"), ("--idle-timeout", "7.0"), ("--log", "-")):
        assert argv[argv.index(option) + 1] == value
    assert "--mirror" not in argv and "--upstream" not in argv
    environ = webprocess.child_environ(config, 9, "unix:///private/server.sock")
    assert "PRSERV_MIRROR" not in environ and environ["PRSERV_DATABASE"] == str(tmp_path / "pr.sqlite3")
    assert webprocess.shown_as(environ) == {"role": "mirror", "upstream": None, "mirror_of": "source:8585",
                                            "parent": "unix:///private/server.sock"}
    assert webprocess.shown_as({}) is None


# --------------------------------------------------------------------------- the default, its figures, its failures

def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels) of Prometheus' text."""
    found = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    assert found, "%s not in:\n%s" % (name, text)
    return float(found.group(1))


async def test_by_default_the_child_serves_http_and_its_metrics_are_the_server_s(tmp_path):
    pytest.importorskip("prometheus_client")
    process, address, lines = start_process(tmp_path, "--http", "127.0.0.1:0")
    try:
        [(http_address, pid, _)] = children(lines)          # announced before the server said it was ready
        ready_lines = [line for line in lines if line.startswith("prserv ") and " serving " in line]
        assert ready_lines == ["prserv %s serving %s on %s\n" % (prserv.__version__, tmp_path / "pr.sqlite3",
                                                                   address)]
        started = [line for line in lines if "Started PRServer" in line]
        assert len(started) == 1 and "Address: %s, PID: %d" % (address, process.pid) in started[0]
        assert "unix://" not in "".join(ready_lines + started)          # the child's private socket
        assert "HTTP process (PID %d) of the server with PID %d" % (pid, process.pid) in "".join(lines)

        async with await prserv.create_async_client(address) as client:
            value = await client.getPR("zlib-1.3-r0", "core2-64", "c1")
            assert await client.getPR("zlib-1.3-r0", "core2-64", "c1") == value
        first = (await get(http_address, "/metrics")).body.decode()
        assert metric(first, 'prserv_requests_total{command="get-pr",outcome="ok"}') == 2
        assert metric(first, "prserv_allocations_total") == 1
        assert 'command="http GET"' not in first                        # counted once answered
        assert metric(first, "prserv_connections_active") >= 2          # the child's question, this GET
        second = (await get(http_address, "/metrics")).body.decode()
        assert metric(second, 'prserv_requests_total{command="http GET",outcome="ok"}') == 1
        assert metric(second, 'prserv_request_duration_seconds_count{command="get-pr"}') == 2
        assert metric(second, "prserv_commit_duration_seconds_count") >= 1   # the server's commits
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0
    assert not is_running(pid)


async def test_the_child_shows_the_upstream_marked_down_by_the_server(tmp_path):
    with running(tmp_path, db="upstream.sqlite3") as (upstream, upstream_address, _), \
            running(tmp_path, "-u", upstream_address, "--http", "127.0.0.1:0") as (_, address, lines):
        http_address = children(lines)[0][0]
        state = (await get(http_address)).json()["upstream_state"]
        assert (state["address"], state["down"]) == (upstream_address, False)
        upstream.terminate()
        upstream.wait(30)
        async with await prserv.create_async_client(address) as client:
            with pytest.raises(prserv.client.InvokeError, match="unavailable"):
                await client.getPR("zlib-1.3-r0", "core2-64", "c1")
        state = (await get(http_address)).json()["upstream_state"]
        assert (state["address"], state["down"], state["error"]) == (upstream_address, True, 1)


def child_of(parent: int) -> List[int]:
    """Processes whose environment names ``parent`` as the server they serve pages for."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/environ" % entry, "rb") as environ:
                if b"PRSERV_WEB_PARENT=%d\0" % parent in environ.read() and is_running(int(entry)):
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def test_a_server_whose_http_port_is_taken_does_not_start_and_leaves_nothing(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
        result = subprocess.run([sys.executable, BIN, "-F", "-f", str(tmp_path / "pr.sqlite3"), "--bind",
                                 "127.0.0.1:0", "--http", "127.0.0.1:%d" % port],
                                capture_output=True, text=True, env=dict(env, TMPDIR=str(temporary)), timeout=60)
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if line.startswith("bitbake-prserv:")]
    assert len(said) == 1 and said[0].startswith(
        "bitbake-prserv: cannot start the server: HTTP listener 127.0.0.1:%d: " % port), result.stderr
    assert "in use" in said[0]
    assert "serving" not in result.stderr
    assert list(temporary.iterdir()) == []


async def test_a_killed_server_s_child_ends_and_removes_the_private_directory(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process, _, lines = start_process(tmp_path, "--http", "127.0.0.1:0", env={"TMPDIR": str(temporary)})
    [(_, pid, _)] = children(lines)
    [directory] = temporary.iterdir()
    assert sorted(p.name for p in directory.iterdir()) == ["pr-1.sock", "server.sock"]
    process.kill()
    process.wait(30)
    await until(lambda: not is_running(pid), 30, lambda: lines)
    assert list(temporary.iterdir()) == []


class Nonsense:
    """A unix socket server that answers every line with ``answer`` (None: never)."""

    def __init__(self, path: str, answer: Optional[bytes]) -> None:
        self.path, self.answer = path, answer
        self.server: Optional[asyncio.AbstractServer] = None

    async def __aenter__(self) -> "Nonsense":
        self.server = await asyncio.start_unix_server(self.serve, self.path)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                if self.answer is not None:
                    writer.write(self.answer)
                    await writer.drain()
        finally:
            writer.close()


@pytest.mark.parametrize("answer", [
    b"garbage\n", b'{"mirror": null}\n', b'{"requests": {}, "figures": {"commands": {"x": 1}}}\n', None])
async def test_a_parent_answering_nonsense_or_nothing_gives_unknown_state_and_no_figures(tmp_path, answer):
    path = str(tmp_path / "parent.sock")
    async with Nonsense(path, answer):
        parent = ParentState("unix://" + path, timeout=0.5)
        try:
            assert await parent.read() == (None, None)
            assert await parent.figures() is None
        finally:
            await parent.close()


async def test_concurrent_pages_ask_the_server_one_question_at_a_time(tmp_path):
    """The child keeps one connection to its server: 20 status views and 20 scrapes
    at once each get the server's upstream state and figures."""
    pytest.importorskip("prometheus_client")
    with running(tmp_path, db="upstream.sqlite3") as (_, upstream_address, _), \
            running(tmp_path, "-u", upstream_address, "--http", "127.0.0.1:0") as (_, _, lines):
        http_address = children(lines)[0][0]
        answers = await asyncio.gather(*[get(http_address, target) for _ in range(20)
                                         for target in ("/api/v1/status", "/metrics")])
        assert [answer.status for answer in answers] == [200] * 40
        states = [answer.json()["upstream_state"] for answer in answers[0::2]]
        assert [(state["address"], state["down"]) for state in states] == [(upstream_address, False)] * 20
        assert all(b'prserv_upstream_requests_total{outcome="ok"}' in answer.body for answer in answers[1::2])


def history_target(version: str = V, pkgarch: str = A) -> str:
    return "/api/v1/history?version=%s&pkgarch=%s" % (version, pkgarch)


async def test_a_child_of_a_server_on_postgresql_reads_the_values_the_server_stores(tmp_path, pg_cluster):
    url = pg_cluster.new_database()
    process, address, lines = start_process(tmp_path, "-f", url, "--http", "127.0.0.1:0", "--http-process", "true")
    try:
        await until(lambda: len(children(lines)) == 1, 30, lambda: lines)
        http_address, pid, _ = children(lines)[0]
        assert pid != process.pid
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:       # a URL may hold a password
            assert url.encode() not in cmdline.read()
        before = now_us()
        async with await prserv.create_async_client(address) as client:
            assert await client.getPR(V, A, "c1") == "0"
        after = now_us()

        engine = await open_engine(url)
        try:
            identity = (await engine.changes(None, 0)).identity
        finally:
            await engine.close()
        answer = await get(http_address)
        assert answer.status == 200
        assert answer.json() == dict(status_document("read-write", identity=identity, packages=None, values=None,
                                                     given_24h=1), engine="postgresql")   # no kept counts
        answer = await get(http_address, history_target())
        assert answer.status == 200
        document = answer.json()
        given = document["history"][0]["given"]
        assert before <= parse_rfc3339(given) <= after
        assert document == {"version": V, "pkgarch": A, "latest": "0", "history": [
            {"checksum": "c1", "value": "0", "given": given, "address": "127.0.0.1", "user": None}]}
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0
    assert not is_running(pid)


@pytest.fixture
def certificates(tmp_path):
    """(CA bundle, server certificate chain, key): test_tls's fixture, whose module
    skips without trustme, imported here would skip every test above."""
    return issue(tmp_path)


async def test_an_https_child_serves_the_server_s_certificate_and_takes_tokens_by_basic(tmp_path, certificates):
    import ssl

    from test_http_access import WRONG, basic, https_get, in_thread     # needs trustme, as the fixture

    ca_file, chain, key = certificates
    writer = ("ci", users.add_user(str(tmp_path / "pr.sqlite3"), "ci", ["write"])[1])
    process, address, lines = start_process(tmp_path, "--http", "https://127.0.0.1:0", "--tls-certificate", chain,
                                            "--tls-key", key, "--allow-write", "10.0.0.0/8",   # loopback reads
                                            "--http-process", "true")
    try:
        await until(lambda: len(children(lines)) == 1, 30, lambda: lines)
        http_address, pid, _ = children(lines)[0]
        assert http_address.startswith("https://127.0.0.1:") and pid != process.pid
        # the ready line names the server's listener alone, not the socket its child asks it on
        ready = [line for line in lines if line.startswith("prserv ") and " serving " in line][0]   # then the child's
        assert ready == "prserv %s serving %s on %s\n" % (prserv.__version__, tmp_path / "pr.sqlite3", address)
        client = PRAsyncClient(credentials=writer)
        await client.connect_address(address)
        async with client:
            assert await client.getPR(V, A, "c1") == "0"

        status, _, body = await in_thread(https_get, http_address, ca_file)
        document = json.loads(body)
        assert (status, document["role"], document["engine"], document["figures"]) == (
            200, "read-write", "sqlite", {"packages": 1, "values": 1, "given_24h": 1})
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await in_thread(https_get, http_address, None)             # the system's CAs: not ours

        status, _, body = await in_thread(https_get, http_address, ca_file, history_target())
        [item] = json.loads(body)["history"]
        assert (status, item) == (200, {"checksum": "c1", "value": "0", "given": item["given"]})
        proof = {"Authorization": basic(*writer).split(": ", 1)[1]}
        status, _, body = await in_thread(https_get, http_address, ca_file, history_target(), proof)
        assert (status, json.loads(body)["history"]) == (200, [
            {"checksum": "c1", "value": "0", "given": item["given"], "address": "127.0.0.1", "user": "ci"}])
        wrong = {"Authorization": basic("ci", "not-the-token").split(": ", 1)[1]}
        status, _, body = await in_thread(https_get, http_address, ca_file, history_target(), wrong)
        assert (status, json.loads(body)) == (401, WRONG)
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0
    assert not is_running(pid)


def parent_of(pid: int) -> int:
    with open("/proc/%d/stat" % pid) as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


async def test_a_daemon_s_child_listens_once_start_returns_and_stop_ends_both(tmp_path):
    from test_daemon import run, started

    pidfile, log = tmp_path / "pr.pid", tmp_path / "pr.log"
    result = run("--start", "--host", "127.0.0.1", "--port", "0", "-f", str(tmp_path / "pr.sqlite3"), "-l", str(log),
                 "--pidfile", str(pidfile), "--http", "127.0.0.1:0", "--http-process", "true", cwd=tmp_path)
    started_pids = [pid for pid in [read_pid(str(pidfile))] if pid is not None]    # stopped whatever comes
    try:
        match = started(result)
        daemon = int(match["pid"])
        assert started_pids == [daemon]
        # started: the server's listener alone, not the socket its child asks it on
        assert re.fullmatch(r"127\.0\.0\.1:\d+", match["address"]), match.string

        def logged() -> List[str]:
            return [log.read_text()]

        await until(lambda: len(children(logged())) == 1, 30, logged)
        http_address, pid, _ = children(logged())[0]
        started_pids.append(pid)
        assert parent_of(pid) == daemon
        # the child has the daemon's standard streams (on /dev/null), not its log file on fd 1
        assert [os.readlink("/proc/%d/fd/%d" % (pid, fd)) for fd in (0, 1, 2)] == ["/dev/null"] * 3
        async with await prserv.create_async_client(match["address"]) as client:
            assert await client.getPR(V, A, "c1") == "0"
        answer = await get(http_address)
        assert (answer.status, answer.json()["role"], answer.json()["figures"]) == (
            200, "read-write", {"packages": 1, "values": 1, "given_24h": 1})

        stopped = run("--stop", "--pidfile", str(pidfile), cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        assert "PR server (pid %d) stopped." % daemon in stopped.stdout
        assert not is_running(daemon) and not is_running(pid)
        assert not pidfile.exists()
        assert "exited" not in log.read_text()              # stopped, not seen dying and restarted
    finally:
        for running in reversed(started_pids):
            if is_running(running):
                os.kill(running, signal.SIGKILL)
