"""The PostgreSQL change feed: rows in the order of the transactions that wrote them.

Rows are given in ``(txid, id)`` order, and only rows of transactions older than
every transaction still running (``HORIZON``), so a transaction that commits after
a later one is never skipped.  A position is ``"<txid>:<id>"``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ...errors import InvalidRequestError
from ..engine import FeedPage, Position, PositionedRow
from .record import micros

HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"
"""Transactions below this are finished: their rows can be fed without a gap.

The feed's queries select ``txid::text`` and order by ``prmain.txid``: a bare
``ORDER BY txid`` names the output column, the text, and "1000" sorts before "999"."""

ROWS_AFTER = ("SELECT txid::text, id, version, pkgarch, checksum, value, given FROM prmain "
              "WHERE (txid, id) > ($1::text::xid8, $2) AND txid < %s ORDER BY prmain.txid, prmain.id LIMIT $3"
              % HORIZON)
"""The feed's rows, each with its time (``given``: a column of the rows read anyway)."""
ROWS_BETWEEN = ("SELECT txid::text, id, version, pkgarch, checksum, value FROM prmain "
                "WHERE (txid, id) > ($1::text::xid8, $2) AND (txid, id) <= ($3::text::xid8, $4) "
                "AND txid < %s ORDER BY prmain.txid, prmain.id" % HORIZON)
ANY_AFTER = ("SELECT EXISTS (SELECT 1 FROM prmain WHERE (txid, id) > ($1::text::xid8, $2) AND txid < %s)"
             % HORIZON)
"""Whether a committed row follows a position (``wait_for_changes`` polls this)."""


def position_parts(position: Optional[Position]) -> Tuple[str, int]:
    """(transaction id as text, row id) of a feed position ``"<txid>:<id>"``."""
    if position is None:
        return "0", 0
    if isinstance(position, str):
        txid, _, row = position.partition(":")
        if txid.isdigit() and row.isdigit() and txid.isascii() and row.isascii():
            return txid, int(row)
    raise InvalidRequestError("not a position of this database: %r" % (position,))


def positioned(found: Any) -> List[PositionedRow]:
    """Rows selected as (txid, id, version, pkgarch, checksum, value, ...), positioned."""
    return [("%s:%d" % (r[0], r[1]), r[2], r[3], r[4], r[5]) for r in found]


def positioned_given(found: Any) -> List[Tuple[Any, ...]]:
    """Rows selected as ``ROWS_AFTER`` gives them, positioned, each followed by its
    time in microseconds since the epoch (None: unknown)."""
    return [("%s:%d" % (r[0], r[1]), r[2], r[3], r[4], r[5], micros(r[6])) for r in found]


async def read_page(connection: Any, since: Optional[Position], limit: int, count: bool,
                    with_given: bool = False) -> FeedPage:
    """Up to ``limit`` rows after ``since``, whether ``since`` is held here (and its
    row), and with ``count`` how many more rows are pending.  ``with_given``: each row
    followed by its time (``positioned_given``)."""
    txid, row = position_parts(since)
    identity = await connection.fetchval("SELECT value FROM prserv_meta WHERE name = 'identity'")
    found = await connection.fetch(ROWS_AFTER, txid, row, max(0, limit))
    rows: List[Any] = positioned_given(found) if with_given else positioned(found)
    reached, at = True, None
    if since is not None:
        at_row = await connection.fetchrow(
            "SELECT version, pkgarch, checksum, value FROM prmain WHERE id = $2 "
            "AND txid = $1::text::xid8", txid, row)
        at = None if at_row is None else tuple(at_row)
        reached = at is not None or bool(rows) or await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM prmain WHERE (txid, id) > ($1::text::xid8, $2))", txid, row)
    pending = None
    if count:
        last_txid, last_row = position_parts(rows[-1][0]) if rows else (txid, row)
        pending = await connection.fetchval(
            "SELECT count(*) FROM prmain WHERE (txid, id) > ($1::text::xid8, $2) AND txid < %s"
            % HORIZON, last_txid, last_row)
    return FeedPage(identity, True, True, reached, at, rows, pending)  # type: ignore[arg-type]
