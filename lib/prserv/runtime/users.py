"""Managing users directly in a database (``prserv user ... --database DB``).

The first admin has to be made without a server to ask, so these work on the
database itself: a SQLite file through a connection of their own (never as a
server's engine, which would turn a mirror's file into an origin), a PostgreSQL URL
through its engine (which creates or upgrades the schema).  A running server sees
the change on the next ``auth``: users are read from the database every time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, List, Optional, Tuple

from .. import tokens
from ..errors import InvalidRequestError
from ..storage import open_engine
from ..storage.postgresql.url import is_url
from ..storage.sqlite import users as sqlite_users
from ..tokens import UserRecord


def add_user(database: str, username: str, permissions: List[str],
             expires: Optional[float] = None) -> Tuple[UserRecord, str]:
    """A new user (or the same name again: new permissions, new token); returns the
    record and the token, which exists in clear only here."""
    record, token = tokens.make_user(username, permissions, time.time(), expires)
    _run(database, "put", record)
    return record, token


def new_token(database: str, username: str, expires: Optional[float] = None) -> Tuple[UserRecord, str]:
    record = _run(database, "get", tokens.check_username(username))
    if record is None:
        raise InvalidRequestError("no user %r in %s" % (username, database))
    record, token = tokens.renewed(record, time.time(), expires)
    _run(database, "put", record)
    return record, token


def remove_user(database: str, username: str) -> bool:
    return bool(_run(database, "remove", tokens.check_username(username)))


def list_users(database: str) -> List[UserRecord]:
    return list(_run(database, "every", None))


def _run(database: str, action: str, argument: Any) -> Any:
    if is_url(database):
        return asyncio.run(_on_postgresql(database, action, argument))
    with sqlite_users.open_file(database, writes=action in ("put", "remove")) as conn:
        if action == "every":
            return sqlite_users.every(conn)
        return getattr(sqlite_users, action)(conn, argument)


async def _on_postgresql(url: str, action: str, argument: Any) -> Any:
    engine = await open_engine(url)
    try:
        if action == "put":
            return await engine.put_user(argument)
        if action == "remove":
            return await engine.remove_user(argument)
        if action == "get":
            return await engine.get_user(argument)
        return await engine.list_users()
    finally:
        await engine.close()
