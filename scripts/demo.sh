#!/usr/bin/env bash
# demo.sh - build layer4-lb, start two demo backends and the load balancer on
# examples/lb.yaml, and show requests passing through.  Ctrl-C stops everything it started.
# With --once it stops by itself after showing the traffic.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target layer4-lb >/dev/null

pids=()
lb_pid=
cleanup() {
	trap - EXIT INT TERM
	# Only the processes this script started, by pid.  The load balancer drains first (a
	# Ctrl-C has already reached it through the terminal: one signal is enough), then the
	# backends go.
	if [ -n "$lb_pid" ]; then
		if [ "${1:-}" = signalled ]; then
			# A terminal's Ctrl-C reached it too: give it a moment before asking again.
			for _ in $(seq 20); do
				kill -0 "$lb_pid" 2>/dev/null || break
				sleep 0.1
			done
		fi
		kill "$lb_pid" 2>/dev/null || true
		wait "$lb_pid" 2>/dev/null || true
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "stopping"; cleanup signalled; exit 0' INT TERM

python3 examples/demo_backend.py 9001 backend-1 & pids+=($!)
python3 examples/demo_backend.py 9002 backend-2 & pids+=($!)
wait_for() {
	for _ in $(seq 50); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "demo: nothing answers on $1" >&2
	exit 1
}
wait_for http://127.0.0.1:9001/
wait_for http://127.0.0.1:9002/
build/layer4-lb --config examples/lb.yaml & lb_pid=$!
# Up once the control socket answers (its listeners are bound before that); asking there rather
# than through 127.0.0.1:8080 keeps the readiness check out of the counters shown below.
for _ in $(seq 50); do
	build/layer4-lb ctl -c examples/lb.yaml ping >/dev/null 2>&1 && break
	kill -0 "$lb_pid" 2>/dev/null || { echo "demo: layer4-lb exited" >&2; exit 1; }
	sleep 0.1
done
echo
echo "layer4-lb listens on 127.0.0.1:8080 and balances over 127.0.0.1:9001 and :9002:"
for i in $(seq 6); do
	printf '  request %d -> %s' "$i" "$(curl -s -m 2 http://127.0.0.1:8080/ || echo 'FAILED')"
	echo
done
echo
echo "Its state, over the control socket (build/layer4-lb ctl -c examples/lb.yaml status):"
build/layer4-lb ctl -c examples/lb.yaml status | sed 's/^/  /'
echo "Metrics (curl http://127.0.0.1:9100/metrics), a few lines:"
curl -s http://127.0.0.1:9100/metrics | grep -E '^layer4lb_(listener_connections_accepted_total|backend_connections_total)' | sed 's/^/  /'
if [ "${1:-}" = "--once" ]; then
	exit 0
fi
echo
echo "Try: curl http://127.0.0.1:8080/   (Ctrl-C stops the load balancer and the backends)"
wait "$lb_pid"
