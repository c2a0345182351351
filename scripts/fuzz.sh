#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets (tests/fuzz, clang with ASan + UBSan, in build-fuzz) and
# run each for a while from its checked-in seeds.
#
#   scripts/fuzz.sh                      every target, 20 s each, as many at once as CPUs
#   scripts/fuzz.sh --seconds 600 world  one target, longer
#
# A crash, leak or sanitizer report fails the run and prints the input (tests/fuzz/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20
if [ "${1:-}" = "--seconds" ]; then
	seconds=$2
	shift 2
fi
scripts/deps.sh
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DLB_FUZZ=ON \
	-DLB_TESTS=OFF -DLB_FUZZ_SECONDS="$seconds" >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz
filter=""
[ $# -gt 0 ] && filter="^fuzz_($(IFS='|'; echo "$*"))$"
# -V: each target's executions, peak memory and new inputs (run.sh keeps libFuzzer's own log).
(cd build-fuzz && ctest -V -j"$(nproc)" -L fuzz ${filter:+-R "$filter"})
