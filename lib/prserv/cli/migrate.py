"""``prserv migrate DB``: the tables of bitbake <= 2.8 copied into ``PRMAIN``, once.

The migration itself is ``prserv.storage.sqlite.migrate``, which also runs on every
read-write open; this command runs it on purpose and reports what it did.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import DatabaseError
from ..storage.sqlite import migrate
from ..storage.sqlite.database import SQLiteDatabase
from .output import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, Failure, Output, exit_statuses


@exit_statuses({EXIT_INCOMPLETE: "some rows skipped (their value is not a revision)"})
def cmd_migrate(args: argparse.Namespace, out: Output) -> int:
    """``prserv migrate DB``: open the file read-write (which migrates) and report.

    Exits with ``EXIT_INCOMPLETE`` when this run skipped rows whose value is not a
    revision, as ``import-file`` does for lines it skips: a script must not take a
    partial copy for a whole one (the warnings quote the rows)."""
    if not os.path.isfile(args.database):          # opening it read-write would create it
        raise Failure(EXIT_USAGE, "no database file %s" % args.database)
    try:
        database = SQLiteDatabase(args.database)
    except DatabaseError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    try:
        summary = database.migration
        record = migrate.completion_record(database.connection) if summary is None else None
    finally:
        database.close()
    document, text = _report(database.filename, summary, record)
    out.result(document, text)
    return EXIT_INCOMPLETE if summary is not None and summary.rows_invalid else EXIT_OK


def _report(database: str, summary: Optional[migrate.MigrationSummary],
            record: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], str]:
    """``prserv migrate``'s JSON document and text: migrated now, before, or nothing to do."""
    if summary is not None:
        text = "\n".join(summary.lines() + ["warning: %s" % warning for warning in summary.warnings])
        return {"database": database, "status": "migrated", "summary": summary.as_dict()}, text
    if record is not None:
        text = "%s was already migrated on %s (%d rows copied then): nothing to do" % (
            database, record["applied_at"], record["rows_copied"])
        return {"database": database, "status": "already-migrated", "summary": record["summary"]}, text
    text = "%s has no rows in tables of bitbake <= 2.8 (%s): nothing to migrate" % (
        database, ", ".join(migrate.LEGACY_TABLES))
    return {"database": database, "status": "nothing-to-migrate", "summary": None}, text


def add_commands(command: Callable[..., Any]) -> None:
    """Add this module's ``prserv`` subcommands (``command(name, handler, help)``)."""
    sub = command("migrate", cmd_migrate,
                  "copy the values of a database of bitbake <= 2.8 (PRMAIN_nohist) into PRMAIN, once")
    sub.add_argument("database", metavar="DB", help="the SQLite file")
