"""The load generator as a separate process for the benchmarks: ``prbench.py`` (or
another with its command line and its one JSON result line), started and read
(standard library only).  A generator of its own keeps the load out of the
measuring script's interpreter and GIL."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

PRBENCH = Path(__file__).resolve().parent / "prbench.py"


class LoadFailed(RuntimeError):
    """The generator gave no result: it could not run, or ran past its time."""


@dataclass
class Finished:
    """A generator's exit status (prbench: 0 clean, 2 errors or duplicate values),
    its JSON result line and its standard error."""

    status: int
    result: Dict[str, Any]
    stderr: str


def command(address: str, mode: str, *args: str, loadgen: Path = PRBENCH) -> List[str]:
    """The command line of one run of ``loadgen`` against ``address`` (``HOST:PORT``,
    ``unix:///path``), with more of its options in ``args``."""
    return [sys.executable, str(loadgen), address, "--mode", mode, *args]


def start(argv: List[str]) -> "subprocess.Popen[str]":
    """Start a generator; several may run at once (``finish`` each)."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: "subprocess.Popen[str]", timeout: Optional[float]) -> Finished:
    """Wait for a generator and read its result (the last line it printed).
    LoadFailed with the end of its standard error if it ran past ``timeout`` seconds
    (it is killed), exited with a status other than 0 or 2, or printed no JSON line."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise LoadFailed("timed out after %.0f s" % timeout) from None
    lines = out.strip().splitlines()
    why = err.strip()[-500:] or "exit status %d" % process.returncode
    if process.returncode not in (0, 2) or not lines:
        raise LoadFailed(why)
    try:
        result = json.loads(lines[-1])
    except ValueError:
        raise LoadFailed("no result line (exit status %d): %s" % (process.returncode, why)) from None
    return Finished(process.returncode, result, err)


def run_generator(argv: List[str], timeout: Optional[float]) -> Finished:
    """``start`` and ``finish`` one generator."""
    return finish(start(argv), timeout)
