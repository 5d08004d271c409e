"""The PostgreSQL schema, versioned in the database, created and upgraded by servers.

``prmain`` holds bitbake's four columns, three of this project's, and the record's
three (version 3, below):

* ``key numeric[]``: the value as numbers (``'1.20'`` -> ``{1,20}``), so that the
  numeric order of x.y.z (``1 < 1.0 < 1.3 < 1.20``) is an index order: a package's
  largest value, a checksum's bounds and a base's children are index lookups;
* ``id bigserial``: the row's number;
* ``txid xid8``: the transaction that wrote it.  The change feed gives rows in
  ``(txid, id)`` order and only rows of transactions older than every transaction
  still running, so a transaction that commits after a later one is never skipped.

``prserv_store`` makes a write one round trip: under the package's advisory lock
(each statement of the function sees what the lock's previous holder committed) it
re-reads what a decision was made from and inserts only if that is unchanged, else
returns the package as it is now for the server to decide again.  ``prserv_store_next``
stores a checksum with the successor of the package's largest value as it is under
the lock (a sequence's next value), checking only that the checksum's own values are
unchanged: writers of new checksums on several servers then never have to decide
again.

``prserv_users`` (version 2) holds users and their hashed tokens.

Version 3 keeps the record of when each value was given, in three nullable columns
of ``prmain``: ``given timestamptz`` (when the row was stored: ``clock_timestamp()``
under the package's lock, so a package's times follow the order its values were
stored in, whatever the wait for the lock), ``address`` and ``username`` (the
client's, NULL where not recorded).  NULL ``given``: unknown (a row stored before
version 3, or copied by ``prserv copy``).  ``prmain_given`` indexes the times
(partial: only rows that have one, so an upgrade builds it by one read of the table,
with nothing to sort).  The store functions gained the giver's two arguments as
overloads of their own; the version 2 ones stay for servers of version 2 still
running during a rolling upgrade, and ``given``'s default records the time of their
rows (address and user unknown).

``prserv_schema`` holds the schema's version.  A server refuses a newer version,
upgrades an older one in one transaction (``UPGRADES``) and creates a missing one;
all of it under a transaction-scoped advisory lock, so servers starting together
do it once.  Servers of one version run side by side (a rolling restart).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, List

from ...errors import DatabaseError
from ...log import logger

SCHEMA_VERSION = 3
SCHEMA_LOCK = 0x70727365727631      # the advisory lock key taken while creating or upgrading

CREATE = [
    "CREATE TABLE prserv_schema (version integer NOT NULL)",
    "CREATE TABLE prserv_meta (name text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE prmain (
        id bigserial PRIMARY KEY,
        version text COLLATE "C" NOT NULL,
        pkgarch text COLLATE "C" NOT NULL,
        checksum text COLLATE "C" NOT NULL,
        value text COLLATE "C" NOT NULL,
        key numeric[] NOT NULL,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        CONSTRAINT prmain_row UNIQUE (version, pkgarch, checksum, key))""",
    "CREATE INDEX prmain_package_key ON prmain (version, pkgarch, key)",
    # Statistics early and often: without them the planner may look a checksum up
    # through prmain_package_key, reading its whole package.
    "ALTER TABLE prmain SET (autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0.05)",
    "CREATE INDEX prmain_feed ON prmain (txid, id)",
    """CREATE FUNCTION prserv_store(v text, p text, c text, val text, expect boolean, base numeric[],
            upper numeric[], n integer, e_max text, e_min text, e_cmax text, e_child text)
        RETURNS TABLE (added boolean, s_max text, s_min text, s_cmax text, s_child text)
        LANGUAGE plpgsql AS $f$
        DECLARE m text; lo text; hi text; ch text; inserted bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext(v), hashtext(p));
            IF expect THEN
                SELECT t.value INTO m FROM prmain t WHERE t.version = v AND t.pkgarch = p
                    ORDER BY t.key DESC LIMIT 1;
                SELECT t.value INTO lo FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                    ORDER BY t.key LIMIT 1;
                SELECT t.value INTO hi FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                    ORDER BY t.key DESC LIMIT 1;
                IF n IS NOT NULL THEN
                    SELECT t.value INTO ch FROM prmain t WHERE t.version = v AND t.pkgarch = p
                        AND t.key > base AND t.key < upper AND array_length(t.key, 1) = n
                        ORDER BY t.key DESC LIMIT 1;
                END IF;
                IF m IS DISTINCT FROM e_max OR lo IS DISTINCT FROM e_min OR hi IS DISTINCT FROM e_cmax
                        OR ch IS DISTINCT FROM e_child THEN
                    RETURN QUERY SELECT false, m, lo, hi, ch;
                    RETURN;
                END IF;
            END IF;
            INSERT INTO prmain (version, pkgarch, checksum, value, key)
                VALUES (v, p, c, val, string_to_array(val, '.')::numeric[])
                ON CONFLICT DO NOTHING RETURNING id INTO inserted;
            RETURN QUERY SELECT inserted IS NOT NULL, m, lo, hi, ch;
        END $f$""",
    """CREATE FUNCTION prserv_store_next(v text, p text, c text, e_min text, e_cmax text)
        RETURNS TABLE (stored text, s_max text, s_min text, s_cmax text)
        LANGUAGE plpgsql AS $f$
        DECLARE m numeric[]; mv text; lo text; hi text; nxt numeric[];
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext(v), hashtext(p));
            SELECT t.value INTO lo FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                ORDER BY t.key LIMIT 1;
            SELECT t.value INTO hi FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                ORDER BY t.key DESC LIMIT 1;
            SELECT t.key, t.value INTO m, mv FROM prmain t WHERE t.version = v AND t.pkgarch = p
                ORDER BY t.key DESC LIMIT 1;
            IF lo IS DISTINCT FROM e_min OR hi IS DISTINCT FROM e_cmax THEN
                RETURN QUERY SELECT NULL::text, mv, lo, hi;
                RETURN;
            END IF;
            IF m IS NULL THEN
                nxt := ARRAY[0]::numeric[];
            ELSE
                nxt := m;
                nxt[array_length(m, 1)] := m[array_length(m, 1)] + 1;
            END IF;
            INSERT INTO prmain (version, pkgarch, checksum, value, key)
                VALUES (v, p, c, array_to_string(nxt, '.'), nxt);
            RETURN QUERY SELECT array_to_string(nxt, '.'), mv, lo, hi;
        END $f$""",
]
"""Version 1, from nothing."""

USERS_DDL = ("CREATE TABLE prserv_users (username text PRIMARY KEY, permissions text NOT NULL, "
             "token_hash text NOT NULL, salt text NOT NULL, created double precision NOT NULL, "
             "expires double precision)")
"""Users and their hashed tokens (``prserv.tokens``); never in dumps or the feed."""

CREATE.append(USERS_DDL)

RECORD_DDL = [
    # Nullable without a default: instant, and every existing row reads NULL (unknown).
    # The default set afterwards applies to rows inserted from now on only.
    "ALTER TABLE prmain ADD COLUMN given timestamptz, ADD COLUMN address text, ADD COLUMN username text",
    "ALTER TABLE prmain ALTER COLUMN given SET DEFAULT clock_timestamp()",
    "CREATE INDEX prmain_given ON prmain (given) WHERE given IS NOT NULL",
    """CREATE FUNCTION prserv_store(v text, p text, c text, val text, expect boolean, base numeric[],
            upper numeric[], n integer, e_max text, e_min text, e_cmax text, e_child text,
            g_address text, g_user text)
        RETURNS TABLE (added boolean, s_max text, s_min text, s_cmax text, s_child text)
        LANGUAGE plpgsql AS $f$
        DECLARE m text; lo text; hi text; ch text; inserted bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext(v), hashtext(p));
            IF expect THEN
                SELECT t.value INTO m FROM prmain t WHERE t.version = v AND t.pkgarch = p
                    ORDER BY t.key DESC LIMIT 1;
                SELECT t.value INTO lo FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                    ORDER BY t.key LIMIT 1;
                SELECT t.value INTO hi FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                    ORDER BY t.key DESC LIMIT 1;
                IF n IS NOT NULL THEN
                    SELECT t.value INTO ch FROM prmain t WHERE t.version = v AND t.pkgarch = p
                        AND t.key > base AND t.key < upper AND array_length(t.key, 1) = n
                        ORDER BY t.key DESC LIMIT 1;
                END IF;
                IF m IS DISTINCT FROM e_max OR lo IS DISTINCT FROM e_min OR hi IS DISTINCT FROM e_cmax
                        OR ch IS DISTINCT FROM e_child THEN
                    RETURN QUERY SELECT false, m, lo, hi, ch;
                    RETURN;
                END IF;
            END IF;
            INSERT INTO prmain (version, pkgarch, checksum, value, key, given, address, username)
                VALUES (v, p, c, val, string_to_array(val, '.')::numeric[], clock_timestamp(), g_address, g_user)
                ON CONFLICT DO NOTHING RETURNING id INTO inserted;
            RETURN QUERY SELECT inserted IS NOT NULL, m, lo, hi, ch;
        END $f$""",
    """CREATE FUNCTION prserv_store_next(v text, p text, c text, e_min text, e_cmax text,
            g_address text, g_user text)
        RETURNS TABLE (stored text, s_max text, s_min text, s_cmax text)
        LANGUAGE plpgsql AS $f$
        DECLARE m numeric[]; mv text; lo text; hi text; nxt numeric[];
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext(v), hashtext(p));
            SELECT t.value INTO lo FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                ORDER BY t.key LIMIT 1;
            SELECT t.value INTO hi FROM prmain t WHERE t.version = v AND t.pkgarch = p AND t.checksum = c
                ORDER BY t.key DESC LIMIT 1;
            SELECT t.key, t.value INTO m, mv FROM prmain t WHERE t.version = v AND t.pkgarch = p
                ORDER BY t.key DESC LIMIT 1;
            IF lo IS DISTINCT FROM e_min OR hi IS DISTINCT FROM e_cmax THEN
                RETURN QUERY SELECT NULL::text, mv, lo, hi;
                RETURN;
            END IF;
            IF m IS NULL THEN
                nxt := ARRAY[0]::numeric[];
            ELSE
                nxt := m;
                nxt[array_length(m, 1)] := m[array_length(m, 1)] + 1;
            END IF;
            INSERT INTO prmain (version, pkgarch, checksum, value, key, given, address, username)
                VALUES (v, p, c, array_to_string(nxt, '.'), nxt, clock_timestamp(), g_address, g_user);
            RETURN QUERY SELECT array_to_string(nxt, '.'), mv, lo, hi;
        END $f$""",
]
"""Version 3: the record of when each value was given (the module's docstring)."""

CREATE.extend(RECORD_DDL)

UPGRADES: List[List[str]] = [
    [USERS_DDL],                # 1 -> 2: users
    RECORD_DDL,                 # 2 -> 3: the record of when each value was given
]
"""``UPGRADES[n - 1]`` takes version n to n + 1."""


async def ensure(connection: Any, read_only: bool, shown_url: str) -> None:
    """Check (read-only) or create / upgrade (read-write) the schema; a read-write
    open also gathers the table's statistics if nobody ever did (a table filled by
    ``prserv copy``, say), so that every lookup is planned through its index."""
    if read_only:
        version = await _version(connection)
        if version is None:
            raise DatabaseError("%s has no prserv schema (a read-only server never creates it; "
                                "start a read-write server on it once)" % shown_url)
        _refuse_newer(version, shown_url)
        if version < SCHEMA_VERSION:
            raise DatabaseError("%s has prserv schema version %d; this server needs %d (a read-write "
                                "server upgrades it)" % (shown_url, version, SCHEMA_VERSION))
        return
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        version = await _version(connection)
        if version is None:
            for statement in CREATE:
                await connection.execute(statement)
            await connection.execute("INSERT INTO prserv_schema (version) VALUES ($1)", SCHEMA_VERSION)
            await connection.execute("INSERT INTO prserv_meta (name, value) VALUES ('identity', $1)",
                                     "pg-" + uuid.uuid4().hex)
            return
        _refuse_newer(version, shown_url)
        if version < SCHEMA_VERSION:
            started = time.monotonic()
            logger.info("upgrading the prserv schema of %s from version %d to %d (one transaction: "
                        "writers wait for it)", shown_url, version, SCHEMA_VERSION)
            for step in range(version, SCHEMA_VERSION):
                for statement in UPGRADES[step - 1]:
                    await connection.execute(statement)
            await connection.execute("UPDATE prserv_schema SET version = $1", SCHEMA_VERSION)
            logger.info("upgraded the prserv schema of %s to version %d in %.1f s", shown_url, SCHEMA_VERSION,
                        time.monotonic() - started)
    # Whether the table has rows is asked of the table: the statistics views' row
    # counts reach them up to a second after a commit (a table filled just now by
    # ``prserv copy`` read as empty there, and was left to be planned blind).
    never_analyzed = await connection.fetchval(
        "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL AND EXISTS (SELECT 1 FROM prmain) "
        "FROM pg_stat_user_tables WHERE relname = 'prmain'")
    if never_analyzed:
        await connection.execute("ANALYZE prmain")


def _refuse_newer(version: int, shown_url: str) -> None:
    if version > SCHEMA_VERSION:
        raise DatabaseError("%s has prserv schema version %d, newer than this server knows (%d): "
                            "upgrade this server" % (shown_url, version, SCHEMA_VERSION))


async def _version(connection: Any) -> Any:
    exists = await connection.fetchval("SELECT to_regclass('prserv_schema') IS NOT NULL")
    if not exists:
        return None
    return await connection.fetchval("SELECT max(version) FROM prserv_schema")
