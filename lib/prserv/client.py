"""PR clients: ``PRAsyncClient`` (asyncio) and ``PRClient`` (blocking).

Method names, arguments and return values are bitbake's: each returns the answer's
field, or None when the answer is empty or ``null`` (a read-only ``importone``).
An ``{"invoke-error": ...}`` answer raises ``prserv.asyncrpc.InvokeError``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, List, Optional, Tuple, Union

from . import logger
from .asyncrpc import AsyncClient, Client

PROTO_NAME = "PRSERVICE"
PROTO_VERSION = "1.0"


class PRAsyncClient(AsyncClient):
    def __init__(self, timeout: float = 30) -> None:
        super().__init__(PROTO_NAME, PROTO_VERSION, logger, timeout=timeout)

    async def _field(self, request: dict, field: str) -> Any:
        response = await self.invoke(request)
        if response:
            return response[field]
        return None

    async def getPR(self, version: str, pkgarch: str, checksum: str, history: bool = False) -> Optional[str]:
        return await self._field({"get-pr": {"version": version, "pkgarch": pkgarch,
                                             "checksum": checksum, "history": history}}, "value")

    async def test_pr(self, version: str, pkgarch: str, checksum: str, history: bool = False) -> Optional[str]:
        return await self._field({"test-pr": {"version": version, "pkgarch": pkgarch,
                                              "checksum": checksum, "history": history}}, "value")

    async def test_package(self, version: str, pkgarch: str) -> Optional[bool]:
        return await self._field({"test-package": {"version": version, "pkgarch": pkgarch}}, "value")

    async def max_package_pr(self, version: str, pkgarch: str) -> Optional[str]:
        return await self._field({"max-package-pr": {"version": version, "pkgarch": pkgarch}}, "value")

    async def importone(self, version: str, pkgarch: str, checksum: str,
                        value: Union[str, int]) -> Optional[Union[str, int]]:
        return await self._field({"import-one": {"version": version, "pkgarch": pkgarch,
                                                 "checksum": checksum, "value": value}}, "value")

    async def importmany(self, rows: Iterable[Tuple[str, str, str, Union[str, int]]],
                         window: int = 64) -> AsyncIterator[Optional[Union[str, int]]]:
        """``importone`` for each ``(version, pkgarch, checksum, value)``, pipelined;
        yields each answer's value (None from a read-only server) in order."""
        messages = ({"import-one": {"version": version, "pkgarch": pkgarch, "checksum": checksum,
                                    "value": value}} for version, pkgarch, checksum, value in rows)
        async for response in self.invoke_pipelined(messages, window):
            yield response["value"] if response else None

    async def export(self, version: Optional[str], pkgarch: Optional[str], checksum: Optional[str],
                     colinfo: bool, history: bool = False) -> Optional[Tuple[dict, List[dict]]]:
        response = await self.invoke({"export": {"version": version, "pkgarch": pkgarch,
                                                 "checksum": checksum, "colinfo": colinfo,
                                                 "history": history}})
        if response:
            return response["metainfo"], response["datainfo"]
        return None

    async def is_readonly(self) -> Optional[bool]:
        return await self._field({"is-readonly": {}}, "readonly")


class PRClient(Client):
    """Blocking PR client (a context manager); calls run on a private event loop."""

    def __init__(self, timeout: float = 30) -> None:
        self._timeout = timeout
        super().__init__()
        self._add_methods("getPR", "test_pr", "test_package", "max_package_pr", "importone",
                          "export", "is_readonly")

    def _get_async_client(self) -> PRAsyncClient:
        return PRAsyncClient(self._timeout)
