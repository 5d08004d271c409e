"""Server processes for the benchmarks: ``bitbake-prserv -F`` of a checkout (or any
command that logs the same "serving" line), started and stopped from outside, and
where on the machine a process runs (standard library only)."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Deque, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
"""This checkout: its ``bin/bitbake-prserv`` is the server measured by default."""


def pinned(cpu: int, command: List[str]) -> List[str]:
    """``command`` run on CPU ``cpu`` alone, with ``taskset`` if it is on PATH (so that
    a server and its load generator do not take each other's core)."""
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") else []) + command


class ServerProcess:
    """A server process that says ``... serving ... on ADDRESS`` on standard error
    once it listens; that stream is read by a thread (the last lines kept for error
    messages, lines counted) so a full pipe never blocks it."""

    started: List["ServerProcess"] = []

    def __init__(self, command: List[str], name: str) -> None:
        self.name = name
        self.text: Optional[str] = None
        """The address as the server logged it: ``HOST:PORT`` or ``unix:///path``."""
        self.address: Optional[Tuple[str, int]] = None
        """(host, port) of a TCP address."""
        self.ready_s: Optional[float] = None
        """Seconds from starting the process to its "serving" line."""
        self.tail: Deque[str] = collections.deque(maxlen=20)
        self.lines = 0                                  # after the "serving" line
        self.ready = threading.Event()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        ServerProcess.started.append(self)
        self.pid = self.process.pid
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.tail.append(line.rstrip("\n"))
            if self.text is None and " serving " in line:
                self.ready_s = time.monotonic() - self.started_at
                text = line.split(" on ", 1)[1].split()[0].rstrip(",")
                if not text.startswith("unix://"):
                    host, port = text.rsplit(":", 1)
                    self.address = (host.strip("[]"), int(port))
                self.text = text
                self.ready.set()
            elif self.text is not None:
                self.lines += 1
        self.ready.set()                                    # exited

    def wait_ready(self, timeout: float = 60.0) -> Tuple[str, int]:
        """The (host, port) the server listens on, once it does (its ``text`` for a
        unix socket: see ``wait_serving``); RuntimeError with its last lines if it
        exited or said nothing for ``timeout`` seconds."""
        text = self.wait_serving(timeout)
        if self.address is None:
            raise RuntimeError("%s serves %s, not a TCP address" % (self.name, text))
        return self.address

    def wait_serving(self, timeout: float = 60.0) -> str:
        """The address as logged, once the server listens (see ``wait_ready``)."""
        self.ready.wait(timeout)
        if self.text is None:
            raise RuntimeError("%s did not start (exit status %s); its last lines:\n  %s"
                               % (self.name, self.process.poll(), "\n  ".join(self.tail) or "(none)"))
        return self.text

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        if self in ServerProcess.started:
            ServerProcess.started.remove(self)


def server_command(tree: Path, db: str, *flags: str, bind: str = "127.0.0.1:0",
                   loglevel: Optional[str] = "WARNING") -> List[str]:
    """``bitbake-prserv -F`` of the checkout ``tree`` on ``db`` (a file or a
    PostgreSQL URL), listening on ``bind``; ``loglevel`` None keeps its default (INFO:
    a line per connection)."""
    command = [sys.executable, str(tree / "bin" / "bitbake-prserv"), "-F", "-f", db, "--bind", bind]
    return command + (["--loglevel", loglevel] if loglevel else []) + list(flags)


class Server(ServerProcess):
    """``bitbake-prserv -F`` of the checkout ``tree`` on ``db`` (``server_command``),
    on ``cpu`` alone if given (``pinned``)."""

    def __init__(self, tree: Path, db: str, name: str, *flags: str, bind: str = "127.0.0.1:0",
                 loglevel: Optional[str] = "WARNING", cpu: Optional[int] = None) -> None:
        command = server_command(tree, db, *flags, bind=bind, loglevel=loglevel)
        super().__init__(command if cpu is None else pinned(cpu, command), name)


def stop_all() -> None:
    for server in list(ServerProcess.started):
        try:
            server.stop()
        except Exception as exc:                          # keep stopping the others
            print("could not stop %s (pid %d): %s" % (server.name, server.pid, exc), file=sys.stderr)
