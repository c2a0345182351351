#!/usr/bin/env bash
# test.sh - every test: unit, integration and end-to-end tests on the Release build, the same
# again on the ASan+UBSan build, a clang build to keep both compilers warning-clean, cppcheck and
# clang's static analyzer (scripts/static-analysis.sh), and each fuzz target for a bounded time
# (LB_FUZZ_SECONDS, 15 by default).
#
#   scripts/test.sh          everything (CI runs this)
#   scripts/test.sh --quick  the Release build's unit and integration tests only, for iteration
#
# The end-to-end tests need Go (on the machine) to build the real Kubernetes control plane once
# into /var/cache/layer4-lb (tests/k8s/build.sh: about 10 minutes cold, nothing when warm).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

# The apply-under-load test drives wrk against an nginx backend; with this variable set a
# missing tool fails that test instead of skipping it, so a green run always includes it.
LB_DEPS_EXTRA="wrk nginx unbound dnsutils" scripts/deps.sh
export LBTEST_REQUIRE_TOOLS=1
jobs=$(nproc)

echo "== Release build (gcc) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
if [ "$quick" = 1 ]; then
	(cd build && ctest --output-on-failure -LE 'e2e|image' -j"$jobs")
	echo "quick subset passed (no end-to-end, sanitizer or clang runs)"
	exit 0
fi

echo "== the test control plane (kube-apiserver, kube-controller-manager, kubectl, etcd) =="
start=$(date +%s)
LB_K8S_BIN=$(tests/k8s/build.sh | tail -n 1)
export LB_K8S_BIN
# helm too, once, before the end-to-end tests run side by side (each would fetch it).
LB_HELM=$(tests/k8s/helm.sh | tail -n 1)
export LB_HELM
echo "control plane binaries in $LB_K8S_BIN, helm $LB_HELM ($(( $(date +%s) - start )) s)"

# Unit and integration tests as many at once as CPUs (none asserts timing; each has its own
# ports and folders), then the end-to-end tests two at a time: each runs its own control plane
# in a network namespace of its own, and they spend most of their time waiting (API server
# outages, backoffs, drains); their timeouts are hang guards.  The hostile API server's tests
# run in the sanitizer pass only.
(cd build && ctest --output-on-failure -LE e2e -j"$jobs" &&
	ctest --output-on-failure -L e2e -E e2e_test_apiserver_faults -j2)

echo "== ASan + UBSan build =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLB_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
(cd build-asan && ctest --output-on-failure -LE e2e -j"$jobs" &&
	ctest --output-on-failure -L e2e -E e2e_test_cluster_smoke -j2)
unset ASAN_OPTIONS UBSAN_OPTIONS
# (The smoke test checks the test control plane itself, already run above.)

echo "== clang build (warnings are errors) =="
cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang \
	-DLB_TESTS=ON >/dev/null
cmake --build build-clang -j"$jobs"

echo "== static analysis (cppcheck, clang's analyzer) =="
scripts/static-analysis.sh

echo "== fuzzing (libFuzzer, ASan + UBSan): every parser of outside input =="
scripts/fuzz.sh --seconds "${LB_FUZZ_SECONDS:-15}"
echo "all tests passed"
