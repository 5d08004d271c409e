"""The SQLite engine's package listing (``storage.sqlite.listing``): every filter and
cursor agrees with sorting the packages in Python, and a page costs what it shows
wherever it starts in the table (SQLite's own count of the virtual-machine steps it
ran, ``set_progress_handler``)."""

from __future__ import annotations

import random
import sqlite3

from prserv.storage import open_engine

PKGARCHS = ["all", "armv7a", "core2-64", "x86"]


def make_table(path: str, packages: list) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, checksum TEXT NOT NULL, "
                 "value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                     [(version, arch, "c%d" % i, str(i)) for n, (version, arch) in enumerate(packages)
                      for i in range(1 + n % 3)])
    conn.commit()
    conn.close()


async def test_every_filter_and_cursor_agrees_with_sorting_in_python(tmp_path):
    rng = random.Random(27)
    versions = sorted({"%s%d-1.0" % (rng.choice(["a", "ab", "abc", "b", "\u00e9"]), rng.randrange(40))
                       for _ in range(120)})
    packages = sorted({(version, arch) for version in versions for arch in rng.sample(PKGARCHS, rng.randrange(1, 4))},
                      key=lambda p: (p[0].encode(), p[1].encode()))
    path = str(tmp_path / "pr.sqlite3")
    make_table(path, packages)
    engine = await open_engine(path)
    try:
        for prefix in ("", "a", "ab", "abc1", "b", "\u00e9", "z"):
            for arch in [None] + PKGARCHS:
                taken = [p for p in packages if p[0].startswith(prefix) and (arch is None or p[1] == arch)]
                for after in [None, ("", ""), ("a", "zzz"), ("ab", "core2-64"), ("zzz", "")] + rng.sample(packages, 6):
                    expected = [p for p in taken if after is None or p > after][:7]
                    found = await engine.packages(prefix, arch, after, 7)
                    assert [f[:2] for f in found] == expected, (prefix, arch, after)
    finally:
        await engine.close()


async def test_a_page_deep_in_the_table_costs_what_a_first_page_costs(tmp_path):
    packages = [("p%05d-1.0" % n, PKGARCHS[n % 4]) for n in range(20000)]
    path = str(tmp_path / "pr.sqlite3")
    make_table(path, packages)
    engine = await open_engine(path)
    try:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        async def cost(*args) -> int:
            steps[0] = 0
            engine.conn.set_progress_handler(count, 100)
            try:
                found = await engine.packages(*args)
            finally:
                engine.conn.set_progress_handler(None, 0)
            assert len(found) == 50
            return steps[0]

        first, deep = await cost("p", None, None, 50), await cost("p", None, packages[19000], 50)
        assert deep < 2 * first + 20, (first, deep)
        first, deep = await cost("p", "x86", None, 50), await cost("p", "x86", packages[19001], 50)
        assert deep < 2 * first + 20, (first, deep)
    finally:
        await engine.close()


async def test_a_large_packages_latest_value_and_its_time_come_through_the_value_index(tmp_path):
    """A package of 600 values: its listing's latest value and time are those of its
    largest row (read through the value index, not by reading the package)."""
    import asyncio

    from prserv.storage.engine import Giver

    engine = await open_engine(str(tmp_path / "pr.sqlite3"))
    try:
        for n in range(600):
            async with engine.write("big-1.0", "x86", giver=Giver("10.0.0.1")) as scope:
                await scope.store_next("c%d" % n)
        await asyncio.sleep(0)
        history = {row[1]: row[2] for row in await engine.history("big-1.0", "x86")}
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        engine.cache.clear()
        engine.conn.set_progress_handler(count, 100)
        [(version, arch, latest, given)] = await engine.packages("big", None, None, 10)
        engine.conn.set_progress_handler(None, 0)
        assert (version, arch, latest, given) == ("big-1.0", "x86", "599", history["599"])
        assert steps[0] < 60, steps[0]                 # not a read of 600 rows
    finally:
        await engine.close()
