"""The upstream PR server as a source of facts, over a small reused connection pool.

Answers are validated (a malformed value is an ``UpstreamError``, never stored),
every query is bounded in time, and after a transport failure the upstream is
considered down for ``retry_interval`` seconds: requests answerable from local
state do not wait on it, the others fail fast, and the next query after the
interval tries again (service resumes by itself).

An outage is logged once when it starts (again at most once a minute while it
lasts) and once when an answer ends it, through the pool's ``OutageLog``: its
connections report nothing themselves, so a pool of four does not log four times.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, List, Optional, Tuple

from .. import messages
from ..asyncrpc import AsyncRPCError, InvokeError
from ..asyncrpc.deadline import within
from ..asyncrpc.outage import OutageLog
from ..client import PRAsyncClient
from ..errors import AuthenticationError, UpstreamError
from ..log import logger
from ..revision import RevisionKey, is_revision, revision_key

DEFAULT_TIMEOUT = 10.0
DEFAULT_POOL_SIZE = 4
DEFAULT_RETRY_INTERVAL = 1.0


class Upstream:
    """``max_package_pr`` / ``test_package`` / ``test_pr`` of one upstream server."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT,
                 pool_size: int = DEFAULT_POOL_SIZE,
                 retry_interval: float = DEFAULT_RETRY_INTERVAL,
                 credentials: Optional[Tuple[str, str]] = None, tls_context: Any = None) -> None:
        """``credentials``: (user, token) proved on every connection of the pool;
        ``tls_context``: checks a ``wss://`` upstream's certificate."""
        self.address = address
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._clients: List[PRAsyncClient] = []
        self._idle: "asyncio.Queue[PRAsyncClient]" = asyncio.Queue()
        self._down_until = 0.0
        self._last_failure = ""
        self.outages = OutageLog(logger, "upstream", "; retrying every %g s" % retry_interval)
        self.outcomes = {"ok": 0, "error": 0}
        """Requests sent upstream, by how they ended."""
        for _ in range(max(1, pool_size)):
            client = PRAsyncClient(timeout=timeout, credentials=credentials, tls_context=tls_context,
                                   outages=None)
            self._clients.append(client)
            self._idle.put_nowait(client)
        self._configured = False

    async def _configure(self) -> None:
        if not self._configured:
            for client in self._clients:
                await client.connect_address(self.address)
            self._configured = True

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    async def _invoke(self, request: dict) -> object:
        """One request, bounded by ``timeout`` including the wait for a free connection;
        counted in ``outcomes`` (a request refused while the upstream is marked down
        counts as an error too)."""
        try:
            self._check_up()
            answer = await within(self._invoke_pooled(request), self.timeout)
        except asyncio.TimeoutError:
            self.outcomes["error"] += 1
            reason = "no answer within %g s" % self.timeout
            self._mark_down(reason)
            raise UpstreamError("upstream %s unavailable: %s" % (self.address, reason)) from None
        except UpstreamError:
            self.outcomes["error"] += 1
            raise
        self.outcomes["ok"] += 1
        self.outages.recovered(self.address)
        return answer

    def _check_up(self) -> None:
        if self.is_down:
            raise UpstreamError("upstream %s unavailable: %s" % (self.address, self._last_failure))

    async def _invoke_pooled(self, request: dict) -> object:
        await self._configure()
        client = await self._idle.get()
        try:
            self._check_up()
            return await client.invoke(request)
        except InvokeError as exc:
            self.outages.recovered(self.address)        # it answered: it is up
            raise UpstreamError("upstream %s refused the request: %s" % (self.address, exc)) from exc
        except (OSError, ConnectionError, AsyncRPCError, AuthenticationError) as exc:
            reason = "%s: %s" % (type(exc).__name__, exc)
            self._mark_down(reason)
            raise UpstreamError("upstream %s unavailable: %s" % (self.address, reason)) from exc
        except asyncio.CancelledError:
            # Timed out mid-request: the connection's state is unknown, drop it.
            await asyncio.shield(client.disconnect())
            raise
        finally:
            self._idle.put_nowait(client)

    def _mark_down(self, reason: str) -> None:
        self._last_failure = reason
        self._down_until = time.monotonic() + self.retry_interval
        self.outages.failed(self.address, reason)

    def _field(self, command: str, response: object, field: str) -> object:
        if not isinstance(response, dict) or field not in response:
            raise UpstreamError("upstream %s answered %s with a malformed message: %.200r"
                                % (self.address, command, response))
        return response[field]

    def _revision(self, command: str, value: object) -> Optional[RevisionKey]:
        if value is None:
            return None
        if not is_revision(value):
            raise UpstreamError("upstream %s answered %s with a value that is not a revision: %.100r"
                                % (self.address, command, value))
        return revision_key(value)  # type: ignore[arg-type]

    async def max_package_pr(self, version: str, pkgarch: str) -> Optional[RevisionKey]:
        response = await self._invoke(messages.max_package_pr(version, pkgarch))
        return self._revision(messages.MAX_PACKAGE_PR,
                              self._field(messages.MAX_PACKAGE_PR, response, messages.VALUE))

    async def test_package(self, version: str, pkgarch: str) -> bool:
        response = await self._invoke(messages.test_package(version, pkgarch))
        value = self._field(messages.TEST_PACKAGE, response, messages.VALUE)
        if not isinstance(value, bool):
            raise UpstreamError("upstream %s answered test-package with %.100r, not a boolean"
                                % (self.address, value))
        return value

    async def test_pr(self, version: str, pkgarch: str, checksum: str) -> Optional[RevisionKey]:
        response = await self._invoke(messages.test_pr(version, pkgarch, checksum, history=False))
        return self._revision(messages.TEST_PR, self._field(messages.TEST_PR, response, messages.VALUE))
