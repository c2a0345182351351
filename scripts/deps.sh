#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages layer4-lb needs to build, test and run its demo.
# As root it installs them with apt-get; otherwise it prints the apt-get line and stops.
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang liburing-dev libcjson-dev libyaml-dev
      libcurl4-openssl-dev libcmocka-dev libseccomp-dev python3 curl openssl iproute2
      libclang-rt-14-dev cppcheck clang-tools-14)
[ "${LB_DEPS_EXTRA:-}" ] && read -r -a extra <<<"$LB_DEPS_EXTRA" && PKGS+=("${extra[@]}")

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "layer4-lb needs these Debian packages: ${missing[*]}" >&2
	echo "Install them as root, then run this again:" >&2
	echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
