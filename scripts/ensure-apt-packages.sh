#!/usr/bin/env bash
# ensure-apt-packages.sh PKG... — install the Debian packages that are missing.
#
# Used by .ci/run and scripts/interop.sh. Packages that are already installed
# are left alone and `apt-get update` is skipped when nothing is missing, so a
# rerun on a prepared machine costs a dpkg query per package, not a network
# round trip. When something is missing, `apt-get update` runs exactly once
# before the single install.
set -euo pipefail

if (($# == 0)); then
	echo "usage: $0 PKG..." >&2
	exit 2
fi

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
	echo "ensure-apt-packages: apt/dpkg not found; install these yourself: $*" >&2
	exit 1
fi

missing=()
for pkg in "$@"; do
	# db:Status-Status is "installed" only for a fully configured package; a
	# half-installed or removed-but-configured one must be (re)installed.
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [[ $status != installed ]]; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} == 0)); then
	echo "apt: already installed: $*"
	exit 0
fi

sudo=()
if ((EUID != 0)); then
	if ! command -v sudo >/dev/null; then
		echo "ensure-apt-packages: not root and no sudo; install these yourself: ${missing[*]}" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "apt: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"
