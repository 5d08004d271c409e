"""Generated PR data for the benchmarks: databases of packages ``pkgNNNNN-1.0-r0``
of checksums valued 0, 1, 2... written straight into bitbake's schema, rows imported
through this checkout's ``prserv import-file``, and the requests that ask about them
(standard library only)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from typing import Iterable, Tuple

from _servers import ROOT

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


def import_file(address: str, rows: Iterable[Tuple[str, str, str, str]], path: str) -> float:
    """Write ``rows`` (version, pkgarch, checksum, value) to ``path`` in OpenEmbedded's
    text format and store them with ``prserv --server ADDRESS import-file`` (this
    checkout's client: pipelined import-one); the seconds the command took."""
    with open(path, "w") as out:
        out.writelines('PRAUTO$%s$%s$%s = "%s"\n' % row for row in rows)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "prserv", "--server", address, "import-file", path],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def test_pr(name: str, digest: str, history: bool = False) -> dict:
    return {"test-pr": {"version": name, "pkgarch": ARCH, "checksum": digest, "history": history}}


def get_pr(name: str, digest: str, history: bool = False) -> dict:
    return {"get-pr": {"version": name, "pkgarch": ARCH, "checksum": digest, "history": history}}
