"""The PR server: bitbake's ``PRServer``, over any storage engine.

It owns the engine, the allocator (with its upstream pool, if chained) and the one
dump that may be in progress; each connection gets a ``PRServerClient``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

from .. import messages
from ..access import AccessRules
from ..asyncrpc import AsyncServer, loops, tls
from ..asyncrpc.connection import Connection
from ..asyncrpc.limits import Limits
from ..errors import BackupError, ConfigError
from ..log import logger
from ..storage import open_engine
from ..storage.engine import Engine
from ..storage.postgresql.url import is_url, masked
from ..storage.syncmode import IMMEDIATE, SyncMode, parse_sync_mode
from . import metrics as metrics_module
from . import mirror as mirror_module
from . import web
from .allocator import Allocator
from .dump import DumpStream
from .session import TOKEN_FOR_DUMP, TOKEN_FOR_MIRROR, PRServerClient
from .upstream import DEFAULT_TIMEOUT as DEFAULT_UPSTREAM_TIMEOUT
from .upstream import Upstream


def check_mirror_and_upstream(mirror: Optional[str], upstream: Optional[str],
                              sources: Optional[Mapping[str, str]] = None) -> None:
    """A mirror has no upstream: it copies its source's values (``ConfigError``).
    ``sources``: where each setting came from, by name (``"flag --mirror"``), for the
    message."""
    if mirror and upstream:
        if sources:
            raise ConfigError("mirror (from %s) and upstream (from %s) cannot be combined: a mirror "
                              "copies its source's values" % (sources["mirror"], sources["upstream"]))
        raise ConfigError("a mirror has no upstream: it copies %s's values" % mirror)


class PRServer(AsyncServer):
    """bitbake's ``PRServer``: a database, optionally read-only, optionally chained."""

    def __init__(self, dbfile: str, read_only: bool = False, upstream: Optional[str] = None,
                 upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
                 sync_mode: Union[str, SyncMode] = IMMEDIATE, limits: Optional[Limits] = None,
                 cache_size: Optional[int] = None, mirror: Optional[str] = None,
                 mirror_timeout: float = mirror_module.DEFAULT_TIMEOUT,
                 mirror_audit_interval: float = mirror_module.DEFAULT_AUDIT_INTERVAL,
                 postgresql: Optional[Dict[str, Any]] = None, access: Optional[AccessRules] = None,
                 require_token: Iterable[str] = (),
                 upstream_credentials: Optional[Tuple[str, str]] = None,
                 mirror_credentials: Optional[Tuple[str, str]] = None,
                 tls_certificate: Optional[str] = None, tls_key: Optional[str] = None,
                 tls_ca: Optional[str] = None, metrics: Optional[str] = None,
                 event_loop: str = loops.AUTO, http: Optional[str] = None,
                 record_clients: bool = True, shown_as: Optional[Dict[str, Any]] = None) -> None:
        """``cache_size``: bytes of package and checksum facts kept in memory (the
        engine's default when None).  ``mirror``: the address of a server to follow
        (``server.mirror``); the server is then read-only and has no upstream.
        ``dbfile`` may be a ``postgresql://`` URL (``postgresql``: the engine's pool_size,
        connect_timeout, lock_timeout, outage_wait).  ``access``: who may connect and who may write
        (``prserv.access``; everyone when None).  ``require_token``: what anonymous
        clients may not do (``"mirror"``: the change feed, ``"dump-db"``).
        ``upstream_credentials`` / ``mirror_credentials``: (user, token) this server
        proves to its upstream / its mirror source.  ``tls_certificate`` / ``tls_key``:
        what ``wss://`` listeners present; ``tls_ca``: the CA bundle a ``wss://``
        upstream or mirror source is checked against (default: the system's).
        ``metrics``: ``HOST:PORT`` to serve Prometheus metrics on (``server.metrics``).
        ``event_loop``: ``auto`` (uvloop when installed), ``asyncio`` or ``uvloop``, for
        ``serve_forever`` and ``serve_as_process``.  ``http``: ``HOST:PORT`` (or
        ``http://HOST:PORT``, or ``https://HOST:PORT`` with ``tls_certificate``) of an
        HTTP listener answering ``server.web``'s routes.  ``record_clients``: the record
        of when each value was given also names the address and user it was given to.
        ``shown_as``: the role, upstream and mirror source the HTTP status shows instead
        of this server's (a read-only server serving another's pages: ``runtime.webprocess``)."""
        super().__init__(logger, limits)
        if access is not None:
            self.access = access
        unknown = set(require_token) - {TOKEN_FOR_MIRROR, TOKEN_FOR_DUMP}
        if unknown:
            raise ConfigError("require_token: unknown %s (known: %s, %s)"
                              % (", ".join(sorted(unknown)), TOKEN_FOR_MIRROR, TOKEN_FOR_DUMP))
        self.require_token = frozenset(require_token)
        self.upstream_credentials = upstream_credentials
        self.mirror_credentials = mirror_credentials
        try:
            if tls_certificate:
                self.tls_context = tls.server_context(tls_certificate, tls_key)
            self.client_tls = tls.client_context(tls_ca) if upstream or mirror or tls_ca else None
            """Checks the certificate of a ``wss://`` upstream or mirror source (made only
            where there is one: loading the system's CAs takes ~25 ms of every start)."""
        except tls.TLSConfigError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.event_loop = loops.resolve(event_loop)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.metrics = metrics_module.endpoint(metrics) if metrics else None
            """(host, port) of the Prometheus endpoint, if any."""
        except ValueError as exc:
            raise ConfigError("metrics %r: %s" % (metrics, exc)) from None
        self.exporter: Optional[metrics_module.Exporter] = None
        self.shown_as = shown_as
        if http:
            try:
                self.start_http_server(*web.endpoint(http), web.WebRoutes(self), tls=web.uses_tls(http))
            except ValueError as exc:
                raise ConfigError("http %r: %s" % (http, exc)) from None
        check_mirror_and_upstream(mirror, upstream)
        self.dbfile = dbfile if is_url(dbfile) else os.path.abspath(dbfile)
        self.shown_database = masked(dbfile) if is_url(dbfile) else self.dbfile
        """The database as logs may show it (a URL without its password)."""
        self.postgresql = postgresql
        self.record_clients = record_clients
        self.mirror = mirror or None
        self.mirror_timeout = mirror_timeout
        self.mirror_audit_interval = mirror_audit_interval
        self.follower: Optional[mirror_module.Follower] = None
        self._follow_task: Optional["asyncio.Task[None]"] = None
        self.catching_up: Optional[Callable[[], str]] = None
        """While a mirror's first copy is incomplete: why requests are refused."""
        self._stopping: Optional[asyncio.Event] = None
        read_only = read_only or bool(self.mirror)
        self.read_only = read_only
        self.upstream = upstream or None
        self.upstream_timeout = upstream_timeout
        self.sync_mode = sync_mode if isinstance(sync_mode, SyncMode) else parse_sync_mode(sync_mode)
        self.cache_size = cache_size
        self.engine: Optional[Engine] = None
        self.allocator: Optional[Allocator] = None
        self.dump: Optional[DumpStream] = None
        """The dump being sent (one at a time: a second request is refused)."""
        self._dump_session: Optional[PRServerClient] = None

    def accept_client(self, connection: Connection) -> PRServerClient:
        return PRServerClient(connection, self)

    # -- dumps
    def start_dump(self, session: PRServerClient) -> DumpStream:
        """Begin a dump for ``session`` from a snapshot taken now (in a buffered sync
        mode this commits and pauses for a copy)."""
        if self.dump is not None:
            raise BackupError("a dump is already in progress; try again when it has finished")
        self.dump = DumpStream(self.engine.open_dump(), session.logger, self._dump_ended, session.abort)
        self._dump_session = session
        return self.dump

    def _dump_ended(self, dump: DumpStream) -> None:
        if self.dump is dump:
            self.dump, self._dump_session = None, None

    def end_dump(self, session: Optional[PRServerClient] = None) -> None:
        """Stop the dump in progress (only if ``session`` sends it, when given)."""
        if self.dump is not None and (session is None or session is self._dump_session):
            self.dump.close()

    # -- the change feed
    async def wait_for_changes(self, since: Optional[str], timeout: float) -> bool:
        """``engine.wait_for_changes``, ended at once (False) when the server stops."""
        if self._stopping is None or self._stopping.is_set():
            return False
        changed = asyncio.ensure_future(self.engine.wait_for_changes(since, timeout))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((changed, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not changed.done():
                changed.cancel()
        return changed.done() and not changed.cancelled() and changed.result()

    def mirror_status(self) -> Optional[Dict[str, Any]]:
        """The mirror's state (None: this server is not a mirror)."""
        return None if self.follower is None else self.follower.status()

    # -- stats
    def stats_answer(self, figures: bool = False) -> Dict[str, Any]:
        """The ``get-stats`` answer (docs/protocol.md §5.5); ``figures``: with what
        ``/metrics`` show (``metrics.figures``: the HTTP child shows them)."""
        upstream = self.allocator.upstream if self.allocator is not None else None
        return messages.stats_answer(
            self.stats.requests(), self.stats.by_command(), len(self.sessions),
            self.allocator.allocations if self.allocator is not None else 0,
            None if upstream is None else dict(upstream.outcomes, address=upstream.address, down=upstream.is_down),
            self.mirror_status(), metrics_module.figures(self) if figures else None)

    def _first_copy_complete(self) -> None:
        self.catching_up = None
        self.logger.info("mirror: first copy of %s complete; answering requests", self.mirror)

    # -- lifecycle
    async def open_resources(self) -> None:
        self._stopping = asyncio.Event()
        self.engine = await open_engine(self.dbfile, read_only=self.read_only and not self.mirror,
                                  sync_mode=self.sync_mode, cache_size=self.cache_size,
                                  mirror=bool(self.mirror), postgresql=self.postgresql)
        upstream = Upstream(self.upstream, self.upstream_timeout, credentials=self.upstream_credentials,
                            tls_context=self.client_tls) if self.upstream else None
        self.allocator = Allocator(self.engine, upstream)
        if self.mirror:
            self._start_following()

    def _start_following(self) -> None:
        self.follower = mirror_module.Follower(self.mirror, self.engine, self.logger,  # type: ignore[arg-type]
                                               self.mirror_timeout, self.mirror_audit_interval,
                                               credentials=self.mirror_credentials, tls_context=self.client_tls)
        if not self.follower.complete:
            self.catching_up = self.follower.catching_up
        self._follow_task = asyncio.get_running_loop().create_task(
            self.follower.run(on_complete=self._first_copy_complete))

    def begin_stopping(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def start_serving(self) -> str:
        address = await super().start_serving()
        if self.shown_as is not None:           # the server that started it logs the rest
            self.logger.info("HTTP process (PID %d) of the server with PID %d, reading %s", os.getpid(),
                             os.getppid(), self.shown_database)
        else:
            self._log_started()
            if not self.access.open_to_all:
                self.logger.info("access rules: %s", self.access.describe())
            for http_address in self.http_addresses:
                self.logger.info("HTTP listener on %s", http_address)
        if self.metrics:
            self.exporter = metrics_module.Exporter(self, *self.metrics)
            self.logger.info("Prometheus metrics on %s", self.exporter.url)
        return address

    def _log_started(self) -> None:
        self.logger.info("Started PRServer with DBfile: %s, Address: %s, PID: %s%s%s%s",
                         self.shown_database, ", ".join(self.addresses), os.getpid(),
                         " (read-only)" if self.read_only else
                         ", PostgreSQL's durability" if is_url(self.dbfile) else ", sync mode %s" % self.sync_mode,
                         ", upstream: %s" % self.upstream if self.upstream else
                         ", mirror of: %s" % self.mirror if self.mirror else "",
                         ", uvloop" if _running_uvloop() else "")

    async def close_resources(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        self.end_dump()
        if self._follow_task is not None:
            self._follow_task.cancel()
            await asyncio.gather(self._follow_task, return_exceptions=True)
            self._follow_task = None
        if self.allocator is not None:
            await self.allocator.close()
            self.allocator = None
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        self.logger.info("PRServer stopped (%s)", self.shown_database)


def _running_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")
