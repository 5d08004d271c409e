#!/bin/sh
# The loads of issue 5 against a fresh server of this project, with the server's own
# CPU time per request: targets.py, run by $PYTHON (default python3).
#
#   contrib/bench/targets.sh [LOADGEN] [-- extra bitbake-prserv flags, e.g. --sync-mode periodic:1]
exec "${PYTHON:-python3}" "$(dirname "$0")/targets.py" "$@"
