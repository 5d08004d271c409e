"""Server processes for tests: ``bin/bitbake-prserv -F`` started and read from outside."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import threading
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin", "bitbake-prserv")


def start_process(tmp_path, *flags: str, db: str = "pr.sqlite3", open_files: Optional[int] = None,
                  env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.Popen, str, List[str]]:
    """A foreground server process, its first address, and its stderr lines so far
    (a thread keeps reading them: a full pipe would block the server's logging).
    ``open_files``: its open-file limit, soft and hard; ``env``: variables added."""
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("PRSERV_")}, **(env or {}))

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    process = subprocess.Popen([sys.executable, BIN, "-F", "-f", str(tmp_path / db),
                                "--bind", "127.0.0.1:0", *flags],
                               stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limit_open_files)
    lines: List[str] = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("prserv ") and " serving " in line:      # the ready line, not a log record
            threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
            return process, line.split(" on ", 1)[1].split()[0].rstrip(","), lines
    process.wait(10)
    raise AssertionError("server did not start (exit %s): %s" % (process.returncode, "".join(lines)))


@contextlib.contextmanager
def running(tmp_path, *flags: str, **options) -> Iterator[Tuple[subprocess.Popen, str, List[str]]]:
    """``start_process``'s server for the block, terminated and waited for after it
    (unless the block ended it)."""
    process, address, lines = start_process(tmp_path, *flags, **options)
    try:
        yield process, address, lines
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(30)


def status_kib(pid: int, field: str) -> int:
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s" % field)


def run_without_extras(cwd, *flags: str) -> subprocess.CompletedProcess:
    """``bin/bitbake-prserv FLAGS`` with ``python -S``: this tree's ``lib`` only, none of
    the optional extras installed (how a flag needing one fails)."""
    return subprocess.run([sys.executable, "-S", BIN, *flags], capture_output=True, text=True,
                          env={"PYTHONPATH": os.path.join(ROOT, "lib")}, cwd=str(cwd), timeout=60)
