#!/usr/bin/env bash
# test_image.sh - build the Dockerfile for real with podman (no daemon, no registry) and run it.
#
# 1. Base: `debootstrap --variant=minbase bookworm` from the Debian mirror in this machine's apt
#    sources, slimmed as Debian's official -slim images are, imported as debian:bookworm-slim
#    (the name the Dockerfile uses; --pull=never, so no registry is ever asked).  The tarball is
#    cached under $LB_IMAGE_CACHE/base, keyed by debootstrap's version and the month.
# 2. Build: `podman build` (buildah inside) with chroot isolation and the host network for apt;
#    --layers keeps the apt and compile layers in $LB_IMAGE_CACHE/storage for warm runs.
# 3. Checks: both binaries' --version; the image runs as 65532:65532; the OCI labels; ldd inside
#    the image finds every library; the runtime stage's package list in the Dockerfile is exactly
#    the packages (dpkg -S, in the image) owning the binaries' NEEDED libraries that the base
#    lacks, plus ca-certificates; no compiler or -dev package in it; its size; the dataplane,
#    run as deploy/docker-compose.yml runs it (host network, read-only root, tmpfs socket dir),
#    proxies a real request to a python http.server, answers `ctl ping` (the healthcheck), uses
#    io_uring under a seccomp profile that allows it and epoll under podman's default profile,
#    and drains and exits 0 on stop.
#
# Root only (exit 77 otherwise, or when podman/debootstrap cannot be installed or no Debian
# mirror is configured).  LB_IMAGE_NO_CACHE=1 rebuilds every layer; LB_IMAGE_KEEP=1 keeps the
# work folder.  Prints the time of each phase.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${LB_IMAGE_CACHE:-/var/cache/layer4-lb/image}
TAG=localhost/layer4-lb:image-test
T0=$(date +%s)

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
phase() { echo "== $* (at $(($(date +%s) - T0)) s)"; }

[ "$(id -u)" -eq 0 ] || skip "needs root (podman rootful storage, debootstrap)"

# ---- tools ------------------------------------------------------------------------------------
# runc: crun (podman's default) refuses hybrid cgroup v1+v2 hosts; binutils: readelf.
need=()
for p in podman runc debootstrap binutils curl python3 python3-yaml; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	if ! { DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
		--no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
		{ timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
			apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; }; then
		skip "cannot install ${need[*]} with apt-get"
	fi
fi

mkdir -p "$CACHE/base"
exec 9>"$CACHE/.lock"
flock -w 1800 9 || fail "another image test holds $CACHE/.lock"

WORK=$(mktemp -d /tmp/layer4-lb-image.XXXXXX)
CTR=layer4-lb-image-test-$$
HTTP_PID=
PODMAN=(podman --root "$CACHE/storage" --runroot /run/layer4-lb-image)
cleanup() {
	"${PODMAN[@]}" rm -f -t 0 "$CTR" >/dev/null 2>&1 || true
	if [ -n "$HTTP_PID" ]; then kill "$HTTP_PID" 2>/dev/null || true; fi
	if [ -n "${LB_IMAGE_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---- storage driver: overlay, else vfs --------------------------------------------------------
if ! timeout 60 "${PODMAN[@]}" info >"$WORK/info.log" 2>&1; then
	echo "overlay storage refused ($(tail -1 "$WORK/info.log")); using vfs"
	PODMAN=(podman --root "$CACHE/storage-vfs" --runroot /run/layer4-lb-image-vfs
		--storage-driver vfs)
	timeout 60 "${PODMAN[@]}" info >"$WORK/info.log" 2>&1 ||
		skip "podman cannot open its storage: $(tail -1 "$WORK/info.log")"
fi
P() { timeout "${PTIMEOUT:-120}" "${PODMAN[@]}" "$@"; }

# ---- base image: debootstrap, slimmed, imported as debian:bookworm-slim ------------------------
phase "base image"
# The Debian mirror (and security mirror) this machine's apt uses, from deb822 or one-line files.
mirrors=$(python3 - <<'EOF'
import glob, re
main = sec = ""
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for st in open(f).read().split("\n\n"):
        kv = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", st, re.M))
        if kv.get("Enabled", "yes") == "no" or "deb" not in kv.get("Types", "").split():
            continue
        suites, uri = kv.get("Suites", "").split(), kv.get("URIs", "").split()
        if uri and "bookworm" in suites and not main: main = uri[0]
        if uri and "bookworm-security" in suites and not sec: sec = uri[0]
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try: lines = open(f).read().splitlines()
    except OSError: continue
    for l in lines:
        w = re.sub(r"\[[^]]*\]", "", l).split()
        if len(w) >= 3 and w[0] == "deb":
            if w[2] == "bookworm" and not main: main = w[1]
            if w[2] == "bookworm-security" and not sec: sec = w[1]
print(main, sec)
EOF
)
read -r MIRROR SECMIRROR <<<"$mirrors" || true
[ -n "$MIRROR" ] || skip "no Debian bookworm mirror in /etc/apt/sources.list*"
dbver=$(dpkg-query -W -f='${Version}' debootstrap)
key="bookworm-minbase-${dbver}-$(date +%Y%m)"
tarball=$CACHE/base/$key.tar

if [ ! -s "$tarball" ]; then
	t=$(date +%s)
	rootfs=$WORK/rootfs
	mkdir -p "$CACHE/debs"
	if ! timeout 900 debootstrap --variant=minbase --cache-dir="$CACHE/debs" bookworm "$rootfs" \
		"$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
		tail -5 "$WORK/debootstrap.log"
		skip "debootstrap from $MIRROR failed (log above): cannot make the base image"
	fi
	# As the official -slim images (debuerreotype): no docs but copyrights, man pages or
	# locales; apt keeps no .debs, package caches or translations.
	cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
	echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
	echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
	find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
	find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
	for d in usr/share/man usr/share/groff usr/share/info usr/share/lintian usr/share/linda \
		usr/share/locale var/lib/apt/lists var/log/apt tmp; do
		[ -d "$rootfs/$d" ] && find "$rootfs/$d" -mindepth 1 -delete
	done
	find "$rootfs/var/cache/apt/archives" -name '*.deb' -delete
	rm -f "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log \
		"$rootfs/etc/apt/sources.list"
	{
		printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$MIRROR"
		printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
		if [ -n "$SECMIRROR" ]; then
			printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n' "$SECMIRROR"
			printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
		fi
	} >"$rootfs/etc/apt/sources.list.d/debian.sources"
	: >"$rootfs/etc/hostname"
	: >"$rootfs/etc/resolv.conf"
	tar --numeric-owner --xattrs -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' \
		--exclude='./sys/*' -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf "$rootfs"
	# Keep this base and the one before it.
	find "$CACHE/base" -name '*.tar' -printf '%T@ %p\n' | sort -rn | tail -n +3 | cut -d' ' -f2- |
		xargs -r rm -f
	echo "debootstrap ($MIRROR) and slimming: $(($(date +%s) - t)) s -> $tarball"
fi

base_id=$(P image inspect --format '{{.Id}}' debian:bookworm-slim 2>/dev/null || true)
if [ -z "$base_id" ] || [ "$base_id" != "$(cat "$CACHE/base/$key.id" 2>/dev/null)" ]; then
	base_id=$(P import --quiet --change 'CMD ["bash"]' "$tarball" debian:bookworm-slim)
	base_id=${base_id#sha256:}
	echo "$base_id" >"$CACHE/base/$key.id"
	echo "imported $key as debian:bookworm-slim (${base_id:0:12})"
else
	echo "debian:bookworm-slim is $key (${base_id:0:12}), cached"
fi

# ---- build -----------------------------------------------------------------------------------
phase "build"
version=$(sed -n 's/^project(layer4-lb VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
[ -n "$version" ] || fail "no project version in CMakeLists.txt"
revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
cache_flag=--layers
[ -n "${LB_IMAGE_NO_CACHE:-}" ] && cache_flag=--no-cache
build() { # build --layers|--no-cache
	local t
	t=$(date +%s)
	# chroot isolation: RUN steps need no OCI runtime or cgroups; --network host: apt reaches
	# the mirror without a container network; --pull=never: FROM resolves only to local images.
	if ! PTIMEOUT=1800 P build --pull=never --isolation chroot --network host "$1" \
		--build-arg VERSION="$version" --build-arg REVISION="$revision" \
		-t "$TAG" -f "$ROOT/Dockerfile" "$ROOT" >"$WORK/build.log" 2>&1; then
		tail -40 "$WORK/build.log"
		fail "podman build failed (log above)"
	fi
	echo "podman build $1: $(($(date +%s) - t)) s ($(grep -c -- '--> Using cache' "$WORK/build.log" || true) cached steps)"
}
build "$cache_flag"
# buildah 1.28 (Debian 12's, inside podman build) keys its layer cache without the values of
# --build-arg: after a new commit the cached LABEL step, and the steps after it, keep the old
# revision.  Drop the cached images that carry the old labels and build again: only those steps
# run (the check of the labels below still applies).
lbl=org.opencontainers.image
read -r old_rev old_ver < <(P image inspect \
	--format "{{index .Labels \"$lbl.revision\"}} {{index .Labels \"$lbl.version\"}}" "$TAG")
if [ "$cache_flag" = --layers ] && [ "$old_rev $old_ver" != "$revision $version" ]; then
	echo "note: buildah's layer cache gave labels '$old_rev $old_ver' for '$revision $version' (it ignores --build-arg values); dropping those cached steps"
	mapfile -t stale < <(P images -a -q --filter "label=$lbl.revision=$old_rev" \
		--filter "label=$lbl.version=$old_ver")
	[ ${#stale[@]} -eq 0 ] || P rmi -f "${stale[@]}" >/dev/null
	build --layers
fi
# Untagged images older than a week (layers of older sources) go.
P image prune -f --filter until=168h >/dev/null 2>&1 || true

# ---- how containers run here --------------------------------------------------------------------
# podman's defaults first.  Some sandboxes refuse to raise an rlimit even for root (podman asks
# for nofile and nproc 1048576), and crun refuses hybrid cgroup v1+v2 hosts; then try runc and
# the limits podman itself runs with (the hard nofile limit, nproc 32768).
phase "run"
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
RUNOPTS=()
for opts in "" "--runtime runc" "--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc" \
	"--runtime runc --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"; do
	read -r -a try <<<"$opts"
	if out=$(P run --rm "${try[@]}" "$TAG" --version 2>&1); then
		RUNOPTS=("${try[@]}")
		break
	fi
	echo "podman run ${opts:-(defaults)}: $(echo "$out" | tail -1)"
	out=
done
[ -n "$out" ] || skip "no way to run a container here (errors above)"
echo "running containers with: podman run ${RUNOPTS[*]:-(defaults)}"
R() { P run --rm "${RUNOPTS[@]}" "$@"; }

# ---- checks -------------------------------------------------------------------------------------
[ "$out" = "layer4-lb $version" ] || fail "layer4-lb --version said '$out', want 'layer4-lb $version'"
ok "layer4-lb --version: $out"
out=$(R --entrypoint layer4-lb-controller "$TAG" --version)
[ "$out" = "layer4-lb-controller $version" ] || fail "controller --version said '$out'"
ok "layer4-lb-controller --version: $out"
R "$TAG" >"$WORK/help.txt" || fail "the image's default command (--help) failed"
grep -q '^Usage: layer4-lb' "$WORK/help.txt" || fail "no usage from the default command"
ok "no arguments: layer4-lb --help"

cfg=$(P image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}' "$TAG")
[ "$cfg" = '65532:65532|["layer4-lb"]|["--help"]' ] || fail "user/entrypoint/cmd: $cfg"
out=$(R --entrypoint id "$TAG")
[ "$out" = "uid=65532(layer4-lb) gid=65532(layer4-lb) groups=65532(layer4-lb)" ] ||
	fail "runs as: $out"
ok "runs as $out"

labels=$(P image inspect --format '{{json .Labels}}' "$TAG")
for l in title description source licenses version revision; do
	python3 -c 'import json,sys; sys.exit(0 if "org.opencontainers.image."+sys.argv[2] in json.loads(sys.argv[1]) else 1)' \
		"$labels" "$l" || fail "label org.opencontainers.image.$l missing: $labels"
done
python3 - "$labels" "$version" "$revision" <<'EOF' || fail "labels: $labels"
import json, sys
l = json.loads(sys.argv[1])
assert l["org.opencontainers.image.title"] == "layer4-lb"
assert l["org.opencontainers.image.version"] == sys.argv[2]
assert l["org.opencontainers.image.revision"] == sys.argv[3]
EOF
ok "OCI labels: title, description, source, licenses, version $version, revision ${revision:0:12}"

# Every library resolves inside the image.
R --entrypoint ldd "$TAG" /usr/local/bin/layer4-lb /usr/local/bin/layer4-lb-controller \
	>"$WORK/ldd.txt"
if grep -q 'not found' "$WORK/ldd.txt"; then
	cat "$WORK/ldd.txt"
	fail "ldd in the image: missing libraries"
fi
ok "ldd in the image: $(grep -c '=>' "$WORK/ldd.txt") libraries resolved, none missing"

# The runtime package list: what owns the NEEDED libraries, less the base, plus ca-certificates.
id=$(P create "$TAG")
P cp "$id:/usr/local/bin/layer4-lb" "$WORK/"
P cp "$id:/usr/local/bin/layer4-lb-controller" "$WORK/"
P rm "$id" >/dev/null
mapfile -t needed < <(readelf -d "$WORK/layer4-lb" "$WORK/layer4-lb-controller" |
	sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
mapfile -t owners < <(R --entrypoint dpkg "$TAG" -S "${needed[@]/#/*/}" |
	sed 's/:.*//' | sort -u)
# shellcheck disable=SC2016 # ${Package} is dpkg-query's, not the shell's
R --entrypoint dpkg-query debian:bookworm-slim -W -f '${Package}\n' | sort -u >"$WORK/base.pkgs"
want=$( { printf '%s\n' "${owners[@]}" | comm -23 - "$WORK/base.pkgs"; echo ca-certificates; } |
	sort -u | tr '\n' ' ')
have=$(awk '/^FROM /{n++} n==2' "$ROOT/Dockerfile" |
	sed -n '/apt-get install/,/&&.*rm -rf/p' | sed 's/[\\]//g' | tr -s '[:blank:]' '\n' |
	grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -v -E '^(apt-get|install|rm)$' | sort -u | tr '\n' ' ')
echo "NEEDED: ${needed[*]}"
echo "owned by: ${owners[*]}"
[ "$want" = "$have" ] || fail "Dockerfile runtime packages are '$have'; the binaries need '$want'"
ok "runtime packages = NEEDED owners - base + ca-certificates: $have"

# shellcheck disable=SC2016
extra=$(R --entrypoint dpkg-query "$TAG" -W -f '${Package}\n' |
	grep -E -e '-dev$' -e '^(gcc|gcc-12|cpp|cmake|make|binutils|pkg-config|pkgconf)$' || true)
[ -z "$extra" ] || fail "build tools in the runtime image: $extra"
size=$(P image inspect --format '{{.Size}}' "$TAG")
base_size=$(P image inspect --format '{{.Size}}' debian:bookworm-slim)
ok "no compiler or -dev package; image $((size / 1000000)) MB (base $((base_size / 1000000)) MB + $(((size - base_size) / 1000000)) MB)"
[ "$size" -lt 150000000 ] || fail "image is $size bytes: more than 150 MB"

# ---- the dataplane serving a request, as deploy/docker-compose.yml runs it ----------------------
# Its command and healthcheck come from the compose file; like it: host network, read-only root,
# the socket folder a tmpfs owned by the user (compose says uid=65532,gid=65532, which Docker
# passes to the kernel; podman 4.3 refuses those and spells it "U").
compose=$ROOT/deploy/docker-compose.yml
mapfile -t dp_cmd < <(python3 - "$compose" <<'EOF'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))["services"]["dataplane"]
assert d["network_mode"] == "host", "network_mode is not host"
assert "sysctls" not in d, "sysctls are refused with host networking"
assert "/etc/layer4-lb/lb.yaml:ro" in " ".join(d["volumes"]), "config not mounted read-only"
print("\n".join(d["command"]))
EOF
)
mapfile -t dp_health < <(python3 -c 'import sys, yaml
t = yaml.safe_load(open(sys.argv[1]))["services"]["dataplane"]["healthcheck"]["test"]
assert t[0] == "CMD", t
print("\n".join(t[1:]))' "$compose")
if [ ${#dp_cmd[@]} -eq 0 ] || [ ${#dp_health[@]} -eq 0 ]; then
	fail "no command or healthcheck in $compose"
fi
echo "compose command: ${dp_cmd[*]}; healthcheck: ${dp_health[*]}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(free_port)
lport=$(free_port)
mkdir -p "$WORK/www"
marker="layer4-lb image test $$ $(date +%s%N)"
echo "$marker" >"$WORK/www/index.html"
python3 -m http.server "$bport" --bind 127.0.0.1 --directory "$WORK/www" >"$WORK/http.log" 2>&1 &
HTTP_PID=$!
# No control_socket: the compose command's --control-socket provides it.
cat >"$WORK/lb.yaml" <<EOF
drain_timeout_ms: 5000
listeners:
  - name: web
    listen: 127.0.0.1:$lport
    backends:
      - address: 127.0.0.1:$bport
EOF
chmod 0644 "$WORK/lb.yaml"

# The project's seccomp profile (io_uring allowed); LB_TEST_SECCOMP_PROFILE tries another.
profile=${LB_TEST_SECCOMP_PROFILE:-$ROOT/deploy/seccomp/layer4-lb.json}
[ -s "$profile" ] || fail "no seccomp profile at $profile"
echo "seccomp: $profile"

uring_ok=1
[ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" = 0 ] || uring_ok=0

serve() { # serve ENGINE [podman run options...]: start, ping, proxy one request, drain
	local engine=$1 status body code
	shift
	P run -d --name "$CTR" "${RUNOPTS[@]}" --network host --read-only --read-only-tmpfs=false \
		--tmpfs /run/layer4-lb:mode=0750,U \
		-v "$WORK/lb.yaml:/etc/layer4-lb/lb.yaml:ro" "$@" \
		"$TAG" "${dp_cmd[@]}" >/dev/null
	for _ in $(seq 50); do
		P exec "$CTR" "${dp_health[@]}" >/dev/null 2>&1 && break
		sleep 0.2
	done
	P exec "$CTR" "${dp_health[@]}" >/dev/null 2>&1 ||
		{ P logs "$CTR"; fail "the healthcheck (${dp_health[*]}) never passed"; }
	body=$(curl -sS -m 10 "http://127.0.0.1:$lport/index.html") ||
		{ P logs "$CTR"; fail "no answer through 127.0.0.1:$lport"; }
	[ "$body" = "$marker" ] || fail "through the proxy: '$body', want '$marker'"
	status=$(P exec "$CTR" layer4-lb ctl status | head -3)
	echo "$status" | grep -q "$engine engine" || { echo "$status"; fail "not the $engine engine"; }
	echo "$status" | grep -q "1 accepted" || { echo "$status"; fail "no accepted connection counted"; }
	P stop -t 20 "$CTR" >/dev/null
	code=$(P inspect --format '{{.State.ExitCode}}' "$CTR")
	P logs "$CTR" >"$WORK/dataplane-$engine.log" 2>&1
	P rm "$CTR" >/dev/null
	[ "$code" = 0 ] || { cat "$WORK/dataplane-$engine.log"; fail "exit code $code after stop"; }
	grep -q 'drained, exiting' "$WORK/dataplane-$engine.log" || fail "no drain on stop"
	ok "$engine engine: healthcheck passes, one request proxied to http.server on 127.0.0.1:$bport, drained, exit 0"
}
if [ "$uring_ok" = 1 ]; then
	# As deploy/docker-compose.yml and the chart run it (no_new_privs: the runtime applies the
	# filter just before exec), then without no_new_privs (the runtime applies it earlier and
	# still has the user switch to make under it).
	serve io_uring --security-opt "seccomp=$profile" --security-opt no-new-privileges \
		--cap-drop ALL
	serve io_uring --security-opt "seccomp=$profile"
else
	echo "note: kernel.io_uring_disabled is set on this host: io_uring run left out"
fi
# podman's default seccomp profile refuses io_uring (as Docker 25+ does): epoll fallback.
serve epoll

phase "done"
echo "PASS: image $TAG ($((size / 1000000)) MB) in $(($(date +%s) - T0)) s"
