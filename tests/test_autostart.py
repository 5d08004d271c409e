"""What bitbake's cooker calls: auto_start(d) / auto_shutdown(), and the daemon API."""

from __future__ import annotations

import os
import socket

import pytest

import prserv.serv
from prserv.serv import PRServiceConfigError, auto_shutdown, auto_start


class FakeDatastore:
    """The one method of bitbake's datastore that ``auto_start`` uses."""

    def __init__(self, **variables: str) -> None:
        self.variables = variables

    def getVar(self, name: str):
        return self.variables.get(name)


@pytest.fixture(autouse=True)
def no_singleton_left():
    yield
    auto_shutdown()
    assert prserv.serv.singleton is None


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_localhost_0_starts_a_private_server_in_persistent_dir(tmp_path):
    persist = tmp_path / "persistent" / "deep"
    d = FakeDatastore(PRSERV_HOST="localhost:0", PERSISTENT_DIR=str(persist), CACHE=str(tmp_path / "c"))
    answer = auto_start(d)
    singleton = prserv.serv.singleton
    assert answer == "localhost:%d" % singleton.port and singleton.port != 0
    assert singleton.dbfile == str(persist / "prserv.sqlite3")
    assert singleton.logfile == str(persist / "prserv.log")
    assert singleton.process.is_alive()
    assert (persist / "prserv.sqlite3").exists()

    conn = prserv.serv.connect("localhost", 0)            # port 0 = the singleton's port
    try:
        assert conn.getPR("1.0-r0", "core2-64", "aaa") == "0"
        assert conn.getPR("1.0-r0", "core2-64", "bbb") == "1"
    finally:
        conn.close()
    conn = prserv.serv.connect("localhost", singleton.port)
    try:
        assert conn.test_pr("1.0-r0", "core2-64", "bbb") == "1"
    finally:
        conn.close()

    # the cooker calls it again at every parse: the running server is kept
    assert auto_start(d) == answer
    assert prserv.serv.singleton is singleton and singleton.process.is_alive()


def test_cache_is_used_without_persistent_dir(tmp_path):
    auto_start(FakeDatastore(PRSERV_HOST="127.0.0.1:0", CACHE=str(tmp_path / "cache")))
    assert prserv.serv.singleton.dbfile == str(tmp_path / "cache" / "prserv.sqlite3")


def test_another_database_restarts_the_singleton_and_empty_host_stops_it(tmp_path):
    auto_start(FakeDatastore(PRSERV_HOST="localhost:0", PERSISTENT_DIR=str(tmp_path / "a")))
    first = prserv.serv.singleton
    answer = auto_start(FakeDatastore(PRSERV_HOST="localhost:0", PERSISTENT_DIR=str(tmp_path / "b")))
    second = prserv.serv.singleton
    assert second is not first and second.dbfile == str(tmp_path / "b" / "prserv.sqlite3")
    assert first.process.exitcode == 0                     # SIGTERM: clean exit
    assert answer == "localhost:%d" % second.port

    assert auto_start(FakeDatastore(PRSERV_HOST="")) is None
    assert prserv.serv.singleton is None and second.process.exitcode == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:0:1", "localhost:abc", ":8585", "localhost:"])
def test_malformed_prserv_host_stops_the_singleton_and_raises(tmp_path, host):
    auto_start(FakeDatastore(PRSERV_HOST="localhost:0", PERSISTENT_DIR=str(tmp_path)))
    running = prserv.serv.singleton
    with pytest.raises(PRServiceConfigError, match="PRSERV_HOST: incorrect format"):
        auto_start(FakeDatastore(PRSERV_HOST=host, PERSISTENT_DIR=str(tmp_path)))
    assert prserv.serv.singleton is None and running.process.exitcode == 0


def test_local_server_needs_a_directory():
    with pytest.raises(PRServiceConfigError, match="PERSISTENT_DIR"):
        auto_start(FakeDatastore(PRSERV_HOST="localhost:0"))


def test_remote_server_must_answer(tmp_path, process_servers):
    port = refused_port()
    with pytest.raises(PRServiceConfigError, match="PRservice 127.0.0.1:%d not available" % port):
        auto_start(FakeDatastore(PRSERV_HOST="127.0.0.1:%d" % port))

    server = process_servers("127.0.0.1:0", str(tmp_path / "remote.sqlite3"))
    assert auto_start(FakeDatastore(PRSERV_HOST=server.address)) == server.address
    assert prserv.serv.singleton is None                    # nothing started locally


def test_singleton_honours_prserv_upstream(tmp_path, process_servers):
    upstream = process_servers("127.0.0.1:0", str(tmp_path / "upstream.sqlite3"))
    with prserv.create_client(upstream.address) as client:
        assert client.importone("1.0-r0", "core2-64", "shared", "7") == "7"
    auto_start(FakeDatastore(PRSERV_HOST="localhost:0", PERSISTENT_DIR=str(tmp_path / "local"),
                             PRSERV_UPSTREAM=upstream.address))
    assert prserv.serv.singleton.upstream == upstream.address
    conn = prserv.serv.connect("localhost", 0)
    try:
        assert conn.getPR("1.0-r0", "core2-64", "shared") == "7"       # the upstream's value
        assert conn.getPR("1.0-r0", "core2-64", "local-change") == "7.0"
    finally:
        conn.close()


def test_start_daemon_and_stop_daemon_api(tmp_path, capsys):
    port = refused_port()
    pidfile = prserv.serv.PIDPREFIX % ("127.0.0.1", port)
    assert prserv.serv.start_daemon(str(tmp_path / "pr.sqlite3"), "localhost", port,
                                    str(tmp_path / "pr.log")) == 0
    try:
        pid = int(open(pidfile).read())
        assert prserv.serv.is_running(pid)
        assert prserv.serv.ping("127.0.0.1", port) == {"alive": True}
        assert prserv.serv.start_daemon(str(tmp_path / "pr.sqlite3"), "127.0.0.1", port,
                                        str(tmp_path / "pr.log")) == 1
        assert "already exist" in capsys.readouterr().err
    finally:
        assert prserv.serv.stop_daemon("127.0.0.1", port) == 0
    assert not os.path.exists(pidfile) and not prserv.serv.is_running(pid)
    assert prserv.serv.stop_daemon("127.0.0.1", port) == 1
    assert "pidfile %s does not exist" % pidfile in capsys.readouterr().err
