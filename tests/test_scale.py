"""Bounded resources on big databases: memory by a budget and no request that reads a
whole package, against real server processes on generated databases."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import List

import prserv
from processes import start_process, status_kib

A = "core2-64"
DDL = ("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
       "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")


def generate(path, packages: List[tuple]) -> None:
    """A database of ``(name, rows)`` packages, written directly in bitbake's schema."""
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(DDL)
    for name, rows in packages:
        conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                         ((name, A, "%s-%064x" % (name, i), str(i)) for i in range(rows)))
    conn.commit()
    conn.close()


async def test_memory_stays_under_the_budget_whatever_is_touched(tmp_path):
    """Every package touched, large and small: the server's RSS grows by less than its
    cache budget plus a fixed slack (a whole-package cache grew by about 280 bytes a row:
    some 70 MB here)."""
    generate(tmp_path / "pr.sqlite3", [("large%d" % i, 2000) for i in range(60)] +
             [("small%d" % i, 50) for i in range(2000)])
    budget_kib = 4096
    process, address, _ = start_process(tmp_path, "--cache-size", "%dK" % budget_kib)
    try:
        async with await prserv.create_async_client(address) as client:
            assert await client.test_pr("large0", A, "large0-%064x" % 5) == "5"
            baseline = status_kib(process.pid, "VmRSS")
            for i in range(60):
                for n in range(0, 2000, 97):
                    assert await client.test_pr("large%d" % i, A, "large%d-%064x" % (i, n)) == str(n)
                assert await client.getPR("large%d" % i, A, "new") == "2000"
            for i in range(2000):
                assert await client.test_pr("small%d" % i, A, "small%d-%064x" % (i, 7)) == "7"
            grown = status_kib(process.pid, "VmHWM") - baseline
        assert grown < budget_kib + 8 * 1024, "RSS grew by %d KiB" % grown
    finally:
        process.terminate()
        assert process.wait(20) == 0


async def test_a_large_packages_first_request_does_not_hold_up_others(tmp_path):
    """The first get-pr on a package of 300,000 checksums reads a few rows, not the
    package (0.5 s before): a ping sent meanwhile on another connection is answered at
    once."""
    generate(tmp_path / "pr.sqlite3", [("huge", 300000)])
    process, address, _ = start_process(tmp_path)
    try:
        async with await prserv.create_async_client(address) as first, \
                await prserv.create_async_client(address) as other:
            assert await other.ping() == {"alive": True}
            started = time.monotonic()
            answer, pong = await asyncio.gather(first.getPR("huge", A, "new"), other.ping())
            elapsed = time.monotonic() - started
            assert (answer, pong) == ("300000", {"alive": True})
            assert elapsed < 0.1, "first request on the package took %.3f s" % elapsed
    finally:
        process.terminate()
        assert process.wait(20) == 0
