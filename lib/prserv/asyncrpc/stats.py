"""What a server has answered: counts and times of its requests, kept cheaply.

Every answered request is recorded once (``record``): its command's wire name,
whether it was answered normally or with an error, and how long it took from being
read to its answer being ready.  That is a dictionary lookup, a bisection and a few
additions, so the figures can always be on: ``get-stats`` answers them in bitbake
hashserv's shape, and a Prometheus exporter reads the same numbers when it is
scraped (the hot path never calls into a metrics library).

Times are seconds.  The standard deviation comes from the sum of squares: request
times are far from their mean's 1e8 multiples, so double precision keeps it to
several digits, and a request pays two additions instead of a division.
"""

from __future__ import annotations

import bisect
import math
from typing import Dict, List, Tuple

DURATION_BUCKETS: Tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the request-duration histogram, 100 µs to 10 s (and +Inf)."""

OK, ERROR = "ok", "error"
_bucket = bisect.bisect_left


class Durations:
    """A histogram of durations (``DURATION_BUCKETS``): count, sum, sum of squares,
    the longest, per-bucket counts."""

    __slots__ = ("count", "total", "squares", "longest", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.squares = 0.0
        self.longest = 0.0
        self.buckets: List[int] = [0] * (len(DURATION_BUCKETS) + 1)   # the last one: +Inf

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.squares += seconds * seconds
        if seconds > self.longest:
            self.longest = seconds
        self.buckets[_bucket(DURATION_BUCKETS, seconds)] += 1


class CommandFigures(Durations):
    """One command's answers: their durations and counts by outcome."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        super().__init__()
        self.error = 0

    @property
    def ok(self) -> int:
        return self.count - self.error


class RequestStats:
    """Every request answered since the start or the last ``reset``: figures per
    command only (a request updates one ``CommandFigures``), the totals summed when
    asked for."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.commands: Dict[str, CommandFigures] = {}

    def record(self, command: str, seconds: float, ok: bool = True) -> None:
        figures = self.commands.get(command)
        if figures is None:
            figures = self.commands[command] = CommandFigures()
        figures.observe(seconds)
        if not ok:
            figures.error += 1

    def requests(self) -> Dict[str, float]:
        """hashserv's ``requests`` object: num, total_time, max_time, average, stdev."""
        every = list(self.commands.values())
        num = sum(figures.count for figures in every)
        total = sum(figures.total for figures in every)
        squares = sum(figures.squares for figures in every)
        mean = total / num if num else 0.0
        variance = (squares - num * mean * mean) / (num - 1) if num > 1 else 0.0
        longest = max((figures.longest for figures in every), default=0.0)
        return {"num": num, "total_time": total, "max_time": longest, "average": mean,
                "stdev": math.sqrt(max(variance, 0.0))}

    def by_command(self) -> Dict[str, Dict[str, int]]:
        """``{command: {"ok": n, "error": n}}``."""
        return {name: {OK: figures.ok, ERROR: figures.error} for name, figures in sorted(self.commands.items())}
