"""How much CPU a copy of the database claims beside a busy PR server."""

from __future__ import annotations

import os

from ..storage.sqlite.backup import Throttle

BACKUP_PRIORITIES = ("idle", "low", "normal")
"""``prserv backup --priority``: how much CPU the copy claims beside a busy server."""
LOW_NICENESS = 10
IDLE_FALLBACK_NICENESS = 19
IDLE_THROTTLE = Throttle(run=0.001, pause=0.003)
"""``--priority idle`` also keeps the copy and its check to a quarter of one core:
even a ``SCHED_IDLE`` neighbour slows a saturated server (shared caches, kernel work
that is not preempted), and the same work spread over a longer time stays out of
the get-pr latency (contrib/bench/README.md has the measurements)."""


def lower_priority(priority: str, blocks_writers: bool) -> str:
    """Lower this process's CPU priority for a copy; return what was applied.

    The copy is not urgent and the PR server's answers are: at equal priority, or
    even at niceness 10, a copy competes with the server for the CPU and its
    clients wait; ``SCHED_IDLE`` runs the process only on CPU time nothing else
    wants, and a waking task preempts it (see ``IDLE_THROTTLE`` for the rest).  The
    price is a longer copy when the machine is busy.

    A reader holding a rollback-journal database (not WAL) blocks every writer until
    it ends, so such a copy keeps its priority: the sooner it finishes the better.
    ``idle`` falls back to niceness 19 where ``SCHED_IDLE`` does not exist.
    """
    if priority == "normal" or blocks_writers:
        return "normal"
    if priority == "idle":
        if hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                return "idle"
            except OSError:                     # e.g. a seccomp policy: fall back to nice
                pass
        os.nice(IDLE_FALLBACK_NICENESS)
        return "niceness %d" % IDLE_FALLBACK_NICENESS
    os.nice(LOW_NICENESS)
    return "niceness %d" % LOW_NICENESS


def idle_process(pid: int) -> str:
    """Run process ``pid`` only on CPU time nothing else wants (``SCHED_IDLE``),
    else at niceness 19 where that policy is missing or refused; return which.
    (Threads the process starts afterwards inherit the policy.)"""
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except OSError:
            pass
    os.setpriority(os.PRIO_PROCESS, pid, IDLE_FALLBACK_NICENESS)
    return "niceness %d" % IDLE_FALLBACK_NICENESS
