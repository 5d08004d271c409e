"""A package's history and the values given lately, as the HTTP API gives them.

``GET /api/v1/history`` lists one item per row (without history, a checksum that was
bumped holds several values), ordered as the values are: by their numbers, field by
field (``9`` before ``10``, ``1.9`` before ``1.10``), ties by checksum, and a legacy
value that is not a revision after all of them.  ``latest`` is the largest value, as
get-pr sees it.  ``GET /api/v1/recent`` lists rows newest first.

Each item says when its value was given (``given``: RFC 3339, UTC, to the
microsecond; null when the record does not know) and, to viewers that may write,
to whom (``address``, ``user``); to other viewers those two keys are absent, not
null, so that an answer never suggests a record it hides.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from ..revision import RevisionKey, key_to_revision, optional_key
from ..storage.engine import HistoryRow, RecentRow

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))\Z")


def now_us() -> int:
    """Now, in microseconds since the epoch (as the record keeps times)."""
    return time.time_ns() // 1000


def rfc3339(microseconds: Optional[int]) -> Optional[str]:
    """``2026-12-06T10:00:00.123456Z`` for a time in microseconds since the epoch."""
    if microseconds is None:
        return None
    moment = _EPOCH + datetime.timedelta(microseconds=microseconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time (a zone is required:
    ``Z`` or ``+HH:MM``); ``ValueError`` saying what is expected.  The form ``rfc3339``
    writes is read without the general pattern (a page of a thousand rows reads a
    thousand of them)."""
    if len(text) == 27 and text[26] == "Z" and text[10] == "T" and text[19] == ".":
        try:
            moment = datetime.datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                                       int(text[14:16]), int(text[17:19]), int(text[20:26]),
                                       tzinfo=datetime.timezone.utc)
            if text[4] == text[7] == "-" and text[13] == text[16] == ":" and text[20:26].isdigit():
                return (moment - _EPOCH) // datetime.timedelta(microseconds=1)
        except ValueError:
            pass                                # not quite that form: the pattern says what is wrong
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError("expected an RFC 3339 time such as 2026-12-06T08:00:00Z, not %.40r" % text)
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    offset = datetime.timedelta(0)
    if match.group(9):
        offset = datetime.timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        offset = offset if match.group(9) == "+" else -offset
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second, int(fraction),
                                   tzinfo=datetime.timezone(offset))
    except ValueError as exc:
        raise ValueError("not a time: %.40r (%s)" % (text, exc)) from None
    return (moment - _EPOCH) // datetime.timedelta(microseconds=1)


def _order(row: HistoryRow) -> Tuple[int, Any, str]:
    key = optional_key(row[1])
    if key is None:
        return (1, str(row[1]), row[0])
    return (0, key, row[0])


def _item(fields: Dict[str, Any], given: Optional[int], address: Optional[str], user: Optional[str],
          show_clients: bool) -> Dict[str, Any]:
    fields["given"] = rfc3339(given)
    if show_clients:
        fields["address"], fields["user"] = address, user
    return fields


def history_document(version: str, pkgarch: str, rows: List[HistoryRow], show_clients: bool) -> Dict[str, Any]:
    """The answer for one package's rows (``rows`` not empty)."""
    ordered = sorted(rows, key=_order)
    keys = [key for key in (optional_key(row[1]) for row in ordered) if key is not None]
    latest: Optional[RevisionKey] = max(keys) if keys else None
    return {"version": version, "pkgarch": pkgarch,
            "latest": None if latest is None else key_to_revision(latest),
            "history": [_item({"checksum": checksum, "value": value}, given, address, user, show_clients)
                        for checksum, value, given, address, user in ordered]}


def recent_items(rows: List[RecentRow], show_clients: bool) -> List[Dict[str, Any]]:
    """The items of ``/api/v1/recent``, newest first as ``rows`` are."""
    return [_item({"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value},
                  given, address, user, show_clients)
            for _, version, pkgarch, checksum, value, given, address, user in rows]
