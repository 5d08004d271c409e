"""Figures for the benchmarks: nearest-rank latency percentiles, and a process's CPU
time and memory read from ``/proc`` (Linux; standard library only)."""

from __future__ import annotations

import math
import os
from typing import Iterable, List, Mapping, Optional

TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- latencies

def percentile_ms(samples: Iterable[float], fraction: float) -> Optional[float]:
    """The nearest-rank percentile of ``samples`` (seconds) in milliseconds, rounded to
    the microsecond; ``fraction`` 0.5 is the median, 1.0 the maximum.  None without
    samples.  Sorted input costs one pass (Python's sort finds the run)."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(ordered[rank - 1] * 1e3, 3)


# --------------------------------------------------------------------------- CPU time

def cpu_ns(pid: int) -> Optional[int]:
    """CPU time (user + system) of process ``pid`` so far, in nanoseconds: the first
    field of ``/proc/<pid>/task/*/schedstat`` summed over its live threads.

    Nanoseconds, unlike the clock ticks of ``/proc/<pid>/stat``, which matters for
    runs of a fraction of a second.  Threads that have exited are not counted (the
    server's threads live as long as it does).  None if the process is gone.
    """
    total = 0
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as schedstat:
                total += int(schedstat.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass                                        # a thread gone meanwhile
    return total


def cpu_seconds(pid: int) -> Optional[float]:
    """``cpu_ns`` in seconds; None if the process is gone."""
    ns = cpu_ns(pid)
    return None if ns is None else ns / 1e9


def cpu_used(before: Optional[float], after: Optional[float]) -> Optional[float]:
    """Seconds between two ``cpu_seconds`` readings; None if either is unknown."""
    return None if before is None or after is None else after - before


def us_per(cpu_s: Optional[float], count: int) -> Optional[float]:
    """CPU seconds per one of ``count`` (requests, values) in µs, to one decimal;
    None if the CPU is unknown or there were none."""
    return round(cpu_s * 1e6 / count, 1) if cpu_s is not None and count else None


def answered(result: Mapping[str, object]) -> int:
    """The requests a server answered for one load generator ``result`` (prbench's JSON
    line): the timed ones and the priming, which falls inside the CPU readings too."""
    return int(result.get("requests") or 0) + int(result.get("primed") or 0)


def us_per_request(cpu_s: Optional[float], result: Mapping[str, object]) -> Optional[float]:
    """Server CPU per answered request of one load generator ``result``, in µs."""
    return us_per(cpu_s, answered(result))


def rounded(value: Optional[float], digits: int) -> Optional[float]:
    """``round`` that lets None (a figure not known) through."""
    return None if value is None else round(value, digits)


def _proc_stat(pid: int) -> List[str]:
    """Fields 3 onwards of /proc/PID/stat (fields[0] is the state, [1] the ppid)."""
    with open("/proc/%d/stat" % pid) as stat:
        return stat.read().rsplit(")", 1)[1].split()


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and its children, for a PostgreSQL cluster (its postmaster
    starts and reaps a backend per connection): the root's utime + stime + cutime +
    cstime (children it has reaped) and utime + stime of its live children, from
    ``/proc/<pid>/stat`` (clock ticks: for runs of seconds)."""
    fields = _proc_stat(root)
    total = sum(int(f) for f in fields[11:15])
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _proc_stat(int(name))
        except (OSError, IndexError):                   # gone meanwhile
            continue
        if fields[1] == str(root):
            total += int(fields[11]) + int(fields[12])
    return total / TICK


# --------------------------------------------------------------------------- memory

def status_kib(pid: int, field: str) -> Optional[int]:
    """A figure of ``/proc/<pid>/status`` in KiB (``VmRSS``, ``VmHWM``: the peak
    resident set); None if the process is gone or has no such field."""
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def mib(kib: Optional[int]) -> Optional[float]:
    """KiB in MiB to one decimal (None stays None)."""
    return None if kib is None else round(kib / 1024, 1)


def status_mib(pid: int, field: str) -> Optional[float]:
    """``status_kib`` in MiB to one decimal."""
    return mib(status_kib(pid, field))


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS, so that the next reading is the peak of what
    follows.  VmHWM is otherwise a process-lifetime peak.  Writing 5 to clear_refs
    (Linux >= 4.0) needs ptrace rights over the process; False when refused, and
    the next reading is then the peak since the process started."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False

