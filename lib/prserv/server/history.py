"""A package's history as the HTTP API gives it: every row, in numeric value order.

``GET /api/v1/history`` lists one item per row (without history, a checksum that was
bumped holds several values), ordered as the values are: by their numbers, field by
field (``9`` before ``10``, ``1.9`` before ``1.10``), ties by checksum, and a legacy
value that is not a revision after all of them.  ``latest`` is the largest value, as
get-pr sees it.  The rows come from the engine's export of the package, so every
engine and every kind of server (a mirror too) answers alike.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..revision import RevisionKey, key_to_revision, optional_key
from ..storage.engine import Engine, Row


def _order(row: Row) -> Tuple[int, Any, str]:
    key = optional_key(row[3])
    if key is None:
        return (1, str(row[3]), row[2])
    return (0, key, row[2])


def history_document(version: str, pkgarch: str, rows: List[Row]) -> Dict[str, Any]:
    """The answer for one package's rows (``rows`` not empty)."""
    ordered = sorted(rows, key=_order)
    keys = [key for key in (optional_key(row[3]) for row in ordered) if key is not None]
    latest: Optional[RevisionKey] = max(keys) if keys else None
    return {"version": version, "pkgarch": pkgarch,
            "latest": None if latest is None else key_to_revision(latest),
            "history": [{"checksum": row[2], "value": row[3], "given": None} for row in ordered]}


async def package_rows(engine: Engine, version: str, pkgarch: str) -> List[Row]:
    """Every row of the package (``export_batches`` with history, both filters set)."""
    rows: List[Row] = []
    async for batch in engine.export_batches(version, pkgarch, None, True):
        rows.extend(batch)
    return rows
