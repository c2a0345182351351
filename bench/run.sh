#!/usr/bin/env bash
# run.sh - benchmark layer4-lb against HAProxy and nginx stream on this machine, loopback only.
#
#   bench/run.sh                 full run: 5 rounds alternating the proxies (4-6 minutes)
#   bench/run.sh --quick         smoke run (about a minute)
#   bench/run.sh --acceptors 2   2 workers in every proxy (layer4-lb NUM_ACCEPTORS, HAProxy
#                                nbthread, nginx worker_processes)
#   bench/run.sh --only udp      the UDP part alone (dnsperf and iperf3 -u against nginx stream,
#                                about 3 minutes; results in latest-udp.*); --only tcp the rest
#   bench/run.sh --help          every option (rounds, durations, wrk -t/-c, CPU pinning, ...)
#
# Builds the Release binary, installs the Debian packages it needs when run as root (else
# prints the apt-get line and stops), then runs bench/bench.py.  Results: a table on stdout,
# bench/results/latest.md, latest.json and latest.png.  See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

case " $* " in *" -h "*|*" --help "*) exec python3 bench/bench.py --help ;; esac

# The build's own packages come from scripts/deps.sh (one list for every script); the bench
# adds the proxies it compares and its load tools.
LB_DEPS_EXTRA="haproxy nginx libnginx-mod-stream wrk iperf3 gnuplot-nox iproute2 util-linux dnsperf unbound strace" \
	scripts/deps.sh
# The Debian nginx and unbound packages may start system services (ports 80 and 53); the bench
# never uses them: it starts its own, on its own ports.

echo "bench: building the Release binary"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target layer4-lb >/dev/null

# 5,000 idle connections need 10,000 descriptors in a proxy: use the hard limit.
ulimit -n "$(ulimit -Hn)"

pid=
cleanup() {
	# bench.py stops everything it started, by PID; this only makes sure bench.py itself
	# is told to when this script is interrupted.
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 bench/bench.py "$@" &
pid=$!
wait "$pid"
