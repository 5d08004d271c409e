#!/bin/bash
# The four loads of issue 5 against a fresh server of this project, with the server's
# own CPU time per request (from /proc/<pid>/task/*/schedstat, nanoseconds).
#
#   contrib/bench/targets.sh [LOADGEN] [-- extra bitbake-prserv flags, e.g. --sync-mode periodic:1]
#
# LOADGEN: a load generator with prbench.py's command line (default: prbench.py,
# beside this script).  The server runs on core 0, the load on core 1 (taskset).
# Prints one line per run: mode, requests/s, p50/p99 ms, server CPU µs per request.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prload=${1:-$here/prbench.py}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT

: > "$work/server.log"                   # exists before the first grep below
taskset -c 0 "$python" "$root/bin/bitbake-prserv" -F -f "$work/pr.sqlite3" --bind 127.0.0.1:0 "$@" \
    2> "$work/server.log" &
pid=$!
until grep -q " serving " "$work/server.log"; do
    kill -0 $pid 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.05
done
addr=$(sed -n 's/.* serving .* on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/server.log")

cpu_ns() { cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }

run() {
    local before after
    before=$(cpu_ns)
    taskset -c 1 "$python" "$prload" "$addr" "$@" > "$work/out" 2>&1
    after=$(cpu_ns)
    "$python" - "$work/out" "$before" "$after" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
n = r["requests"] + r.get("primed", 0)
print("%-5s %6d req  %8.0f rps  p50 %6.2f ms  p99 %6.2f ms  server cpu %6.1f us/req  dup %d  err %d"
      % (r["mode"], r["requests"], r["rps"], r["p50_ms"], r["p99_ms"],
         (int(sys.argv[3]) - int(sys.argv[2])) / 1000 / n, r["duplicate_values"], r["errors"]))
PY
}

for _ in 1 2 3 4; do run --mode new --clients 32 --requests 50 --prefix new; done
run --mode hit --clients 32 --requests 150 --prefix hit --tag T --prime
run --mode conn --clients 8 --requests 300 --prefix hit --tag T --prime
"$python" -c "
for i in range(2000): print('PRAUTO\$big-1.0-r0\$core2-64\$old%d = \"%d\"' % (i, i))" > "$work/big.txt"
PYTHONPATH="$root/lib" "$python" -m prserv --server "$addr" import-file "$work/big.txt" > /dev/null
run --mode new --package big-1.0-r0 --clients 32 --requests 10
run --mode new --package big-1.0-r0 --clients 32 --requests 60
grep VmHWM /proc/$pid/status
