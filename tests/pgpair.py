"""PostgreSQL nodes of a test's own, on TCP at 127.0.0.1: a primary and a synchronous
streaming standby, to fail over under a server's feet.

Unlike the session's cluster (``pgcluster``), these keep PostgreSQL's durable
settings -- fsync on, ``synchronous_commit`` on, a commit acknowledged only once the
standby has it (``synchronous_standby_names``) -- because what the tests check is
that an acknowledged value survives a failover.  The standby is made with
``pg_basebackup`` and promoted with ``pg_ctl promote``, from the PostgreSQL
programs the suite already uses (run as ``nobody`` when the tests run as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import List

import pgcluster

STANDBY_NAME = "standby1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Node:
    """One PostgreSQL server: a data directory, a TCP port, a log."""

    def __init__(self, bin_dir: str, directory: str, name: str) -> None:
        self.bin = bin_dir
        self.directory = directory
        self.name = name
        self.data = os.path.join(directory, name)
        self.log = os.path.join(directory, name + ".log")
        self.port = free_port()
        self.demote = None

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(self.bin, program), *args], capture_output=True, text=True,
                              preexec_fn=self.demote, check=check, timeout=120)

    def configure(self, *lines: str) -> None:
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
            conf.write("".join(line + "\n" for line in lines))

    def start(self) -> None:
        self.run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o",
                 "-p %d -c listen_addresses=127.0.0.1 -k %s" % (self.port, self.directory), "start")

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: as a crash (no shutdown checkpoint, connections cut)."""
        self.run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def promote(self) -> None:
        self.run("pg_ctl", "-D", self.data, "-w", "-t", "60", "promote")

    def psql(self, command: str, database: str = "postgres") -> str:
        result = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                          "-X", "-A", "-t", "-q", "-c", command, check=False)
        if result.returncode:
            raise RuntimeError("psql %r on %s failed: %s" % (command, self.name, result.stderr))
        return result.stdout.strip()


class Pair:
    """A primary and its synchronous standby; ``url`` names both, primary first,
    asking for the one that takes writes."""

    def __init__(self, database: str = "prserv") -> None:
        self.directory = tempfile.mkdtemp(prefix="prserv-pair-")
        self.database = database
        bin_dir = pgcluster.programs()
        self.primary = Node(bin_dir, self.directory, "primary")
        self.standby = Node(bin_dir, self.directory, "standby")
        self.nodes: List[Node] = [self.primary, self.standby]

    def start(self) -> "Pair":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        demote = pgcluster._demotion(self.directory)
        for node in self.nodes:
            node.demote = demote
        primary, standby = self.primary, self.standby
        primary.run("initdb", "-D", primary.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        primary.configure("wal_level = replica", "max_wal_senders = 4", "fsync = on",
                          "synchronous_commit = on", "max_connections = 100")
        primary.start()
        standby.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                    "-D", standby.data, "-R", "--checkpoint=fast")
        standby.configure("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=%s'"
                          % (primary.port, STANDBY_NAME))
        standby.start()
        self.wait_for(lambda: primary.psql("SELECT count(*) FROM pg_stat_replication WHERE "
                                            "application_name = '%s' AND state = 'streaming'"
                                            % STANDBY_NAME) == "1", "the standby to stream")
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '%s'" % STANDBY_NAME)
        primary.psql("SELECT pg_reload_conf()")
        self.wait_for(lambda: primary.psql("SELECT sync_state FROM pg_stat_replication WHERE "
                                            "application_name = '%s'" % STANDBY_NAME) == "sync",
                       "the standby to be synchronous")
        primary.psql("CREATE DATABASE %s" % self.database)

    @staticmethod
    def wait_for(condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for %s" % what)
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return ("postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?target_session_attrs=read-write"
                % (self.primary.port, self.standby.port, self.database))

    def fail_over(self, pause: float = 1.0) -> float:
        """Stop the primary at once (as a crash), promote the standby ``pause`` seconds
        later; returns when the new primary takes writes, with the seconds it took."""
        started = time.monotonic()
        self.primary.stop("immediate")
        time.sleep(pause)                       # the outage a failover manager's detection takes
        self.standby.promote()
        return time.monotonic() - started

    def stop(self) -> None:
        for node in self.nodes:
            if os.path.exists(node.data):
                node.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

