#!/usr/bin/env python3
"""targets: the loads of issue 5 against a fresh server of this project, with the
server's own CPU time per request.

    targets.py [LOADGEN] [-- extra bitbake-prserv flags, e.g. --sync-mode periodic:1]
    targets.sh [LOADGEN] [-- ...]            # the same, with $PYTHON (default python3)

LOADGEN: a load generator with prbench.py's command line (default: prbench.py,
beside this script); one that does not prime hit and conn itself as prbench.py does
(the workplace's prload.py) gets ``--tag T --prime`` for them.  The server
(``bin/bitbake-prserv -F`` on a fresh SQLite file, default log level) runs on core 0,
the load on core 1 (taskset, if installed).  The loads, in order: ``new`` four times
(32 clients x 50), ``hit`` (32 x 150), ``conn`` (8 x 300), then "grown": 2000
revisions of ``big-1.0-r0`` imported with ``prserv import-file``, and ``new`` on that
one package (32 x 10, then 32 x 60).  Prints one line per run: mode, requests,
requests/s, p50/p99 ms, the server's CPU µs per answered request (priming included;
``/proc/<pid>/task/*/schedstat``), duplicate values and errors; then the server's
peak RSS (VmHWM).  Exit status 1 if a run could not be carried out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

import _load
from _data import ARCH, import_file
from _measure import cpu_seconds, cpu_used, status_kib, us_per_request
from _servers import ROOT, Server, pinned

PRIMING = ("--tag", "T", "--prime")
"""For a LOADGEN that does not prime hit and conn itself."""
LINE = "%-5s %6d req  %8.0f rps  p50 %6.2f ms  p99 %6.2f ms  server cpu %6.1f us/req  dup %d  err %d"


def one_run(server: Server, loadgen: Path, *args: str) -> None:
    before = cpu_seconds(server.pid)
    done = _load.run_generator(pinned(1, _load.command(server.wait_serving(), *args, loadgen=loadgen)), 600)
    cpu = cpu_used(before, cpu_seconds(server.pid))
    r = done.result
    print(LINE % (r["mode"], r["requests"], r["rps"], r["p50_ms"], r["p99_ms"], us_per_request(cpu, r),
                  r["duplicate_values"], r["errors"]), flush=True)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [LOADGEN] [-- bitbake-prserv flags]")
    parser.add_argument("loadgen", nargs="?", type=Path, default=_load.PRBENCH,
                        help="a load generator with prbench.py's command line (default: prbench.py)")
    ours, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    priming = () if args.loadgen.resolve() == _load.PRBENCH else PRIMING
    with tempfile.TemporaryDirectory(prefix="prserv-targets-") as work:
        server = Server(ROOT, os.path.join(work, "pr.sqlite3"), "server", *flags, loglevel=None, cpu=0)
        try:
            server.wait_serving()
            for _ in range(4):
                one_run(server, args.loadgen, "new", "--clients", "32", "--requests", "50", "--prefix", "new")
            one_run(server, args.loadgen, "hit", "--clients", "32", "--requests", "150", "--prefix", "hit",
                    *priming)
            one_run(server, args.loadgen, "conn", "--clients", "8", "--requests", "300", "--prefix", "hit",
                    *priming)
            import_file(server.wait_serving(), (("big-1.0-r0", ARCH, "old%d" % i, str(i)) for i in range(2000)),
                        os.path.join(work, "big.txt"))
            for requests in ("10", "60"):
                one_run(server, args.loadgen, "new", "--package", "big-1.0-r0", "--clients", "32",
                        "--requests", requests)
            print("VmHWM:\t%8s kB" % status_kib(server.pid, "VmHWM"))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print("targets: %s" % exc, file=sys.stderr)
            return 1
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
