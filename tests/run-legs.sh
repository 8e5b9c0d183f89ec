#!/usr/bin/env bash
# The test suite on both ends of the supported torch range (tests/legs/*.txt), each leg in its own
# fresh virtual environment (.venv-newest, .venv-oldest), the project installed as the README says.
# Each leg runs pytest on two workers (one torch thread each; QZOO_TEST_WORKERS to change); arguments go
# to pytest; QZOO_LEGS="newest" runs one leg only.
# A leg's torch is a CUDA build of 6 to 8 GB: pip keeps no cache of it and the leg's environment is removed
# once its tests ran, so only one leg is on disk at a time (QZOO_KEEP_VENVS=1 keeps them to look into).
set -euo pipefail
cd "$(dirname "$0")/.."
legs=${QZOO_LEGS:-newest oldest}
failed=()
for leg in $legs; do
  pins="tests/legs/$leg.txt"
  [ -f "$pins" ] || { echo "run-legs: no $pins (legs: $(ls tests/legs | sed 's/\.txt//' | xargs))" >&2; exit 2; }
  venv=".venv-$leg"
  echo "== leg $leg: $(grep -v '^#' "$pins" | xargs); $(df -Ph . | awk 'NR == 2 {print $4}') free on this disk"
  start=$SECONDS
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install -q --no-cache-dir -r "$pins"
  "$venv/bin/pip" install -q --no-cache-dir -c "$pins" -e ".[test]"
  echo "== leg $leg: installed in $((SECONDS - start)) s"
  start=$SECONDS
  "$venv/bin/python" -m pytest -q -n "${QZOO_TEST_WORKERS:-2}" "$@" || failed+=("$leg")
  echo "== leg $leg: tests ran in $((SECONDS - start)) s"
  [ "${QZOO_KEEP_VENVS:-0}" = 1 ] || rm -rf "$venv"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run-legs: failed legs: ${failed[*]}" >&2
  exit 1
fi
