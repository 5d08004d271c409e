"""Prometheus metrics at ``/metrics`` (``--metrics HOST:PORT``), with ``prometheus_client``.

Requests are counted by the server anyway (``asyncrpc.stats``, for ``get-stats``);
this module only reads those figures when Prometheus scrapes, so a request costs
nothing more with metrics on.  The exporter is ``prometheus_client``'s own HTTP
server, in a thread of its own: what it reads must be safe from another thread, so
it copies the event loop's counters (a dictionary copy is atomic under the GIL) and
touches no database connection (the WAL's size is a ``stat``).

``prometheus_client`` is an optional extra (``pip install 'prserv[metrics]'``),
imported only when metrics are asked for: bitbake's copy of ``lib/prserv`` never
needs it.

Metrics (README lists them with their meaning):

* ``prserv_requests_total{command,outcome}``, ``prserv_request_duration_seconds{command}``
* ``prserv_connections_active``, ``prserv_allocations_total``
* ``prserv_upstream_requests_total{outcome}`` (chained servers)
* ``prserv_commit_duration_seconds``, ``prserv_wal_bytes`` (SQLite)
* ``prserv_mirror_lag_rows``, ``prserv_mirror_lag_seconds``, ``prserv_mirror_diverged`` (mirrors)
* ``prserv_build_info{version,package_version}``
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple

from ..asyncrpc.address import parse_tcp_address
from ..asyncrpc.stats import DURATION_BUCKETS, ERROR, OK, Durations, RequestStats
from ..errors import ConfigError
from ..version import __version__
from .mirror import DIVERGED

EXTRA = "metrics"


def available() -> bool:
    """Whether ``prometheus_client`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("prometheus_client") is not None


def endpoint(address: str) -> Tuple[str, int]:
    """(host, port) to serve ``/metrics`` on, from ``HOST:PORT``; ``ValueError`` saying
    what is wrong (not such an address, or ``prometheus_client`` not installed)."""
    endpoint = parse_tcp_address(address, "expected HOST:PORT")     # an AddressError is a ValueError
    if not available():
        raise ValueError("metrics need prometheus_client: pip install 'prserv[%s]'" % EXTRA)
    return endpoint


class Observed(Protocol):
    """What the exporter reads of a server (``PRServer``)."""

    stats: RequestStats
    sessions: Any
    allocator: Any
    engine: Any
    follower: Any


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:                 # pragma: no cover - Python < 3.8
        return "unknown"
    try:
        return version("prserv")
    except PackageNotFoundError:
        return "unknown"                # lib/prserv copied into bitbake's tree


def _buckets(counts: List[int]) -> List[Tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, +Inf last, as Prometheus histograms need."""
    pairs, running = [], 0
    for bound, count in zip(list(DURATION_BUCKETS) + [float("inf")], counts):
        running += count
        pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return pairs


def figures(server: Observed) -> Dict[str, Any]:
    """What a scrape shows of ``server``, as plain JSON-able data: read now from the
    event loop's counters (copies, safe from the exporter's thread).  ``get-stats``
    carries it to the server's HTTP child (``{"figures": true}``), whose ``/metrics``
    then show this server (``combined``)."""
    commands = {name: {OK: figures.ok, ERROR: figures.error, "buckets": list(figures.buckets),
                       "sum": figures.total}
                for name, figures in sorted(dict(server.stats.commands).items())}
    allocator = server.allocator
    upstream = allocator.upstream if allocator is not None else None
    engine = server.engine
    commits: Optional[Durations] = engine.commit_durations if engine is not None else None
    follower = server.follower
    mirror = None
    if follower is not None:
        contact = follower.last_contact
        mirror = {"rows_behind": follower.behind, "diverged": follower.state == DIVERGED,
                  "seconds_since_contact": None if contact is None else time.monotonic() - contact}
    return {
        "commands": commands, "connections": len(server.sessions),
        "allocations": allocator.allocations if allocator is not None else 0,
        "upstream": None if upstream is None else {
            outcome: dict(upstream.outcomes).get(outcome, 0) for outcome in (OK, ERROR)},
        "commits": None if commits is None else {"buckets": list(commits.buckets), "sum": commits.total},
        "wal_bytes": engine.wal_bytes() if engine is not None else None,
        "mirror": mirror,
    }


def checked_figures(value: Any) -> Dict[str, Any]:
    """``figures`` as another process sent them; ``ValueError`` if they are not."""
    buckets = len(DURATION_BUCKETS) + 1

    def histogram(item: Any) -> bool:
        return isinstance(item, dict) and isinstance(item.get("sum"), (int, float)) and \
            isinstance(item.get("buckets"), list) and len(item["buckets"]) == buckets and \
            all(isinstance(count, int) for count in item["buckets"])

    def count(item: Any) -> bool:
        return isinstance(item, int) and not isinstance(item, bool)

    if not (isinstance(value, dict) and isinstance(value.get("commands"), dict)
            and all(histogram(item) and count(item.get(OK)) and count(item.get(ERROR))
                    for item in value["commands"].values())
            and count(value.get("connections")) and count(value.get("allocations"))
            and (value.get("upstream") is None or isinstance(value["upstream"], dict)
                 and all(count(value["upstream"].get(outcome)) for outcome in (OK, ERROR)))
            and (value.get("commits") is None or histogram(value["commits"]))
            and (value.get("wal_bytes") is None or count(value["wal_bytes"]))
            and (value.get("mirror") is None or isinstance(value["mirror"], dict))):
        raise ValueError("malformed figures: %.200r" % (value,))
    return value


def combined(server: Dict[str, Any], http: Dict[str, Any]) -> Dict[str, Any]:
    """A server's ``figures`` with those of its HTTP child (``http``) added: the
    child's HTTP requests (``http GET``...) and connections."""
    commands = dict(server["commands"])
    commands.update({name: item for name, item in http["commands"].items() if name not in commands})
    return dict(server, commands=commands, connections=server["connections"] + http["connections"])


class Collector:
    """Builds every metric family from a server's ``figures`` at scrape time."""

    def __init__(self, read: Callable[[], Dict[str, Any]]) -> None:
        """``read()``: the figures to show (``figures`` of a server, usually)."""
        self.read = read
        self.package_version = _package_version()

    def describe(self) -> List[Any]:
        return []                       # families are made per scrape (label values vary)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                            InfoMetricFamily)
        shown = self.read()
        requests = CounterMetricFamily("prserv_requests", "Requests answered, by wire command and outcome.",
                                       labels=["command", "outcome"])
        durations = HistogramMetricFamily("prserv_request_duration_seconds",
                                          "Seconds from a request read to its answer made.", labels=["command"])
        for name, item in sorted(shown["commands"].items()):
            requests.add_metric([name, OK], item[OK])
            requests.add_metric([name, ERROR], item[ERROR])
            durations.add_metric([name], _buckets(item["buckets"]), item["sum"])
        yield requests
        yield durations
        yield GaugeMetricFamily("prserv_connections_active", "Client connections open.",
                                value=shown["connections"])
        yield CounterMetricFamily("prserv_allocations", "Values get-pr stored (new checksums and bumps).",
                                  value=shown["allocations"])
        if shown["upstream"] is not None:
            family = CounterMetricFamily("prserv_upstream_requests", "Requests sent to the upstream, by outcome.",
                                         labels=["outcome"])
            for outcome in (OK, ERROR):
                family.add_metric([outcome], shown["upstream"][outcome])
            yield family
        commits = shown["commits"]
        if commits is not None:
            yield HistogramMetricFamily("prserv_commit_duration_seconds", "Seconds a database commit took.",
                                        buckets=_buckets(commits["buckets"]), sum_value=commits["sum"])
        if shown["wal_bytes"] is not None:
            yield GaugeMetricFamily("prserv_wal_bytes", "Bytes in the SQLite write-ahead log.",
                                    value=shown["wal_bytes"])
        if shown["mirror"] is not None:
            yield from self._mirror(shown["mirror"], GaugeMetricFamily)
        info = InfoMetricFamily("prserv_build", "The server's version.")
        info.add_metric([], {"version": __version__, "package_version": self.package_version})
        yield info

    def _mirror(self, mirror: Dict[str, Any], gauge: Any) -> Iterator[Any]:
        behind, contact = mirror.get("rows_behind"), mirror.get("seconds_since_contact")
        yield gauge("prserv_mirror_lag_rows", "Rows the source holds that this mirror has not copied yet "
                    "(-1 until known).", value=-1 if behind is None else behind)
        yield gauge("prserv_mirror_lag_seconds", "Seconds since the mirror last heard from its source "
                    "(-1 before the first contact).", value=-1 if contact is None else contact)
        yield gauge("prserv_mirror_diverged", "1 when the source no longer holds the history this mirror "
                    "copied (the mirror stopped applying changes).", value=1 if mirror.get("diverged") else 0)


def registry_of(server: Observed) -> Any:
    """A ``prometheus_client`` registry holding this server's metrics: what
    ``--metrics`` serves, and the HTTP listener's ``/metrics``."""
    return registry_reading(lambda: figures(server))


def registry_reading(read: Callable[[], Dict[str, Any]]) -> Any:
    """A ``prometheus_client`` registry showing the figures ``read()`` gives."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(read))          # type: ignore[arg-type]
    return registry


def exposition(registry: Any) -> Tuple[str, bytes]:
    """(content type, body) of the registry's metrics in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return CONTENT_TYPE_LATEST, generate_latest(registry)


class Exporter:
    """``/metrics`` over HTTP for one server, until ``stop``."""

    def __init__(self, server: Observed, host: str, port: int) -> None:
        """``prometheus_client`` must be importable (``available``)."""
        from prometheus_client import start_http_server

        self.registry = registry_of(server)
        try:
            started = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError("cannot serve metrics on %s:%d: %s" % (host, port, exc.strerror or exc)) from None
        self._http: Optional[Any] = started[0] if isinstance(started, tuple) else None
        self.port = self._http.server_port if self._http is not None else port
        self.host = host

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d/metrics" % (host, self.port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
