"""The record of when each value was given, read from PostgreSQL (schema version 3).

``prmain.given`` is a ``timestamptz``, for whoever reads the table with SQL; the
storage interface counts microseconds since the epoch (UTC), converted here, exactly
(asyncpg gives and takes ``datetime`` with microseconds).  Every query is a constant
text; the times, positions and limits are parameters.

``recent`` gives rows newest first by ``id`` (the order rows were inserted in, which
the change feed follows too, but for a transaction committing after a later one):
a position names its row by ``id``.  With ``since``, the time index finds the first
row given since then (one seek: the smallest time at or after it) and the rows from
that row's ``id`` on are read by ``id``, newest first, keeping those given at or after
``since``: a page reads what it shows, whatever the plan (the engine's connections
use generic plans, which cannot know how many rows a time range holds).  Ids grow
with time but for rows stored at the same microsecond by concurrent writers, so a
row stored a few microseconds before the first one found may be left out.
"""

from __future__ import annotations

import datetime
from typing import Any, List, Optional

from ... import timestamps
from ..engine import Given, HistoryRow, RecentRow

LAST_ID = 2 ** 63 - 1
"""Past every ``id`` (a bigint): the bound of ``recent`` from the newest row on (its
other bounds are the ``id`` of a feed position, ``feed.position_parts``)."""

HISTORY = ("SELECT checksum, value, given, address, username FROM prmain WHERE version = $1 AND pkgarch = $2 "
           "ORDER BY key, id")
RECENT = ("SELECT txid::text, id, version, pkgarch, checksum, value, given, address, username FROM prmain "
          "WHERE id < $1 ORDER BY id DESC LIMIT $2")
RECENT_SINCE = ("SELECT txid::text, id, version, pkgarch, checksum, value, given, address, username FROM prmain "
                "WHERE id < $1 AND id >= (SELECT first.id FROM prmain AS first WHERE first.given >= $3 "
                "ORDER BY first.given LIMIT 1) AND given >= $3 ORDER BY id DESC LIMIT $2")
GIVEN_SINCE = "SELECT count(*) FROM prmain WHERE given >= $1"
FORGET_CLIENTS = ("UPDATE prmain SET address = NULL, username = NULL WHERE given < $1 "
                  "AND (address IS NOT NULL OR username IS NOT NULL)")


_ROWS = "unnest($1::text[], $2::text[], $3::text[], $4::text[])"
ADD_ROWS_GIVEN = (
    "WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], "
    "$6::text[], $7::text[]) AS r (v, p, c, x, g, a, u)), "
    "kept AS (UPDATE prmain SET given = r.g, address = r.a, username = r.u FROM r WHERE prmain.version = r.v "
    "AND prmain.pkgarch = r.p AND prmain.checksum = r.c AND prmain.value = r.x AND prmain.given IS NULL "
    "AND r.g IS NOT NULL RETURNING 1) "
    "INSERT INTO prmain (version, pkgarch, checksum, value, key, given, address, username) "
    "SELECT v, p, c, x, string_to_array(x, '.')::numeric[], g, a, u FROM r ON CONFLICT DO NOTHING")
"""Copied rows with their records, one statement: new rows are inserted with theirs, a
row held without a time gains the one given (both see the statement's snapshot)."""
RECORDS_OF = ("SELECT r.n, t.given, t.address, t.username FROM " + _ROWS + " WITH ORDINALITY AS r (v, p, c, x, n) "
              "JOIN prmain AS t ON t.version = r.v AND t.pkgarch = r.p AND t.checksum = r.c AND t.value = r.x "
              "WHERE t.given IS NOT NULL")


def given_columns(given: Any) -> List[List[Any]]:
    """The time, address and user columns of ``ADD_ROWS_GIVEN`` for each row's record
    (None, or a record without a time: none)."""
    columns: List[List[Any]] = [[], [], []]
    for record in given:
        known = record is not None and record[0] is not None
        columns[0].append(moment_of(record[0]) if known else None)      # type: ignore[index]
        columns[1].append(record[1] if known else None)                 # type: ignore[index]
        columns[2].append(record[2] if known else None)                 # type: ignore[index]
    return columns


def records_in_order(found: Any, count: int) -> List[Optional[Given]]:
    """``RECORDS_OF``'s rows as one record (or None) per row asked about, in order."""
    records: List[Optional[Given]] = [None] * count
    for n, given, address, username in found:
        records[n - 1] = (micros(given), address, username)
    return records


def micros(moment: Optional[datetime.datetime]) -> Optional[int]:
    """A ``timestamptz`` as microseconds since the epoch (None stays None)."""
    if moment is None:
        return None
    return timestamps.micros(moment)


_EARLIEST = micros(datetime.datetime.min.replace(tzinfo=datetime.timezone.utc))
_LATEST = micros(datetime.datetime.max.replace(tzinfo=datetime.timezone.utc))


def moment_of(micros_since_epoch: int) -> datetime.datetime:
    """Microseconds since the epoch as a ``timestamptz`` parameter (held to the years
    1 to 9999, which hold every time a row can have)."""
    clamped = min(max(int(micros_since_epoch), _EARLIEST), _LATEST)     # type: ignore[type-var]
    return timestamps.datetime_of(clamped)


def history_rows(found: Any) -> List[HistoryRow]:
    """``HISTORY``'s rows as the interface gives them."""
    return [(row[0], row[1], micros(row[2]), row[3], row[4]) for row in found]


def recent_rows(found: Any) -> List[RecentRow]:
    """``RECENT``'s rows, positioned as the change feed positions them."""
    return [("%s:%d" % (row[0], row[1]), row[2], row[3], row[4], row[5], micros(row[6]), row[7], row[8])
            for row in found]
