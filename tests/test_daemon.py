"""bin/bitbake-prserv as a process: daemon start/stop, foreground mode, settings, drop-in layout."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import prserv
from prserv.runtime.daemon import PIDPREFIX, is_running, read_pid


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin", "bitbake-prserv")
STARTED = re.compile(r"PR server started: (?P<address>\S+) \(pid (?P<pid>\d+), pidfile (?P<pidfile>\S+)\)")


def clean_env(**extra: str) -> dict:
    """This environment without PRSERV_* settings (a developer's own must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}
    env.update(extra)
    return env


def run(*args: str, cwd, env=None, script: str = BIN) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          cwd=str(cwd), env=env or clean_env(), timeout=60)


def started(result: subprocess.CompletedProcess) -> re.Match:
    assert result.returncode == 0, result.stderr
    match = STARTED.search(result.stdout)
    assert match, result.stdout
    return match


def get_pr(address: str, checksum: str, version: str = "1.0-r0") -> str:
    with prserv.create_client(address) as client:
        return client.getPR(version, "core2-64", checksum)


def wait_gone(pid: int) -> bool:
    """True once ``pid`` has exited (bounded; polling a process we cannot wait for)."""
    deadline = time.monotonic() + 10
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def daemons(tmp_path):
    """Stops, at the end, every daemon whose pidfile a test registered."""
    pidfiles = []
    yield pidfiles
    for pidfile in pidfiles:
        pid = read_pid(pidfile)
        if pid is not None and is_running(pid):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        if pid is not None and os.path.exists(pidfile):
            os.unlink(pidfile)


@pytest.fixture
def bitbakes_pidfile_dir():
    """For tests whose pidfiles are bitbake's, in /tmp for the whole machine: held
    exclusively, so that test runs side by side (CI runs one per Python version) do
    not see each other's servers in ``--stop``'s list of ports."""
    with open(os.path.join(os.path.dirname(PIDPREFIX), "prserv-tests-pidfiles.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- daemon

def test_start_stop_cycles_keep_data_and_detach(tmp_path, daemons):
    pidfile = str(tmp_path / "pr.pid")
    daemons.append(pidfile)
    common = ("--host", "127.0.0.1", "--port", "0", "-f", "pr.sqlite3", "-l", "pr.log", "--pidfile", pidfile)

    match = started(run("--start", *common, cwd=tmp_path))
    pid = int(match["pid"])
    assert match["pidfile"] == pidfile and read_pid(pidfile) == pid
    assert get_pr(match["address"], "aaa") == "0"
    # a real daemon: double fork (new session, not its leader), cwd /, streams on /dev/null
    assert os.getsid(pid) not in (pid, os.getsid(0))
    assert os.readlink("/proc/%d/cwd" % pid) == "/"
    assert {os.readlink("/proc/%d/fd/%d" % (pid, fd)) for fd in (0, 1, 2)} == {"/dev/null"}

    stopped = run("--stop", *common, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert "PR server (pid %d) stopped." % pid in stopped.stdout
    assert not os.path.exists(pidfile) and not is_running(pid)
    log = (tmp_path / "pr.log").read_text()
    assert "PRServer stopped (%s)" % (tmp_path / "pr.sqlite3") in log      # database closed

    match = started(run("--start", *common, cwd=tmp_path))
    assert int(match["pid"]) != pid
    assert get_pr(match["address"], "aaa") == "0"
    assert get_pr(match["address"], "bbb") == "1"                          # data survived
    assert run("--stop", *common, cwd=tmp_path).returncode == 0
    assert wait_gone(int(match["pid"]))


def test_port_zero_uses_bitbakes_pidfile_name_and_stop_lists_it(tmp_path, bitbakes_pidfile_dir, daemons):
    pidfile = PIDPREFIX % ("127.0.0.1", 0)
    if os.path.exists(pidfile):
        pytest.skip("%s is in use by another server on this machine" % pidfile)
    daemons.append(pidfile)
    match = started(run("--start", "--host", "localhost", "--port", "0", cwd=tmp_path))
    assert match["pidfile"] == pidfile
    assert match["address"].startswith("127.0.0.1:") and not match["address"].endswith(":0")

    wrong = run("--stop", "--host", "127.0.0.1", "--port", "1", cwd=tmp_path)
    assert wrong.returncode == 1
    assert ("pidfile %s does not exist. Daemon not running? Wrong port? Other ports listening at "
            "127.0.0.1: 0" % (PIDPREFIX % ("127.0.0.1", 1))) in wrong.stderr

    assert run("--stop", "--host", "localhost", "--port", "0", cwd=tmp_path).returncode == 0
    assert not os.path.exists(pidfile)


def test_second_start_refused_while_running(tmp_path, daemons):
    pidfile = str(tmp_path / "pr.pid")
    daemons.append(pidfile)
    args = ("--start", "--host", "127.0.0.1", "--port", "0", "--pidfile", pidfile)
    pid = int(started(run(*args, cwd=tmp_path))["pid"])
    again = run(*args, cwd=tmp_path)
    assert again.returncode == 1
    assert "pidfile %s already exist. Daemon already running? (pid %d)" % (pidfile, pid) in again.stderr
    assert read_pid(pidfile) == pid and is_running(pid)


def test_port_clash_fails_with_message_and_no_pidfile(tmp_path):
    pidfile = str(tmp_path / "pr.pid")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--start", "--host", "127.0.0.1", "--port", str(port), "--pidfile", pidfile,
                     cwd=tmp_path)
    assert result.returncode == 1
    assert "the PR server did not start" in result.stderr
    assert "address already in use" in result.stderr
    assert not os.path.exists(pidfile)


def test_unopenable_database_fails_with_message(tmp_path):
    result = run("--start", "--host", "127.0.0.1", "--port", "0", "--pidfile", str(tmp_path / "p.pid"),
                 "-f", "/proc/no-such-dir/pr.sqlite3", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot create the directory of database /proc/no-such-dir/pr.sqlite3" in result.stderr
    assert not os.path.exists(tmp_path / "p.pid")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_pidfile_does_not_block_start_or_stop(tmp_path, daemons):
    pidfile = str(tmp_path / "pr.pid")
    daemons.append(pidfile)
    stale = dead_pid()
    (tmp_path / "pr.pid").write_text("%d\n" % stale)
    stopped = run("--stop", "--pidfile", pidfile, cwd=tmp_path)
    assert stopped.returncode == 0
    assert "was not running; removed stale pidfile %s" % pidfile in stopped.stdout
    assert not os.path.exists(pidfile)

    (tmp_path / "pr.pid").write_text("%d\n" % stale)
    result = run("--start", "--host", "127.0.0.1", "--port", "0", "--pidfile", pidfile, cwd=tmp_path)
    assert read_pid(pidfile) == int(started(result)["pid"]) != stale
    assert "removing stale pidfile %s (pid %d is not running)" % (pidfile, stale) in result.stderr


def test_stop_without_daemon(tmp_path):
    result = run("--stop", "--pidfile", str(tmp_path / "none.pid"), cwd=tmp_path)
    assert result.returncode == 1
    assert "pidfile %s does not exist. Daemon not running?" % (tmp_path / "none.pid") in result.stderr


# --------------------------------------------------------------------------- foreground

def start_foreground(tmp_path, *args: str, env=None) -> "tuple[subprocess.Popen, str]":
    """A ``--foreground`` server and its announce line (read from stderr, no sleeping)."""
    process = subprocess.Popen([sys.executable, BIN, "--foreground", *args], cwd=str(tmp_path),
                               env=env or clean_env(), stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if " serving " in line:
            return process, line
    process.wait(10)
    pytest.fail("no announce line; exit code %s" % process.returncode)


def stop_foreground(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(10) == 0
    return rest


def test_foreground_serves_every_listener_until_sigterm(tmp_path):
    sock = tmp_path / "pr.sock"
    process, line = start_foreground(tmp_path, "-f", "pr.sqlite3", "--bind", "127.0.0.1:0",
                                     "--bind", "unix://%s" % sock)
    tcp = re.search(r" on (127\.0\.0\.1:\d+), unix://", line).group(1)
    assert "prserv %s serving %s on %s, unix://%s" % (prserv.__version__, tmp_path / "pr.sqlite3",
                                                      tcp, sock) in line
    assert get_pr(tcp, "aaa") == "0"
    assert get_pr("unix://%s" % sock, "bbb") == "1"
    assert get_pr("unix://%s" % sock, "bbb") == "1"
    log = stop_foreground(process)
    assert "PRServer stopped (%s)" % (tmp_path / "pr.sqlite3") in log     # logs on stderr
    assert not sock.exists()
    assert not (tmp_path / "prserv.log").exists()


def test_foreground_settings_from_file_and_environment(tmp_path):
    conf = tmp_path / "etc" / "prserv.toml"
    conf.parent.mkdir()
    conf.write_text('database = "../data/pr.sqlite3"\nbind = "127.0.0.1:1"\nlog_level = "DEBUG"\n')
    env = clean_env(PRSERV_CONFIG=str(conf), PRSERV_BIND="127.0.0.1:0")
    process, line = start_foreground(tmp_path, env=env)
    assert "serving %s on 127.0.0.1:" % (tmp_path / "data" / "pr.sqlite3") in line
    address = re.search(r" on (127\.0\.0\.1:\d+)", line).group(1)
    assert get_pr(address, "aaa") == "0"
    log = stop_foreground(process)
    assert " DEBUG " in log                                                # level from the file


def test_bad_setting_is_named_with_its_source(tmp_path):
    result = run("--start", cwd=tmp_path, env=clean_env(PRSERV_UPSTREAM_TIMEOUT="soon"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bitbake-prserv: invalid upstream_timeout 'soon' (from environment PRSERV_UPSTREAM_TIMEOUT): "
        "expected a positive number of seconds")


def test_version_and_help(tmp_path):
    assert run("--version", cwd=tmp_path).stdout.strip() == "bitbake-prserv %s" % prserv.__version__
    usage = run("--help", cwd=tmp_path).stdout
    for flag in ("--file", "--log", "--loglevel", "--start", "--stop", "--host", "--port",
                 "--read-only", "--upstream", "--foreground", "--bind", "--config", "--version"):
        assert flag in usage


# --------------------------------------------------------------------------- drop-in layout

BITBAKE_LIKE_SCRIPT = '''#!/usr/bin/env python3
# The shape of bitbake's own bin/bitbake-prserv: version check, then prserv.serv's API.
import argparse, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "lib"))
import prserv
import prserv.serv
VERSION = "%s"

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-f", "--file", default="prserv.sqlite3")
    parser.add_argument("-l", "--log", default="prserv.log")
    parser.add_argument("--start", action="store_true")
    parser.add_argument("--stop", action="store_true")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8585)
    args = parser.parse_args()
    if args.start:
        return prserv.serv.start_daemon(args.file, args.host, args.port, os.path.abspath(args.log))
    if args.stop:
        return prserv.serv.stop_daemon(args.host, args.port)
    return 0

if __name__ == "__main__":
    if prserv.__version__ != VERSION:
        sys.exit("Bitbake library version and program version mismatch!")
    sys.exit(main())
'''


def bitbake_tree(tmp_path, script_version: str):
    """A directory laid out like bitbake's: bin/ and lib/ with an older prserv in it."""
    tree = tmp_path / "bitbake"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib" / "prserv").mkdir(parents=True)
    (tree / "lib" / "prserv" / "__init__.py").write_text('__version__ = "2.18.0"\n')
    (tree / "bin" / "bitbake-prserv").write_text(BITBAKE_LIKE_SCRIPT % script_version)
    return tree


def copy_ours_over(tree) -> None:
    shutil.rmtree(tree / "lib" / "prserv")
    shutil.copytree(os.path.join(ROOT, "lib", "prserv"), str(tree / "lib" / "prserv"),
                    ignore=shutil.ignore_patterns("__pycache__"))


def test_drop_in_lib_under_bitbakes_script_of_the_same_version(tmp_path, bitbakes_pidfile_dir, daemons):
    tree = bitbake_tree(tmp_path, prserv.__version__)
    copy_ours_over(tree)
    port = free_port()
    daemons.append(PIDPREFIX % ("127.0.0.1", port))
    script = str(tree / "bin" / "bitbake-prserv")
    result = run("--start", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path, script=script)
    assert result.returncode == 0, result.stderr
    assert get_pr("127.0.0.1:%d" % port, "aaa") == "0"
    assert run("--stop", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path, script=script).returncode == 0
    assert not os.path.exists(PIDPREFIX % ("127.0.0.1", port))


def test_drop_in_needs_our_script_when_versions_differ(tmp_path, daemons):
    tree = bitbake_tree(tmp_path, "2.18.0")
    copy_ours_over(tree)
    refused = run("--version", cwd=tmp_path, script=str(tree / "bin" / "bitbake-prserv"))
    assert refused.returncode == 1
    assert "Bitbake library version and program version mismatch!" in refused.stderr

    shutil.copy(BIN, str(tree / "bin" / "bitbake-prserv"))      # README's procedure: bin too
    script = str(tree / "bin" / "bitbake-prserv")
    assert run("--version", cwd=tmp_path, script=script).stdout.strip() == \
        "bitbake-prserv %s" % prserv.__version__
    pidfile = str(tmp_path / "pr.pid")
    daemons.append(pidfile)
    match = started(run("--start", "--host", "127.0.0.1", "--port", "0", "--pidfile", pidfile,
                        cwd=tmp_path, script=script))
    assert "/bitbake/bin/bitbake-prserv" in open("/proc/%s/cmdline" % match["pid"]).read()
    assert get_pr(match["address"], "aaa") == "0"
    assert run("--stop", "--pidfile", pidfile, cwd=tmp_path, script=script).returncode == 0


def test_a_sigterm_sent_as_soon_as_the_server_is_ready_stops_it(tmp_path, pg_cluster):
    """uvloop handles signals only while its loop runs: the server must not say it is
    ready between two runs of its loop.  A SIGTERM sent then was lost (seen with a
    PostgreSQL database: 2 of 3 runs hung)."""
    pytest.importorskip("uvloop")
    for attempt in range(6):
        url = pg_cluster.new_database()
        process = subprocess.Popen([sys.executable, BIN, "-F", "-f", url, "--bind", "127.0.0.1:0",
                                    "--event-loop", "uvloop"], stderr=subprocess.PIPE, text=True)
        for line in process.stderr:
            if line.startswith("prserv ") and " serving " in line:      # the ready line
                break
        process.terminate()
        try:
            assert process.wait(10) == 0
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("attempt %d: SIGTERM right after the ready line was lost" % attempt) from None
