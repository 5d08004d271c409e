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

from typing import Any, Dict, List, Optional, Tuple

from ..revision import RevisionKey, key_to_revision, optional_key
from ..storage.engine import HistoryRow, RecentRow
from ..timestamps import rfc3339


def _order(keyed: Tuple[Optional[RevisionKey], HistoryRow]) -> Tuple[int, Any, str]:
    key, row = keyed
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
    ordered = sorted(((optional_key(row[1]), row) for row in rows), key=_order)
    latest = next((key for key, _ in reversed(ordered) if key is not None), None)   # revisions sort first
    return {"version": version, "pkgarch": pkgarch,
            "latest": None if latest is None else key_to_revision(latest),
            "history": [_item({"checksum": checksum, "value": value}, given, address, user, show_clients)
                        for _, (checksum, value, given, address, user) in ordered]}


def recent_items(rows: List[RecentRow], show_clients: bool) -> List[Dict[str, Any]]:
    """The items of ``/api/v1/recent``, newest first as ``rows`` are."""
    return [_item({"version": version, "pkgarch": pkgarch, "checksum": checksum, "value": value},
                  given, address, user, show_clients)
            for _, version, pkgarch, checksum, value, given, address, user in rows]
