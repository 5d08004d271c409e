"""A real PostgreSQL for the tests, started by the tests themselves.

From the ``pgserver`` wheel (the test extra installs it where it has wheels: Python
3.9-3.12) or, failing that, from PostgreSQL's programs in ``$PRSERV_TEST_PG_BIN`` or
on ``PATH`` (run as ``nobody`` when the tests run as root, which PostgreSQL
refuses).  One cluster per test session, listening on a unix socket only; each test
gets fresh databases (``Cluster.new_database``).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from typing import List, Optional


class Cluster:
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="prserv-pg-")
        self._server = None
        self._process: Optional[subprocess.Popen] = None
        self._names = itertools.count(1)
        self.socket_dir = ""
        self.port = 5432
        self.bin = ""
        self._demote = None

    # ------------------------------------------------------------------ starting
    def start(self) -> "Cluster":
        try:
            self._start()
            # The tests never crash PostgreSQL itself (a restart is a clean, fast
            # shutdown), so its own flushes to disk only cost time here.
            self.psql("ALTER SYSTEM SET fsync = off")
            self.psql("ALTER SYSTEM SET synchronous_commit = off")
            self.psql("SELECT pg_reload_conf()")
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        try:
            import pgserver  # type: ignore[import-not-found]
        except ImportError:
            self._start_programs(_find_bin())
        else:
            self._server = pgserver.get_server(os.path.join(self.directory, "data"), cleanup_mode="stop")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self._server.get_uri()).query)
            self.socket_dir = query["host"][0]
            self.bin = str(pgserver._commands.POSTGRES_BIN_PATH)      # type: ignore[attr-defined]

    def _start_programs(self, bin_dir: str) -> None:
        self.bin = bin_dir
        data = os.path.join(self.directory, "data")
        self.socket_dir = os.path.join(self.directory, "sock")
        os.makedirs(self.socket_dir)
        demote = _demotion(self.directory)
        subprocess.run([os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, preexec_fn=demote)
        self._demote = demote
        self._start_postgres()

    def _start_postgres(self) -> None:
        self._process = subprocess.Popen(
            [os.path.join(self.bin, "postgres"), "-D", os.path.join(self.directory, "data"), "-k", self.socket_dir,
             "-c", "listen_addresses=", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.directory, "log"), "a"),
            preexec_fn=self._demote)
        self.psql("SELECT 1")                           # waits until it accepts connections

    def restart(self) -> None:
        """Stop PostgreSQL at once (every connection is cut) and start it again on the
        same data and socket."""
        if self._server is not None:
            _quit(self._server.get_pid(), signal.SIGINT)         # fast: connections cut, clean files
            self._server.ensure_postgres_running()
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self._server.get_uri()).query)
            assert query["host"][0] == self.socket_dir, "PostgreSQL came back on another socket"
        else:
            self._process.send_signal(signal.SIGINT)
            self._process.wait(30)
            self._start_postgres()

    def stop(self) -> None:
        """An immediate shutdown (SIGQUIT): nothing here needs to outlive the session."""
        if self._server is not None:
            _quit(self._server.get_pid())
            self._server.cleanup()
        if self._process is not None:
            self._process.send_signal(signal.SIGQUIT)
            self._process.wait(30)
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ using
    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, "data")

    def url(self, database: str = "postgres") -> str:
        return "postgresql://postgres@/%s?host=%s" % (database, urllib.parse.quote(self.socket_dir, safe="/"))

    def psql(self, command: str, database: str = "postgres") -> str:
        for attempt in range(100):
            result = subprocess.run([os.path.join(self.bin, "psql"), "-h", self.socket_dir, "-U", "postgres",
                                     "-d", database, "-X", "-A", "-t", "-q", "-c", command],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                return result.stdout
            if not any(sign in result.stderr for sign in (
                    "could not connect", "starting up", "No such file or directory", "Connection refused")):
                break
            time.sleep(0.1)
        raise RuntimeError("psql %r failed: %s" % (command, result.stderr))

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = "t%d" % next(self._names)
        self.psql("CREATE DATABASE %s" % name)
        return self.url(name)


def _quit(pid: Optional[int], how: int = signal.SIGQUIT) -> None:
    """PostgreSQL's immediate shutdown (SIGQUIT; SIGINT: fast), waited for."""
    if not pid:
        return
    try:
        os.kill(pid, how)
    except ProcessLookupError:
        return
    for _ in range(1000):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def programs() -> str:
    """The directory of PostgreSQL's programs the suite uses: the ``pgserver`` wheel's,
    else ``_find_bin``'s."""
    try:
        import pgserver._commands as commands  # type: ignore[import-not-found]
    except ImportError:
        return _find_bin()
    return str(commands.POSTGRES_BIN_PATH)


def _find_bin() -> str:
    candidates: List[str] = []
    if os.environ.get("PRSERV_TEST_PG_BIN"):
        candidates.append(os.environ["PRSERV_TEST_PG_BIN"])
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for candidate in candidates:
        if os.path.exists(os.path.join(candidate, "postgres")):
            return candidate
    raise RuntimeError("no PostgreSQL for the tests: install the test extra (pgserver) or set "
                       "PRSERV_TEST_PG_BIN to a directory holding initdb and postgres")


def _demotion(directory: str):
    """A preexec_fn running PostgreSQL's programs as ``nobody`` when we are root."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(directory):
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    os.chmod(directory, 0o755)

    def demote() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return demote


async def schema_as_of(url: str, version: int) -> None:
    """Create prserv's PostgreSQL schema in the empty database ``url`` as a server of
    schema ``version`` made it: version 1's statements, then the upgrades to
    ``version`` (``schema.CREATE`` is version 1's statements followed by every upgrade's)."""
    import asyncpg  # type: ignore[import-not-found]

    from prserv.storage.postgresql import schema

    first = len(schema.CREATE) - sum(len(step) for step in schema.UPGRADES)
    statements = schema.CREATE[:first] + [statement for step in schema.UPGRADES[:version - 1]
                                          for statement in step]
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            for statement in statements:
                await connection.execute(statement)
            await connection.execute("INSERT INTO prserv_schema (version) VALUES ($1)", version)
            await connection.execute("INSERT INTO prserv_meta (name, value) VALUES ('identity', 'pg-as-of')")
    finally:
        await connection.close()
