#!/usr/bin/env bash
# coverage.sh - line coverage of one source file by one unit test alone (gcov).
#
#   scripts/coverage.sh conn dataplane/conn.c     # unit_conn over the connection state machine
#
# Builds a Debug tree with --coverage in a temporary folder (removed afterwards), runs only
# tests/unit/<unit>, and prints gcov's line count for the file, then its lines never run.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=${1:?usage: coverage.sh UNIT SOURCE}
src=${2:?usage: coverage.sh UNIT SOURCE}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake -S . -B "$work" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=--coverage >/dev/null
cmake --build "$work" -j"$(nproc)" --target "unit_$unit" >/dev/null
"$work/tests/unit_$unit" >/dev/null 2>&1
gcda=$(find "$work" -path "*/$src.gcda" | head -n 1)
[ -n "$gcda" ] || { echo "no coverage data for $src: is it linked into unit_$unit?" >&2; exit 1; }
root=$PWD
(cd "$work" && gcov -o "$(dirname "$gcda")" "$gcda" | grep -A1 "File '$root/$src'")
echo "lines never run:"
grep -n '#####' "$work/$(basename "$src").gcov" | sed 's/^[0-9]*: *#####: *//' | head -n 60
