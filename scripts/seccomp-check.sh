#!/usr/bin/env bash
# seccomp-check.sh - which system calls does layer4-lb make, and are they all in its profile?
#
#   scripts/seccomp-check.sh [BUILD_DIR] [CTEST_REGEX]
#
# Records every system call entry of processes named layer4-lb (perf, raw_syscalls:sys_enter,
# system-wide) while ctest runs the integration tests of BUILD_DIR (default build, regex
# "integration_"), then lists them with their counts and marks those the profile
# deploy/seccomp/layer4-lb.json does not allow.  Exit 1 when any is missing.  How the profile's
# list was made; run it after a change that may make new system calls (docs: deploy/seccomp/).
# Root only (perf system-wide).  Other processes named layer4-lb running meanwhile are counted too.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
REGEX=${2:-integration_}
PROFILE=$ROOT/deploy/seccomp/layer4-lb.json
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 2; }
perf record -q -o "$WORK/perf.data" -e raw_syscalls:sys_enter --filter 'comm == "layer4-lb"' \
	-a -- ctest --test-dir "$BUILD" -R "$REGEX" -j2 >"$WORK/ctest.log" 2>&1 ||
	{ tail -20 "$WORK/ctest.log"; echo "ctest failed: fix the tests first" >&2; exit 2; }
perf script -i "$WORK/perf.data" -F trace 2>/dev/null | awk '{print $2}' | sort -n | uniq -c \
	>"$WORK/counts"
python3 - "$WORK/counts" "$PROFILE" <<'EOF'
import json, re, sys
names = {}
for line in open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"):
    m = re.match(r"#define __NR_(\w+) (\d+)", line)
    if m:
        names[int(m.group(2))] = m.group(1)
allowed = {n for e in json.load(open(sys.argv[2]))["syscalls"] for n in e["names"]}
missing = 0
for line in open(sys.argv[1]):
    count, nr = line.split()
    name = names.get(int(nr), f"#{nr}")
    mark = "" if name in allowed else "   NOT IN THE PROFILE"
    missing += bool(mark)
    print(f"{name:24} {count:>10}{mark}")
print(f"{missing} system call(s) missing from {sys.argv[2]}" if missing else "all in the profile")
sys.exit(1 if missing else 0)
EOF
