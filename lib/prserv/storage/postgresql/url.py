"""Telling a PostgreSQL URL from a file name, and showing one without its password.

A database argument is a URL when it starts with ``postgresql://`` or
``postgres://`` (libpq's form, with ``?host=/socket/dir``, ``sslmode=`` and the
like); anything else is a SQLite file.  A URL is never made a path.
"""

from __future__ import annotations

import re
import urllib.parse

SCHEMES = ("postgresql://", "postgres://")

_PASSWORD = re.compile(r"(?P<head>://[^/@:]*:)(?P<password>[^@/]*)@")


def is_url(database: str) -> bool:
    return isinstance(database, str) and database.lower().startswith(SCHEMES)


def masked(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter)
    replaced by ``***``: for logs, ``config --show`` and error messages."""
    shown = _PASSWORD.sub(lambda m: m.group("head") + ("***" if m.group("password") else "") + "@", url)
    head, sep, query = shown.partition("?")
    if not sep:
        return shown
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return head + "?" + "&".join("%s=%s" % (name, "***" if name.lower() == "password" else
                                            urllib.parse.quote(value, safe="/:,"))
                                 for name, value in pairs)


def hide_in(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with ``url``'s password taken out."""
    parsed = urllib.parse.urlsplit(url)
    secrets = [parsed.password] if parsed.password else []
    secrets += [value for name, value in urllib.parse.parse_qsl(parsed.query) if name.lower() == "password"]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
