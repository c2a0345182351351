#!/usr/bin/env bash
# run.sh - the controller benchmark: layer4-lb-controller and the dataplane of one node against
# a real kube-apiserver / kube-controller-manager / etcd (tests/e2e/k8scluster.py) in a network
# namespace of its own.
#
#   bench/controller/run.sh              full run (1,000 LoadBalancers, 50 latency samples each
#                                        way, rolling update of 500 pods, debounce
#                                        variants; about 5 minutes on 2 cores)
#   bench/controller/run.sh --help       every option (sizes, samples, debounce variants)
#   bench/controller/run.sh --rebuild    rebuild the Release binaries first even if present
#
# Needs root (it creates a network namespace; otherwise it prints SKIP and exits 77). Builds
# build/layer4-lb and build/layer4-lb-controller (Release) if they are missing; the control
# plane comes from tests/k8s/build.sh (cached; a cold build takes about 10 minutes and needs
# go). Results: a table on stdout, bench/controller/results/latest.md and latest.json. See
# docs/benchmarks.md. Exit status: 0 when the run completed, whatever the figures; non-zero
# only when something broke.
set -euo pipefail
cd "$(dirname "$0")/../.."

case " $* " in *" -h "*|*" --help "*) exec python3 bench/controller/bench.py --help ;; esac

rebuild=0
args=()
for a in "$@"; do
	if [ "$a" = --rebuild ]; then rebuild=1; fi
	args+=("$a")
done

build="${LB_BUILD_DIR:-build}"
if [ "$rebuild" = 1 ] || [ ! -x "$build/layer4-lb" ] || [ ! -x "$build/layer4-lb-controller" ]; then
	echo "bench: building the Release binaries in $build"
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j"$(nproc)" --target layer4-lb layer4-lb-controller >/dev/null
fi
export LB_BUILD_DIR="$build"   # tests/e2e/l4lb.py takes both binaries from there

pid=
cleanup() {
	# bench.py stops what it started, by pid, and its network namespace is removed with
	# whatever is left in it; this only passes an interruption on to bench.py.
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 bench/controller/bench.py ${args[@]+"${args[@]}"} &
pid=$!
wait "$pid"
