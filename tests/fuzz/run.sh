#!/usr/bin/env bash
# run.sh TARGET SECONDS SEEDS... - run one libFuzzer target for SECONDS from its seed folders.
#
# New inputs go to a scratch corpus (the checked-in seeds are never written). A crash, leak,
# sanitizer report, timeout or out-of-memory fails the run and leaves the input in the scratch
# folder, printed here (base64) so that a CI log is enough to reproduce it:
#   base64 -d > crash && TARGET crash
set -euo pipefail
target=$1 seconds=$2
shift 2
work=$(mktemp -d /tmp/lb-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
rc=0
"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
	-print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "$@" 2>"$work/log" || rc=$?
grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' \
	"$work/log" || true
echo "new inputs: $(find "$work/corpus" -type f | wc -l), seeds: $(find "$@" -type f | wc -l)"
if [ "$rc" -ne 0 ]; then
	tail -n 60 "$work/log"
	for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
		[ -f "$f" ] || continue
		echo "== $(basename "$f") (base64):"
		base64 -w 0 "$f"
		echo
	done
	exit "$rc"
fi
