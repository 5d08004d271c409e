"""Checking the fields of a request before anything is looked up or stored.

Each helper returns the field's value or raises ``InvalidRequestError`` naming the
field and what was wrong (the server prefixes the method: ``get-pr: field
'version' must be a string, not a number``; docs/protocol.md §8).  bitbake's server
went by truthiness and stored whatever it got; this server refuses instead.
"""

from __future__ import annotations

import time
from typing import Any, Dict, FrozenSet, Optional, Tuple

from ..asyncrpc.protocol import describe_json_type
from ..errors import InvalidRequestError, InvalidRevisionError
from ..messages import MAX_POSITION_LENGTH
from ..revision import MAX_REVISION_LENGTH, is_revision
from ..tokens import PERMISSIONS, check_username, parse_permissions

_MISSING = object()


def arguments(request: Any) -> Dict[str, Any]:
    """The request's argument: a JSON object."""
    if not isinstance(request, dict):
        raise InvalidRequestError("the argument must be a JSON object, not %s" % describe_json_type(request))
    return request


def text(args: Dict[str, Any], name: str) -> str:
    """A required, non-empty string field."""
    value = args.get(name, _MISSING)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r" % name)
    if not isinstance(value, str):
        raise InvalidRequestError("field %r must be a string, not %s" % (name, describe_json_type(value)))
    if not value:
        raise InvalidRequestError("field %r must not be empty" % name)
    return storable(value, name)


def storable(value: str, name: str) -> str:
    """``value`` if it can be stored: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which are not text (SQLite takes UTF-8)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError("field %r is not valid Unicode text (a lone surrogate)"
                                      % name) from None
    return value


def checksum_fields(args: Dict[str, Any]) -> Tuple[str, str, str]:
    """``version``, ``pkgarch``, ``checksum``: required, non-empty strings.

    Checked together in one expression first (the every-request case), field by
    field only to name what is wrong."""
    version, pkgarch, checksum = args.get("version"), args.get("pkgarch"), args.get("checksum")
    if type(version) is str and type(pkgarch) is str and type(checksum) is str \
            and version.isascii() and pkgarch.isascii() and checksum.isascii() \
            and version and pkgarch and checksum:
        return version, pkgarch, checksum
    return text(args, "version"), text(args, "pkgarch"), text(args, "checksum")


def export_filter(args: Dict[str, Any], name: str) -> Optional[str]:
    """An export filter: a string, or null / "" for any."""
    value = args.get(name, _MISSING)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r (use null for any)" % name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError("field %r must be a string or null, not %s" % (name, describe_json_type(value)))
    return storable(value, name) if value else None


def flag(args: Dict[str, Any], name: str, default: Any = _MISSING) -> bool:
    """A JSON boolean field; ``default`` when absent, if given.  Nothing else: the
    reference goes by truthiness, so the string "false" meant true there."""
    value = args.get(name, default)
    if value is _MISSING:
        raise InvalidRequestError("missing field %r" % name)
    if isinstance(value, bool):
        return value
    raise InvalidRequestError("field %r must be true or false, not %s" % (name, describe_json_type(value)))


def import_value_text(value: object) -> str:
    """The text stored for an import-one value (a revision string or a non-negative
    integer); ``InvalidRevisionError`` for anything else."""
    if isinstance(value, bool):
        raise InvalidRevisionError("import value must be a revision, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise InvalidRevisionError("import value must not be negative: %d" % value)
        value = str(value)
        if is_revision(value):
            return value
    elif isinstance(value, str) and is_revision(value):
        return value
    shown = repr(value) if len(repr(value)) < 80 else repr(value)[:80] + "..."
    raise InvalidRevisionError("import value is not a revision (dotted decimal integers, "
                               "no leading zeros, at most %d characters): %s" % (MAX_REVISION_LENGTH, shown))


def position(args: Dict[str, Any], name: str, optional: bool = True) -> Optional[str]:
    """A change-feed position: a non-empty string (null for the beginning, if allowed)."""
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_POSITION_LENGTH:
        raise InvalidRequestError("field %r must be a position (a string%s), not %s"
                                  % (name, " or null" if optional else "", describe_json_type(value)))
    return storable(value, name)


def bounded_number(args: Dict[str, Any], name: str, lowest: float, highest: float, default: float) -> float:
    """A JSON number field within [lowest, highest] (``default`` when absent)."""
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= highest:
        raise InvalidRequestError("field %r must be a number from %g to %g" % (name, lowest, highest))
    return value


def username(args: Dict[str, Any]) -> str:
    """A user name field (``prserv.tokens.check_username``)."""
    name = text(args, "username")
    try:
        return check_username(name)
    except ValueError as exc:
        raise InvalidRequestError("field 'username': %s" % exc) from None


def permissions(args: Dict[str, Any]) -> FrozenSet[str]:
    """A list of permission names (``read``, ``write``, ``mirror``, ``admin``)."""
    value = args.get("permissions", _MISSING)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequestError("field 'permissions' must be a list of names (%s)" % ", ".join(PERMISSIONS))
    try:
        return parse_permissions(value)
    except ValueError as exc:
        raise InvalidRequestError("field 'permissions': %s" % exc) from None


def expiry(args: Dict[str, Any]) -> Optional[float]:
    """``expires``: a Unix time in the future, or null/absent for never."""
    value = args.get("expires")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > time.time():
        raise InvalidRequestError("field 'expires' must be a Unix time in the future, or null")
    return float(value)
