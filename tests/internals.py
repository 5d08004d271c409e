"""Reaching into an in-process server, for tests that set up state faster than the
wire allows or watch what the wire cannot show (commits, the checkpointer)."""

from __future__ import annotations

import asyncio

from prserv.db import PRTable


def table_of(server) -> PRTable:
    """bitbake's ``PRTable`` over a running server's own engine (its writes join the
    server's group commit)."""
    return PRTable(server.engine)


async def committed(server) -> None:
    """Wait until everything the server has written so far is committed."""
    gate = server.engine.answer_gate()
    if gate is None:
        return
    waiter = asyncio.get_running_loop().create_future()
    gate.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
    await waiter


async def store_rows(server, rows) -> None:
    """Rows ``(version, pkgarch, checksum, value)`` stored straight into the server's
    database in one transaction (fast): through bitbake's ``PRTable`` on a SQLite
    file, with one ``executemany`` on PostgreSQL."""
    engine = server.engine
    if hasattr(engine, "pool"):
        async with engine.pool.acquire() as connection:
            await connection.executemany(
                "INSERT INTO prmain (version, pkgarch, checksum, value, key) VALUES "
                "($1, $2, $3, $4, string_to_array($4, '.')::numeric[])", rows)
        return
    table = table_of(server)
    with table.transaction():
        for row in rows:
            table.importone(*row)
