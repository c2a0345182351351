#!/usr/bin/env bash
# build.sh - build kube-apiserver, kube-controller-manager, kubectl (k8s.io/kubernetes, from the
# Go module proxy) and a single-member etcd (./etcd, go.etcd.io/etcd/server/v3/embed) for the
# end-to-end tests, into a cache folder keyed by their versions:
#   ${LB_K8S_CACHE:-/var/cache/layer4-lb}/k8s-<version>-etcd-<version>/bin
# GOMODCACHE and GOCACHE live under the same cache root, so a rebuild after a change reuses what
# it can. When the four binaries exist and the stamp matches go.mod, go.sum and etcd/main.go,
# it does nothing. The last line of stdout is the bin folder; go's output goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' go.mod)
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] || { echo "build.sh: versions not found in go.mod" >&2; exit 1; }

root=${LB_K8S_CACHE:-/var/cache/layer4-lb}
dir=$root/k8s-$k8s_version-etcd-$etcd_version
bin=$dir/bin
bins=(kube-apiserver kube-controller-manager kubectl etcd)
stamp_want=$(cat go.mod go.sum etcd/main.go | sha256sum | cut -d' ' -f1)

up_to_date() {
	local b
	for b in "${bins[@]}"; do [ -x "$bin/$b" ] || return 1; done
	[ "$(cat "$bin/.stamp" 2>/dev/null)" = "$stamp_want" ]
}

if up_to_date; then echo "$bin"; exit 0; fi

# The machine's Go may sit outside a minimal PATH (CI runs with the machine's environment).
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "build.sh: go is not installed (it builds the test control plane)" >&2; exit 1; }
mkdir -p "$dir"
# One build at a time per cache folder (tests may start in parallel).
exec 9>"$dir/.lock"
flock 9
if up_to_date; then echo "$bin"; exit 0; fi

export GOMODCACHE=$root/gomod GOCACHE=$root/gocache GOFLAGS=-modcacherw CGO_ENABLED=0
# The version the binaries report (hack/lib/version.sh sets the same variables).
minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp=$dir/bin.tmp.$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"; mkdir -p "$tmp"
echo "build.sh: building Kubernetes $k8s_version and etcd $etcd_version into $bin (from scratch: about 10 minutes on 2 cores)" >&2
start=$(date +%s)
go build -trimpath -ldflags="$ldflags" -o "$tmp/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kubectl \
	./etcd >&2
# Rename each binary over the old one (a running process keeps its file), the stamp last.
mkdir -p "$bin"
rm -f "$bin/.stamp"
for b in "${bins[@]}"; do mv -f "$tmp/$b" "$bin/$b"; done
echo "$stamp_want" >"$bin/.stamp"
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
