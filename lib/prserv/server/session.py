"""One client session of the PR server: one handler per request.

A handler checks the request's fields (``server.fields``), asks the allocator or
the storage engine, and shapes the answer (``prserv.messages``); framing and
sessions come from ``prserv.asyncrpc``.  Whether this session may store values is
its own property (``read_only``), not only the server's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable, Dict, FrozenSet, List, Optional, Protocol

from .. import messages
from ..access import AccessRules
from .. import tokens
from ..asyncrpc import AsyncServerConnection, InvokeError, RequestRefused, ServerError
from ..asyncrpc.stats import RequestStats
from ..asyncrpc.connection import Connection
from ..asyncrpc.protocol import JSONStream, dumps
from ..errors import (CatchingUp, DatabaseError, DatabaseUnavailable, InvalidRequestError, InvalidRevisionError,
                      PermissionDenied, PRServiceError)
from ..revision import key_to_revision
from ..storage.engine import NOBODY, Engine, Giver, Row, feed_digest
from ..version import __version__
from . import fields
from .allocator import Allocator
from .dump import DumpStream

AUTH_FAILURE_DELAY = 1.0
"""Seconds a failed ``auth`` waits before its answer (guessing tokens stays slow)."""
TOKEN_FOR_MIRROR, TOKEN_FOR_DUMP = "mirror", "dump-db"
"""``require_token`` items: the change feed, ``dump-db``."""
MAX_PULL_ROWS = 10000
"""Rows one mirror-pull answers at most."""
MAX_PULL_WAIT = 120.0
"""Seconds a mirror-pull may wait for a commit."""
_ANSWERED_WHILE_CATCHING_UP = frozenset((messages.PING, messages.IS_READONLY, messages.MIRROR_STATUS,
                                         messages.MIRROR_PULL, messages.MIRROR_AUDIT))
"""A mirror's feed is answered before its first copy is complete: it says so
(``complete``), and a mirror of it waits for that before answering builds."""


async def export_pieces(metainfo: Dict[str, Any], batches: AsyncIterator[List[Row]]) -> AsyncIterator[str]:
    """``{"metainfo": ..., "datainfo": [...]}`` as text, one batch of rows at a time:
    the same characters as ``dumps`` of the whole answer, without holding it."""
    yield messages.export_head(dumps(metainfo))
    separator = ""
    async for batch in batches:
        yield separator + ", ".join(dumps(messages.export_row(*row)) for row in batch)
        separator = ", "
    yield messages.EXPORT_TAIL


async def prove_user(engine: Engine, username: Any, token: Any) -> Optional[tokens.UserRecord]:
    """The user ``username`` if ``token`` is its valid token; else None, after
    ``AUTH_FAILURE_DELAY`` seconds (guessing tokens stays slow).  Every way of proving
    a user (``auth``, HTTP Basic) goes through here."""
    record = None
    if isinstance(username, str) and isinstance(token, str) and username and token:
        record = await engine.get_user(username)
    if record is None or not tokens.token_matches(record, token, time.time()):
        await asyncio.sleep(AUTH_FAILURE_DELAY)
        return None
    return record


def may_write(network_writes: bool, permissions: FrozenSet[str]) -> bool:
    """Whether a client may store values (where the server does): its address is in
    ``allow_write`` (``network_writes``), or its token grants ``write`` (``admin``
    implies it).  The PR session and the HTTP listener ask this one rule."""
    return network_writes or tokens.WRITE in permissions


class SessionOwner(Protocol):
    """What a session needs of its server (``prserv.server.prserver.PRServer``)."""

    logger: logging.Logger
    engine: Engine
    allocator: Allocator
    read_only: bool
    access: AccessRules
    require_token: FrozenSet[str]
    """What anonymous clients may not do here: ``TOKEN_FOR_MIRROR``, ``TOKEN_FOR_DUMP``."""
    stats: RequestStats
    record_clients: bool
    """The record of when values were given names their clients (address, user)."""

    def start_dump(self, session: "PRServerClient") -> DumpStream: ...

    def end_dump(self, session: "PRServerClient") -> None: ...

    catching_up: Optional[Callable[[], str]]
    """Set while a mirror has not completed its first copy: why requests are refused."""

    async def wait_for_changes(self, since: Optional[str], timeout: float) -> bool: ...

    def mirror_status(self) -> Optional[Dict[str, Any]]: ...

    def stats_answer(self) -> Dict[str, Any]: ...


class PRServerClient(AsyncServerConnection):
    """One client session of the PR server."""

    secret_commands = frozenset((messages.AUTH,))
    # Dispatch order is the reference's: the first command key present wins.
    commands = {
        messages.GET_PR: "handle_get_pr",
        messages.TEST_PR: "handle_test_pr",
        messages.TEST_PACKAGE: "handle_test_package",
        messages.MAX_PACKAGE_PR: "handle_max_package_pr",
        messages.IMPORT_ONE: "handle_import_one",
        messages.EXPORT: "handle_export",
        messages.IS_READONLY: "handle_is_readonly",
        messages.DUMP_DB: "handle_dump_db",
        messages.MIRROR_PULL: "handle_mirror_pull",
        messages.MIRROR_AUDIT: "handle_mirror_audit",
        messages.MIRROR_STATUS: "handle_mirror_status",
        messages.GET_STATS: "handle_get_stats",
        messages.AUTH: "handle_auth",
        messages.RESET_STATS: "handle_reset_stats",
        messages.NEW_USER: "handle_new_user",
        messages.REFRESH_TOKEN: "handle_refresh_token",
        messages.DELETE_USER: "handle_delete_user",
        messages.GET_ALL_USERS: "handle_get_all_users",
    }

    def __init__(self, connection: Connection, server: SessionOwner) -> None:
        super().__init__(connection, messages.PROTO_NAME, server.logger)
        self.server = server
        self.engine = server.engine
        self.allocator = server.allocator
        self.giver = Giver(connection.peer_host) if server.record_clients else NOBODY
        """Whom the record of when values were given names for this client's values."""
        self.network_writes = server.access.may_write(connection.peer_host)
        """The client's address is in ``allow_write``."""
        self.permissions: FrozenSet[str] = frozenset()
        """What the client's token grants (``auth``); nothing for an anonymous client."""
        self.read_only = server.read_only or not may_write(self.network_writes, self.permissions)
        """This session only reads: get-pr answers without storing, import-one with null
        (a read-only server, or a client whose network and token do not grant writes)."""

    def answer_gate(self) -> Any:
        """Immediate sync mode: an answer leaves once everything written before it is
        on disk (its own value, or one it reports that another request just wrote)."""
        return self.engine.answer_gate()

    async def dispatch_message(self, message: Any) -> Any:
        try:
            if self.server.catching_up is not None and isinstance(message, dict):
                self.command = self.command_of(message)
                if self.command not in _ANSWERED_WHILE_CATCHING_UP:
                    raise CatchingUp(self.server.catching_up())
            return await super().dispatch_message(message)
        except (InvalidRequestError, InvalidRevisionError) as exc:
            raise InvokeError("%s: %s" % (self.command_of(message), exc)) from exc
        except DatabaseUnavailable as exc:
            raise InvokeError(str(exc)) from exc        # the outage is logged once, by the engine
        except DatabaseError as exc:
            self.logger.error("database error: %s", exc)
            raise ServerError("database error: %s" % exc) from exc
        except PRServiceError as exc:
            raise InvokeError(str(exc)) from exc

    async def handle_get_pr(self, request: Any) -> Dict[str, Any]:
        args = fields.arguments(request)
        version, pkgarch, checksum = fields.checksum_fields(args)
        history = fields.flag(args, "history", False)
        store = not self.read_only
        value = self.allocator.get_pr_now(version, pkgarch, checksum, history, store, self.giver)
        if value is None:
            value = await self.allocator.get_pr(version, pkgarch, checksum, history, store, self.giver)
        return messages.value_answer(value)

    async def handle_test_pr(self, request: Any) -> Dict[str, Any]:
        args = fields.arguments(request)
        version, pkgarch, checksum = fields.checksum_fields(args)
        history = fields.flag(args, "history", False)
        key = (await self.engine.package(version, pkgarch, checksum)).checksum_value(checksum, history)
        return messages.value_answer(None if key is None else key_to_revision(key))

    async def handle_test_package(self, request: Any) -> Dict[str, Any]:
        args = fields.arguments(request)
        state = await self.engine.package(fields.text(args, "version"), fields.text(args, "pkgarch"))
        return messages.value_answer(state.has_rows)

    async def handle_max_package_pr(self, request: Any) -> Dict[str, Any]:
        args = fields.arguments(request)
        state = await self.engine.package(fields.text(args, "version"), fields.text(args, "pkgarch"))
        return messages.value_answer(None if state.max_key is None else key_to_revision(state.max_key))

    async def handle_import_one(self, request: Any) -> Optional[Dict[str, Any]]:
        args = fields.arguments(request)
        version, pkgarch, checksum = fields.checksum_fields(args)
        if "value" not in args:
            raise InvalidRequestError("missing field 'value'")
        value = args["value"]
        try:
            text = fields.import_value_text(value)    # refused even when read-only
        except InvalidRevisionError as exc:
            raise InvalidRevisionError("field 'value': %s" % exc) from None
        if self.read_only:
            return None                                 # the reference answers null
        await self.allocator.import_one(version, pkgarch, checksum, text)
        return messages.value_answer(value)             # an integer comes back an integer

    async def handle_export(self, request: Any) -> JSONStream:
        args = fields.arguments(request)
        version = fields.export_filter(args, "version")
        pkgarch = fields.export_filter(args, "pkgarch")
        checksum = fields.export_filter(args, "checksum")
        colinfo = fields.flag(args, "colinfo")
        history = fields.flag(args, "history", False)
        metainfo: Dict[str, Any] = {}
        if colinfo:
            metainfo = messages.export_metainfo(self.engine.table_name, __version__, await self.engine.column_info())
        batches = self.engine.export_batches(version, pkgarch, checksum, history)
        return JSONStream(export_pieces(metainfo, batches))

    async def handle_is_readonly(self, request: Any) -> Dict[str, bool]:
        return messages.readonly_answer(self.read_only)

    async def handle_dump_db(self, request: Any) -> JSONStream:
        """``{"dump": "<SQL text>"}`` of a consistent snapshot, sent as it is read."""
        fields.arguments(request)
        self._require_if_configured(TOKEN_FOR_DUMP, tokens.ADMIN)
        return JSONStream.of(self.server.start_dump(self).pieces())

    async def handle_mirror_pull(self, request: Any) -> Dict[str, Any]:
        """The change feed after ``since`` (``docs/protocol.md`` §5.4); waits up to
        ``wait`` seconds for a commit when nothing is new (ended at once by a
        shutdown).  ``given``: each row ends with its time (never its address or
        user: a public mirror must not publish who asked)."""
        args = fields.arguments(request)
        self._require_if_configured(TOKEN_FOR_MIRROR, tokens.MIRROR)
        since = fields.position(args, "since")
        limit = int(fields.bounded_number(args, "limit", 1, MAX_PULL_ROWS, MAX_PULL_ROWS))
        wait = fields.bounded_number(args, "wait", 0, MAX_PULL_WAIT, 0)
        count = fields.flag(args, "count", False)
        given = fields.flag(args, "given", False)
        page = await self.engine.changes(since, limit, count, given)
        if not page.rows and wait > 0 and await self.server.wait_for_changes(since, wait):
            page = await self.engine.changes(since, limit, count, given)
        return messages.mirror_pull_answer(page)

    async def handle_mirror_audit(self, request: Any) -> Dict[str, Any]:
        """Count and digest of the feed's rows after ``after`` up to ``until`` (and the
        rows themselves, if asked for): a mirror's audit compares them with its own."""
        args = fields.arguments(request)
        self._require_if_configured(TOKEN_FOR_MIRROR, tokens.MIRROR)
        rows = await self.engine.rows_between(fields.position(args, "after"),
                                              fields.position(args, "until", optional=False))
        if rows is None:
            return messages.mirror_audit_answer(None, None)
        count, digest = feed_digest(rows)
        return messages.mirror_audit_answer(count, digest, rows if fields.flag(args, "rows", False) else None)

    async def handle_mirror_status(self, request: Any) -> Dict[str, Any]:
        return messages.mirror_status_answer(self.server.mirror_status())

    async def handle_get_stats(self, request: Any) -> Dict[str, Any]:
        """hashserv's ``requests`` figures and this server's own (docs/protocol.md §5.5);
        with ``"figures": true`` also what its ``/metrics`` show (``metrics.figures``)."""
        args = fields.arguments(request)
        return self.server.stats_answer(figures=fields.flag(args, "figures", False))

    # -- who the client is
    async def handle_auth(self, request: Any) -> Dict[str, Any]:
        """Prove a user with its token: the session gains the user's permissions.  A
        failure is answered after ``AUTH_FAILURE_DELAY`` seconds and changes nothing."""
        args = fields.arguments(request)
        username, token = args.get("username"), args.get("token")
        record = await prove_user(self.engine, username, token)
        if record is None:
            self.logger.warning("auth failed for user %.64r", username)
            raise RequestRefused("auth: unknown user, wrong token or expired token")
        self.user = record.username
        if self.server.record_clients:
            self.giver = Giver(self.giver.address, record.username)
        self.permissions = record.permissions
        self.read_only = self.server.read_only or not may_write(self.network_writes, self.permissions)
        self.logger.info("authenticated as %s (%s)", record.username, tokens.permissions_text(record.permissions))
        return messages.auth_answer(record.username, record.permissions)

    def _require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise PermissionDenied("%s needs a token with the %s permission (send auth first)"
                                   % (self.command, permission))

    def _require_if_configured(self, what: str, permission: str) -> None:
        if what in self.server.require_token:
            self._require(permission)

    async def handle_reset_stats(self, request: Any) -> Dict[str, Any]:
        """(admin) The figures as they were, then every count starts again."""
        fields.arguments(request)
        self._require(tokens.ADMIN)
        before = self.server.stats_answer()
        self.server.stats.reset()
        return before

    async def handle_new_user(self, request: Any) -> Dict[str, Any]:
        """(admin) A new user (or a user's new permissions and token): the token is in
        this answer only."""
        args = fields.arguments(request)
        self._require(tokens.ADMIN)
        record, token = tokens.make_user(fields.username(args), fields.permissions(args), time.time(),
                                         fields.expiry(args))
        await self.engine.put_user(record)
        self.logger.info("user %s added (%s)", record.username, tokens.permissions_text(record.permissions))
        return messages.user_answer(tokens.public_fields(record), token)

    async def handle_refresh_token(self, request: Any) -> Dict[str, Any]:
        """(admin) A user's new token; the old one stops working."""
        args = fields.arguments(request)
        self._require(tokens.ADMIN)
        record = await self._existing_user(fields.username(args))
        record, token = tokens.renewed(record, time.time(), fields.expiry(args))
        await self.engine.put_user(record)
        self.logger.info("user %s has a new token", record.username)
        return messages.user_answer(tokens.public_fields(record), token)

    async def handle_delete_user(self, request: Any) -> Dict[str, Any]:
        args = fields.arguments(request)
        self._require(tokens.ADMIN)
        username = fields.username(args)
        deleted = await self.engine.remove_user(username)
        if deleted:
            self.logger.info("user %s removed", username)
        return messages.deleted_user_answer(username, deleted)

    async def handle_get_all_users(self, request: Any) -> Dict[str, Any]:
        fields.arguments(request)
        self._require(tokens.ADMIN)
        return messages.users_answer([tokens.public_fields(record) for record in await self.engine.list_users()])

    async def _existing_user(self, username: str) -> tokens.UserRecord:
        record = await self.engine.get_user(username)
        if record is None:
            raise InvalidRequestError("no user %r" % username)
        return record

    async def close(self) -> None:
        self.server.end_dump(self)          # a dump still being sent to this client stops
        await super().close()
