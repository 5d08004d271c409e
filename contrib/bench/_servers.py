"""Server processes for the benchmarks: ``bitbake-prserv -F`` of a checkout, started
and stopped from outside (standard library only, shared by mirror.py and shareddb.py)."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Deque, List, Optional, Tuple


class ServerProcess:
    """A server process that says ``... serving ... on HOST:PORT`` on standard error
    once it listens; that stream is read by a thread (the last lines kept for error
    messages, lines counted) so a full pipe never blocks it."""

    started: List["ServerProcess"] = []

    def __init__(self, command: List[str], name: str) -> None:
        self.name = name
        self.address: Optional[Tuple[str, int]] = None
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
            if self.address is None and " serving " in line:
                host, port = line.split(" on ", 1)[1].split()[0].rstrip(",").rsplit(":", 1)
                self.address = (host, int(port))
                self.ready.set()
            elif self.address is not None:
                self.lines += 1
        self.ready.set()                                    # exited

    def wait_ready(self, timeout: float = 60.0) -> Tuple[str, int]:
        self.ready.wait(timeout)
        if self.address is None:
            raise RuntimeError("%s did not start (exit status %s); its last lines:\n  %s"
                               % (self.name, self.process.poll(), "\n  ".join(self.tail) or "(none)"))
        return self.address

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


class Server(ServerProcess):
    """``bitbake-prserv -F`` of the checkout ``tree`` on ``db``, logging warnings only."""

    def __init__(self, tree: Path, db: str, name: str, *flags: str) -> None:
        super().__init__([sys.executable, str(tree / "bin" / "bitbake-prserv"), "-F", "-f", db,
                          "--bind", "127.0.0.1:0", "--loglevel", "WARNING", *flags], name)


def stop_all() -> None:
    for server in list(ServerProcess.started):
        try:
            server.stop()
        except Exception as exc:                          # keep stopping the others
            print("could not stop %s (pid %d): %s" % (server.name, server.pid, exc), file=sys.stderr)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of process ``pid`` so far, in nanoseconds
    (``/proc/<pid>/task/*/schedstat``, first field)."""
    import glob
    total = 0
    for path in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass                                # a thread gone meanwhile
    return total
