"""The short-connection path: what one packaging task's connection leaves behind and
how a request finds its handler."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import weakref
from pathlib import Path
from typing import Set

from prserv.asyncrpc import AsyncServerConnection, stream
from prserv.server.session import PRServerClient

from wire import SETUP, RawConnection


async def test_a_short_connections_session_is_freed_without_the_garbage_collector(start_server):
    """Connect, set up, one get-pr, close: every object of the session goes as its last
    reference does.  A reference cycle (an exception kept with its traceback, say)
    would leave the whole session to the cyclic collector."""
    server = await start_server()
    gc.collect()
    gc.disable()
    try:
        conn = await RawConnection.open(server.address, SETUP)
        answer = await conn.request({"get-pr": {"version": "v", "pkgarch": "a", "checksum": "c"}})
        assert answer == {"value": "0"}
        ((session, task),) = server.sessions.items()
        freed = weakref.ref(session)
        del session
        conn.writer.close()
        await task
        assert server.sessions == {}
        del task
        assert freed() is None
    finally:
        gc.enable()


def test_a_subclass_answers_its_bases_commands_first_then_its_own_in_order():
    class Base(AsyncServerConnection):
        commands = {"b": "handle_b"}

        async def handle_b(self, request):
            return "b"

    class Derived(Base):
        commands = {"d": "handle_d", "c": "handle_c"}

        async def handle_ping(self, request):
            return "derived ping"

        async def handle_c(self, request):
            return "c"

        async def handle_d(self, request):
            return "d"

    assert [name for name, _ in Derived.dispatch_table] == ["ping", "b", "d", "c"]
    assert [name for name, _ in Base.dispatch_table] == ["ping", "b"]
    assert dict(Derived.dispatch_table)["ping"] is Derived.handle_ping      # the override answers
    assert dict(Base.dispatch_table)["ping"] is AsyncServerConnection.handle_ping


def test_the_pr_sessions_commands_keep_the_references_order():
    names = [name for name, _ in PRServerClient.dispatch_table]
    assert names[:8] == ["ping", "get-pr", "test-pr", "test-package", "max-package-pr", "import-one",
                         "export", "is-readonly"]
    assert len(names) == len(set(names))
    assert set(names) == documented_requests()


def documented_requests() -> Set[str]:
    """The commands docs/protocol.md gives a request example of: the keys of the objects
    it shows sent (a transcript's ``> {"name": ...``) or opening a table row or a line
    (``| `{"name": ...``, ```{"name": ...``), less those it shows received (``< {...``)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    shown = set(re.findall(r'^(?:> |\| `|`)\{"([\w-]+)":', text, re.M))
    return shown - set(re.findall(r'^< \{"([\w-]+)":', text, re.M))


def test_the_documented_requests_are_found():
    """The reader above finds what it should, so that the comparison means something."""
    documented = documented_requests()
    assert {"ping", "get-pr", "dump-db", "mirror-pull", "get-stats", "auth", "get-all-users"} <= documented
    assert not documented & {"value", "alive", "invoke-error", "requests", "username"}    # answers


async def test_an_asyncio_transport_reads_at_most_read_bytes():
    """asyncio reads 256 KiB at a time by default, over glibc's mmap threshold: each
    read of a get-pr then cost an mmap, an mremap and a munmap in some server
    processes (strace: 9,797 mmap calls for 9,600 requests; 195 with the cap)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, line_protocol = await loop.create_connection(lambda: stream.LineProtocol(loop=loop), sock=ours)
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert transport.max_size == stream.READ_BYTES == 64 * 1024
    finally:
        transport.close()
        theirs.close()
