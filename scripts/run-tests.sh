#!/usr/bin/env bash
# `make test`'s pytest run, in two phases on the same checkout:
#   1. every test not marked `serial`, in $PYTEST_WORKERS pytest-xdist processes (--dist loadgroup);
#   2. the `serial` tests (tests/conftest.py: timing relations, LoadGen's queueing and Ray's
#      cluster), alone in one process, so no other test's load moves what they measure.
# PYTEST_WORKERS=0 runs everything in one process, as plain `pytest` does. Extra arguments go to
# both phases; a phase they leave empty counts as passed. The exit status is the first failure's.
set -u
PY=${PYTHON_BIN:-.venv/bin/python}
WORKERS=${PYTEST_WORKERS:-2}
rc=0
phase() {
    local started=$SECONDS
    "$PY" -m pytest -q "$@"
    local r=$?
    [ "$r" -eq 5 ] && r=0  # nothing collected: the arguments selected no test of this phase
    echo "== pytest phase ($*): exit $r in $((SECONDS - started)) s"
    [ "$r" -ne 0 ] && [ "$rc" -eq 0 ] && rc=$r
    return 0
}
if [ "$WORKERS" = 0 ]; then
    phase -p no:xdist "$@"
else
    phase -n "$WORKERS" --dist loadgroup -m "not serial" "$@"
    phase -p no:xdist -m serial "$@"
fi
exit "$rc"
