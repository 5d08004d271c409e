"""What the PostgreSQL driver raises, and which of it is an outage.

An outage is the database being unreachable, or reachable but not the primary:
a connection refused, reset or closed under a request (SQLSTATE class 08), a
server shutting down or starting up (57P01, 57P02, 57P03), a write refused by a
node that was demoted (25006), no connection slot left (53300), no host of a
multi-host URL that is the primary (``target_session_attrs``), or a connection the
driver can no longer use (``InternalClientError``: asyncpg's "another operation is
in progress" after a server ended the connection mid-way).  A request waits one
out (``PostgreSQLEngine``: up to ``db_outage_wait``), because a build host raises
on an error answer and fails its task, while a late answer only costs time.  Every
other error -- a lock timeout, a constraint, a schema newer than the server -- is
the request's own and is answered at once, as ``DatabaseError`` with the URL's
password taken out (``database_error``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Tuple

from ...errors import DatabaseError
from .url import hide_in

OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006", "53300"})
"""admin shutdown, crash shutdown, cannot connect now, read-only transaction, too
many connections; and every state of class 08 (connection exceptions)."""

OPENED_AT = "prserv_connection_opened_at"
"""The attribute a driver error raised on a pooled connection is given: when that
connection was opened (``availability.Outage.failed``: a connection older than the
last outage fails as that outage's tail)."""


def driver() -> Any:
    """asyncpg, imported when a URL is opened (``lib/prserv`` imports only the
    standard library until then)."""
    try:
        import asyncpg  # type: ignore[import-not-found]
    except ImportError:
        raise DatabaseError("a PostgreSQL URL needs the driver: pip install 'prserv[postgresql]'") from None
    return asyncpg


def driver_errors(asyncpg: Any) -> Tuple[type, ...]:
    """What asyncpg and the socket layer raise: the errors a database operation turns
    into ``DatabaseError`` (at once, or after waiting out an outage)."""
    return (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError)


def is_outage(exc: BaseException, asyncpg: Any) -> bool:
    """Whether ``exc`` (raised by asyncpg or the socket layer) says the database is
    out rather than that the request was wrong."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.exceptions.InternalClientError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str):
        return sqlstate in OUTAGE_SQLSTATES or sqlstate.startswith("08")
    return False


def cause(exc: BaseException) -> str:
    """``exc`` in a few words: its type, and its message if it has one."""
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def database_error(exc: BaseException, url: str) -> DatabaseError:
    """``exc`` as the ``DatabaseError`` a request is answered with (no password)."""
    return DatabaseError(hide_in("%s: %s" % (type(exc).__name__, exc), url))
