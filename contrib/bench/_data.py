"""Generated PR databases for the benchmarks: packages ``pkgNNNNN-1.0-r0`` of
checksums valued 0, 1, 2... written straight into bitbake's schema, and the requests
that ask about them (shared by scale.py and mirror.py; standard library only)."""

from __future__ import annotations

import sqlite3
import time
from typing import Iterable, Tuple

DDL = ("CREATE TABLE PRMAIN (version TEXT NOT NULL, pkgarch TEXT NOT NULL, "
       "checksum TEXT NOT NULL, value TEXT, PRIMARY KEY (version, pkgarch, checksum, value))")
ARCH = "core2-64"


def package(n: int) -> str:
    return "pkg%05d-1.0-r0" % n


def checksum(package_index: int, n: int) -> str:
    return "%08x%056x" % (package_index, n)


def make_database(path: str, packages: int, per_package: int,
                  extra: Iterable[Tuple[str, str, str, str]] = ()) -> float:
    """Write the database (and ``extra`` rows); the seconds it took."""
    started = time.monotonic()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(DDL)
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)",
                     ((package(p), ARCH, checksum(p, n), str(n))
                      for p in range(packages) for n in range(per_package)))
    conn.executemany("INSERT INTO PRMAIN VALUES (?, ?, ?, ?)", extra)
    conn.commit()
    conn.close()
    return time.monotonic() - started


def test_pr(name: str, digest: str) -> dict:
    return {"test-pr": {"version": name, "pkgarch": ARCH, "checksum": digest, "history": False}}


def get_pr(name: str, digest: str) -> dict:
    return {"get-pr": {"version": name, "pkgarch": ARCH, "checksum": digest, "history": False}}
