"""PR clients: ``PRAsyncClient`` (asyncio) and ``PRClient`` (blocking).

Method names, arguments and return values are bitbake's: each returns the answer's
field, or None when the answer is empty or ``null`` (a read-only ``importone``).
An ``{"invoke-error": ...}`` answer raises ``prserv.asyncrpc.InvokeError``.
"""

from __future__ import annotations

import asyncio
from typing import IO, Any, AsyncIterator, Iterable, List, Optional, Tuple, Union

from . import messages
from .asyncrpc import AsyncClient, Client, ConnectionClosedError, InvokeError, ProtocolError
from .asyncrpc.client import SHARED
from .asyncrpc import protocol
from .asyncrpc.protocol import parse_json
from .dumptext import DumpDecoder
from .errors import AuthenticationError, InvalidDumpAnswer
from .log import logger


def _error_text(answer: Any) -> str:
    """What an invoke-error answer says (or the answer itself, for anything else)."""
    text = protocol.invoke_error_text(answer)
    return repr(answer) if text is None else text

class PRAsyncClient(AsyncClient):
    def __init__(self, timeout: float = 30, credentials: Optional[Tuple[str, str]] = None,
                 tls_context: Any = None, outages: Any = SHARED) -> None:
        """``credentials``: (user, token) to prove on every connection (``auth``, right
        after the setup); a refused token raises ``AuthenticationError``.
        ``tls_context``: checks a ``wss://`` server's certificate (None: the system's CAs).
        ``outages``: see ``AsyncClient`` (None: the caller reports outages itself)."""
        super().__init__(messages.PROTO_NAME, messages.PROTO_VERSION, logger, timeout=timeout, outages=outages)
        self.credentials = credentials
        self.tls_context = tls_context
        self.permissions: Optional[List[str]] = None
        """What the server granted the credentials (None until a connection proved them)."""

    async def setup_connection(self) -> None:
        await super().setup_connection()
        if self.credentials is not None:
            user, token = self.credentials
            await self.socket.send_message(messages.auth(user, token))
            answer = await self.socket.recv_message()
            permissions = messages.granted_permissions_of(answer)
            if permissions is None:
                raise AuthenticationError("%s refused the token of user %s: %.200s"
                                          % (self.address, user, _error_text(answer)))
            self.permissions = permissions

    async def _field(self, request: dict, field: str = messages.VALUE) -> Any:
        return messages.answer_field(await self.invoke(request), field)

    async def getPR(self, version: str, pkgarch: str, checksum: str, history: bool = False) -> Optional[str]:
        return await self._field(messages.get_pr(version, pkgarch, checksum, history))

    async def test_pr(self, version: str, pkgarch: str, checksum: str, history: bool = False) -> Optional[str]:
        return await self._field(messages.test_pr(version, pkgarch, checksum, history))

    async def test_package(self, version: str, pkgarch: str) -> Optional[bool]:
        return await self._field(messages.test_package(version, pkgarch))

    async def max_package_pr(self, version: str, pkgarch: str) -> Optional[str]:
        return await self._field(messages.max_package_pr(version, pkgarch))

    async def importone(self, version: str, pkgarch: str, checksum: str,
                        value: Union[str, int]) -> Optional[Union[str, int]]:
        return await self._field(messages.import_one(version, pkgarch, checksum, value))

    async def importmany(self, rows: Iterable[Tuple[str, str, str, Union[str, int]]],
                         window: int = 64) -> AsyncIterator[Optional[Union[str, int]]]:
        """``importone`` for each ``(version, pkgarch, checksum, value)``, pipelined;
        yields each answer's value (None from a read-only server) in order."""
        requests = (messages.import_one(version, pkgarch, checksum, value)
                    for version, pkgarch, checksum, value in rows)
        async for response in self.invoke_pipelined(requests, window):
            yield messages.answer_field(response, messages.VALUE)

    async def export(self, version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
                     colinfo: bool, history: bool = False) -> Optional[Tuple[dict, List[dict]]]:
        return messages.export_of(await self.invoke(messages.export(version, pkgarch, checksum, colinfo, history)))

    async def is_readonly(self) -> Optional[bool]:
        return await self._field(messages.is_readonly(), messages.READONLY)

    async def mirror_pull(self, since: Optional[str], limit: int, wait: float,
                          count: bool = False, given: bool = False) -> Any:
        """The source's change feed after ``since`` (the whole answer, unchecked: a
        mirror validates it); ``given``: each row with its time, where the source
        gives them."""
        return await self.invoke(messages.mirror_pull(since, limit, wait, count, given))

    async def mirror_audit(self, after: Optional[str], until: str, rows: bool = False) -> Any:
        return await self.invoke(messages.mirror_audit(after, until, rows))

    async def mirror_status(self) -> Any:
        """A mirror's state (``{"mirror": {...}}``), as ``prserv mirror-status`` shows it."""
        return messages.mirror_status_of(await self.invoke(messages.mirror_status()))

    async def get_stats(self, figures: bool = False) -> Any:
        """The server's figures (``{"requests": {...}, "commands": {...}, ...}``);
        ``figures``: also what its ``/metrics`` show (under ``"figures"``)."""
        return messages.stats_of(await self.invoke(messages.get_stats(figures)))

    # -- with an admin token
    async def reset_stats(self) -> Any:
        """The figures before the reset (admin)."""
        return await self.invoke(messages.reset_stats())

    async def new_user(self, username: str, permissions: Iterable[str], expires: Optional[float] = None) -> Any:
        """``{"username", "permissions", "created", "expires", "token"}`` (admin)."""
        return await self.invoke(messages.new_user(username, permissions, expires))

    async def refresh_token(self, username: str, expires: Optional[float] = None) -> Any:
        return await self.invoke(messages.refresh_token(username, expires))

    async def delete_user(self, username: str) -> Any:
        return await self.invoke(messages.delete_user(username))

    async def get_all_users(self) -> Any:
        return messages.users_of(await self.invoke(messages.get_all_users()))

    async def dump_db(self, fd: IO[str]) -> int:
        """The server's SQL dump (``dump-db``) written to the text file ``fd`` as it
        arrives; returns the characters written (like ``PRTable.dump_db(fd)``).

        The chunk stream is decoded piece by piece, never reassembled, so memory
        does not grow with the database.  Sending the request is retried like any
        request; receiving is not (part of the dump may be written already): a
        failure raises ``ConnectionError``.
        """
        await self._send_wrapper(lambda: self.socket.send_message(messages.dump_db()))
        try:
            head = parse_json(await self._dump_line())
            if not (isinstance(head, dict) and "chunk-stream" in head):
                return await self._small_dump(head, fd)     # one line (or websocket message)
            decoder = DumpDecoder(fd)
            while True:
                line = await self._dump_line()
                if not line:                                 # the end of the chunk stream
                    return decoder.finish()
                decoder.feed(line)
        except (ProtocolError, InvalidDumpAnswer) as exc:
            await self.disconnect()
            raise ConnectionError("dump from %s: invalid answer: %s" % (self.address, exc)) from exc

    async def _dump_line(self) -> str:
        try:
            return await self.socket.recv_line()
        except (OSError, ConnectionClosedError, asyncio.TimeoutError) as exc:
            await self.disconnect()
            raise ConnectionError("dump from %s failed: %s" % (self.address, exc)) from exc

    async def _small_dump(self, answer: Any, fd: IO[str]) -> int:
        error = protocol.invoke_error_text(answer)
        if error is not None:
            await self.disconnect()              # the server closes after an invoke-error
            raise InvokeError(error)
        dump = messages.dump_of(answer)
        if dump is None:
            await self.disconnect()
            raise ConnectionError("dump from %s: unexpected answer %r" % (self.address, str(answer)[:100]))
        fd.write(dump)
        return len(dump)


class PRClient(Client):
    """Blocking PR client (a context manager); calls run on a private event loop."""

    def __init__(self, timeout: float = 30, credentials: Optional[Tuple[str, str]] = None,
                 tls_context: Any = None) -> None:
        self._timeout = timeout
        self._credentials = credentials
        self._tls_context = tls_context
        super().__init__()
        self._add_methods("getPR", "test_pr", "test_package", "max_package_pr", "importone",
                          "export", "is_readonly", "dump_db", "mirror_pull", "mirror_audit",
                          "mirror_status", "get_stats", "reset_stats", "new_user", "refresh_token",
                          "delete_user", "get_all_users")

    def _get_async_client(self) -> PRAsyncClient:
        return PRAsyncClient(self._timeout, self._credentials, self._tls_context)
