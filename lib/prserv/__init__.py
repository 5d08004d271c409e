"""prserv: a drop-in PR (package revision) server for BitBake.

Same package name and public functions as bitbake's ``lib/prserv``; imports nothing
outside the standard library at import time, so it can be copied over bitbake's own
``lib/prserv``.  A facade: no module of the package imports it (docs/architecture.md
draws the layers behind it).
"""

from .log import logger
from .revision import _revision_greater_or_equal, increase_revision, revision_greater, revision_smaller
from .version import __version__


def create_server(addr, dbpath, upstream=None, read_only=False, **options):
    """A ``PRServer`` for ``addr`` (``host:port``, ``[v6]:port``, ``unix://path``,
    ``ws://host:port``, or a list of them); nothing is bound until it serves
    (``serve_forever`` / ``serve_as_process``).  ``options``: ``upstream_timeout``
    (seconds, default 10), ``sync_mode``, ``cache_size`` (bytes), ``limits``."""
    from .runtime.reload import reload_on_sighup
    from .server.prserver import PRServer

    server = PRServer(dbpath, read_only=read_only, upstream=upstream, **options)
    reload_on_sighup(server)                    # its log files reopened on SIGHUP, as before
    for address in [addr] if isinstance(addr, str) else addr:
        server.start_server(address)
    return server


def create_client(addr):
    """A blocking ``PRClient`` for ``addr``; TCP and websocket connect lazily (on the
    first call, with retries), unix sockets at once.  On failure the client is
    closed and the exception propagates."""
    from . import client
    from .asyncrpc.address import ADDR_TYPE_UNIX, parse_address

    c = client.PRClient()
    try:
        kind, args = parse_address(addr)
        if kind == ADDR_TYPE_UNIX:
            c.connect_unix(*args)
        else:
            c.connect_address(addr)
        return c
    except Exception:
        c.close()
        raise


async def create_async_client(addr):
    """A ``PRAsyncClient`` for ``addr`` (connects on its first call)."""
    from . import client

    c = client.PRAsyncClient()
    try:
        await c.connect_address(addr)
        return c
    except Exception:
        await c.close()
        raise


__all__ = [
    "__version__", "logger", "create_server", "create_client", "create_async_client",
    "increase_revision", "revision_greater", "revision_smaller", "_revision_greater_or_equal",
]
