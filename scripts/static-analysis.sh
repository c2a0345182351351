#!/usr/bin/env bash
# static-analysis.sh - no call cycle between source files (call-cycles.sh), cppcheck over the
# sources, then clang's static analyzer (scan-build-14) over a Debug build in a temporary
# directory.  Any finding fails the run.
#
#   scripts/static-analysis.sh
#
# A finding is fixed, or explained where it is: cppcheck with an inline
# "cppcheck-suppress id ; why" comment, the analyzer by code it can follow (an initialised
# out-parameter, an assert() of what it cannot see) and a comment saying why.  The path behind
# an analyzer finding: clang --analyze -Xanalyzer -analyzer-output=text on that one file, with
# the flags from a build's compile_commands.json (-DCMAKE_EXPORT_COMPILE_COMMANDS=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

echo "== calls between files: none may call back into its caller =="
scripts/call-cycles.sh

echo "== cppcheck =="
# variableScope is off: the house style declares variables at the top of a block, which is
# exactly what that check asks to move.
cppcheck --quiet --std=c11 --enable=style --inline-suppr -I . \
	--include=/usr/include/cjson/cJSON.h --suppress=missingIncludeSystem \
	--suppress=variableScope --error-exitcode=1 common dataplane controller

echo "== clang static analyzer (scan-build-14) =="
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Both steps under scan-build: the configure step is where CMake picks its compiler wrapper.
scan-build-14 -o "$work/reports" cmake -S . -B "$work/build" -DCMAKE_BUILD_TYPE=Debug \
	-DLB_TESTS=OFF >/dev/null
# --status-bugs: exit 1 on any finding (each is printed above as file:line: warning).
scan-build-14 -o "$work/reports" --status-bugs cmake --build "$work/build" -j"$(nproc)"
echo "static analysis clean"
