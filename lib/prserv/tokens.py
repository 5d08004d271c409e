"""Users, their permissions and their tokens, as values (no I/O).

bitbake's client sends no credentials, so the network rules (``prserv.access``)
decide what an anonymous client may do.  This package's own clients (the ``prserv``
command, a server's upstream pool and mirror follower) can prove who they are with
a token, sent once per connection in an ``auth`` request, and get what their user
may do on top of what their network grants.

Permissions:

* ``read``: the lookups every client may make anyway (kept so that a user can be
  given nothing else);
* ``write``: store values (get-pr of a new checksum, import-one);
* ``mirror``: pull the change feed (``mirror-pull``, ``mirror-audit``) where the
  server requires a token for it;
* ``admin``: everything, and ``dump-db`` where a token is required for it,
  ``reset-stats`` and user management.

A token is 32 random bytes, URL-safe base64, shown once when made.  The database
keeps only a salted SHA-256 of it (a token has 256 bits of entropy: a slow hash
would guard nothing and cost every ``auth``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any, Dict, FrozenSet, Iterable, NamedTuple, Optional, Sequence, Tuple

READ, WRITE, MIRROR, ADMIN = "read", "write", "mirror", "admin"
PERMISSIONS: Tuple[str, ...] = (READ, WRITE, MIRROR, ADMIN)
ALL: FrozenSet[str] = frozenset(PERMISSIONS)

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
TOKEN_BYTES = 32


class UserRecord(NamedTuple):
    """A user as stored: never the token itself."""
    username: str
    permissions: FrozenSet[str]
    token_hash: str
    salt: str
    created: float
    expires: Optional[float]
    """Unix time after which the token is refused (None: never)."""


def record_from_row(row: Sequence[Any]) -> UserRecord:
    """A ``UserRecord`` from a users-table row (permissions stored comma-separated)."""
    username, permissions, token_hash, salt, created, expires = row
    return UserRecord(username, parse_permissions(permissions.split(",")), token_hash, salt, created, expires)


def row_of(record: UserRecord) -> Tuple[Any, ...]:
    """The users-table row of ``record``: username, permissions (comma-separated),
    token_hash, salt, created, expires -- the columns of both engines' tables."""
    return (record.username, permissions_text(record.permissions), record.token_hash, record.salt,
            record.created, record.expires)


def public_fields(record: UserRecord) -> Dict[str, Any]:
    """A user as answers and the CLI show it: never the token or its hash."""
    return {"username": record.username, "permissions": sorted(record.permissions),
            "created": record.created, "expires": record.expires}


def check_username(name: str) -> str:
    """``ValueError`` unless ``name`` is 1-64 of letters, digits and ``. _ @ -``."""
    if not isinstance(name, str) or not _USERNAME.match(name):
        raise ValueError("a user name is 1-64 letters, digits, '.', '_', '@' or '-' (starting with "
                         "a letter or digit), not %.80r" % (name,))
    return name


def parse_permissions(items: Iterable[str]) -> FrozenSet[str]:
    """``{"read", "write"}`` from ``["read", "write"]`` or ``["read,write"]``; ``admin``
    implies every other; ``ValueError`` naming an unknown one."""
    found = set()
    for item in items:
        for name in str(item).replace(",", " ").split():
            if name not in ALL:
                raise ValueError("unknown permission %r (known: %s)" % (name, ", ".join(PERMISSIONS)))
            found.add(name)
    if ADMIN in found:
        return ALL
    return frozenset(found | {READ})


def permissions_text(permissions: Iterable[str]) -> str:
    return ",".join(p for p in PERMISSIONS if p in set(permissions))


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=")


def hash_token(token: str, salt: Optional[str] = None) -> Tuple[str, str]:
    """(hash, salt) of ``token``, both hex; a new salt unless one is given."""
    salt = salt if salt is not None else secrets.token_hex(16)
    digest = hashlib.sha256(bytes.fromhex(salt) + token.encode("utf-8")).hexdigest()
    return digest, salt


def token_matches(record: UserRecord, token: str, now: float) -> bool:
    """The token is this user's and has not expired (compared in constant time)."""
    if not isinstance(token, str) or (record.expires is not None and now >= record.expires):
        return False
    digest, _ = hash_token(token, record.salt)
    return hmac.compare_digest(digest, record.token_hash)


def make_user(username: str, permissions: Iterable[str], now: float,
              expires: Optional[float] = None) -> Tuple[UserRecord, str]:
    """A new user record and its token (the only time the token exists in clear)."""
    return renewed(UserRecord(check_username(username), parse_permissions(permissions), "", "", now, None),
                   now, expires)


def renewed(record: UserRecord, now: float, expires: Optional[float]) -> Tuple[UserRecord, str]:
    """The same user with a new token (the old one stops working)."""
    token = new_token()
    digest, salt = hash_token(token)
    return record._replace(token_hash=digest, salt=salt, created=now, expires=expires), token


def parse_credentials(text: str) -> Tuple[str, str]:
    """``USER:TOKEN`` (``PRSERV_TOKEN``, ``--upstream-token``...) -> (user, token)."""
    user, sep, token = text.strip().partition(":")
    if not sep or not token:
        raise ValueError("expected USER:TOKEN")
    return check_username(user), token
