"""Times as the record of when values were given keeps them: integer microseconds
since the epoch (UTC), and their RFC 3339 text (``2026-12-06T10:00:00.123456Z``), the
one form the API writes and the form it reads from clients.  The one place both
directions are written: storage, the HTTP API, the pages and the tools use it.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Optional

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MICROSECOND = datetime.timedelta(microseconds=1)
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))\Z")


def now_us() -> int:
    """Now, in microseconds since the epoch (as the record keeps times)."""
    return time.time_ns() // 1000


def rfc3339(microseconds: Optional[int]) -> Optional[str]:
    """``2026-12-06T10:00:00.123456Z`` for a time in microseconds since the epoch."""
    if microseconds is None:
        return None
    return datetime_of(microseconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
                return micros(moment)
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
    return micros(moment)


def micros(moment: datetime.datetime) -> int:
    """A time zone-aware ``datetime`` as microseconds since the epoch."""
    return (moment - EPOCH) // _MICROSECOND


def datetime_of(microseconds: int) -> datetime.datetime:
    """Microseconds since the epoch as a UTC ``datetime``."""
    return EPOCH + datetime.timedelta(microseconds=microseconds)

