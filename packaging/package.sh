#!/usr/bin/env bash
# packaging/package.sh — stage and build the plantsync packages.
#
#   packaging/package.sh stage      stage binaries, plugins, configs, scripts in dist/stage/
#   packaging/package.sh packages   stage, then build .deb and .rpm of agent and hub into dist/
#
# `make package` and `make image` call it after `make build`, passing
# VERSION, COMMIT and DATE: the same values the Makefile stamped into the
# binaries, which this script checks. Run from the repository root.
#
# Plugins: every file in bin/plugins/ (built by `make build` once the
# connector plugins exist) is shipped. A name containing "filedrop" goes to
# the agent package (/usr/lib/plantsync-agent/plugins/), every other one to
# the hub package (/usr/lib/plantsync-hub/plugins/). Their SHA-256 checksums
# are written into the packaged example configs:
#   hub:   a top-level `plugins:` list of {name, path, sha256}, replacing any
#          `plugins:` block of configs/hub.example.yaml (`plugins: []` when
#          no plugin is built);
#   agent: a commented example source (type: plugin, path, sha256) at the end
#          of the config, since a filedrop source needs a site-specific folder.
set -euo pipefail

mode=${1:-packages}
: "${VERSION:?VERSION is required (the version make build stamped)}"
COMMIT=${COMMIT:-unknown}
DATE=${DATE:-}
GO=${GO:-go}
BIN=${BIN:-bin}
DIST=dist # the nfpm configs name dist/stage/ paths
STAGE=$DIST/stage
export MAINTAINER=${MAINTAINER:-plantsync maintainers <maintainers@plantsync.invalid>}

die() {
	echo "package: $*" >&2
	exit 1
}

[[ -f configs/agent.example.yaml && -d packaging ]] || die "run from the repository root"

# Debian and RPM versions must start with a digit and may not contain '-'
# (it separates the release). '+' sorts after, '~' before what precedes it:
#   v1.2.3 → 1.2.3;  v1.2.3-4-gabc1234[-dirty] (git describe) → 1.2.3+4.gabc1234[.dirty]
#   v1.3.0-rc1 → 1.3.0~rc1;  dev, abc1234 (no tag) → 0.0.0~dev, 0.0.0~abc1234
pkg_version() {
	local v=${1#v}
	if [[ $v =~ ^([0-9][^-]*)-([0-9]+)-g([0-9a-f]+)(-dirty)?$ ]]; then
		v="${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}${BASH_REMATCH[4]:+.dirty}"
	elif [[ $v =~ ^([0-9][^-]*)-(.+)$ ]]; then
		v="${BASH_REMATCH[1]}~${BASH_REMATCH[2]//-/.}"
	elif [[ ! $v =~ ^[0-9] ]]; then
		v="0.0.0~${v//-/.}"
	fi
	printf '%s\n' "${v//[^A-Za-z0-9.+~]/.}"
}
export PKG_VERSION=$(pkg_version "$VERSION")
export ARCH=${ARCH:-$($GO env GOARCH)}
if [[ -z ${SOURCE_DATE_EPOCH:-} && -n $DATE ]]; then
	# Package file times follow the build date, so a rebuild is identical.
	SOURCE_DATE_EPOCH=$(date -u -d "$DATE" +%s 2>/dev/null || true)
	[[ -n $SOURCE_DATE_EPOCH ]] && export SOURCE_DATE_EPOCH
fi

# check_binary PROGRAM: built, static, and stamped with this VERSION.
check_binary() {
	local b=$BIN/$1 want
	[[ -x $b ]] || die "$b missing: run make build"
	want="$1 $VERSION (commit $COMMIT"
	[[ $("$b" version) == "$want"* ]] ||
		die "$b says '$("$b" version)', want '$want...': run make build with the same VERSION and COMMIT"
	grep -q 'CGO_ENABLED=0' <<<"$($GO version -m "$b")" || die "$b is not a static (CGO_ENABLED=0) build"
}

# plugin_name FILE: the name a config refers to a plugin by.
plugin_name() {
	local n
	n=$(basename "$1")
	n=${n#plantsync-plugin-}
	printf '%s\n' "${n#plantsync-}"
}

# stage_common PKG: binary, scripts and an empty plugin folder.
stage_common() {
	local pkg=$1 desc=$2 config=$3 s
	rm -rf "${STAGE:?}/${pkg#plantsync-}"
	s=$STAGE/${pkg#plantsync-}
	# Explicit modes: the packages take folder modes from the stage, and a
	# CI umask of 077 must not make them private.
	mkdir -p "$s/plugins" "$s/scripts" "$s/plugin-docs"
	chmod 0755 "$s" "$s/plugins" "$s/scripts" "$s/plugin-docs"
	install -m 0755 "$BIN/$pkg" "$s/$pkg"
	for script in postinstall preremove postremove; do
		sed -e "s|@NAME@|$pkg|g" -e "s|@DESCRIPTION@|$desc|g" -e "s|@CONFIG@|$config|g" \
			"packaging/scripts/$script.sh" >"$s/scripts/$script.sh"
		chmod 0755 "$s/scripts/$script.sh"
	done
}

# add_plugin PKG FILE: ship FILE with PKG; prints "name path sha256".
add_plugin() {
	local pkg=$1 f=$2 s=$STAGE/${1#plantsync-} name sum src
	name=$(plugin_name "$f")
	install -m 0755 "$f" "$s/plugins/$(basename "$f")"
	sum=$(sha256sum "$f" | cut -d' ' -f1)
	src=plugins/$name/README.md
	if [[ -f $src ]]; then
		install -d -m 0755 "$s/plugin-docs/$name"
		install -m 0644 "$src" "$s/plugin-docs/$name/README.md"
	fi
	printf '%s %s %s\n' "$name" "/usr/lib/$pkg/plugins/$(basename "$f")" "$sum"
}

stage() {
	check_binary plantsync-agent
	check_binary plantsync-hub
	stage_common plantsync-agent "plantsync agent" agent.yaml
	stage_common plantsync-hub "plantsync hub" hub.yaml

	local agent_plugins=() hub_plugins=() f
	if [[ -d $BIN/plugins ]]; then
		for f in "$BIN"/plugins/*; do
			[[ -f $f && -x $f ]] || continue
			if [[ $(basename "$f") == *filedrop* ]]; then
				agent_plugins+=("$(add_plugin plantsync-agent "$f")")
			else
				hub_plugins+=("$(add_plugin plantsync-hub "$f")")
			fi
		done
	fi

	# Hub: replace any plugins: block of the example with the shipped list.
	{
		awk '
			/^plugins:/ { skip = 1; next }
			skip && (/^[ \t]/ || /^- / || /^$/) { next }
			{ skip = 0; print }
		' configs/hub.example.yaml
		echo
		echo "# Connector plugins shipped with this package, pinned by SHA-256: the"
		echo "# checksums were written when the package was built, and the hub refuses"
		echo "# a plugin binary whose checksum differs. Destinations refer to them by name."
		if ((${#hub_plugins[@]} == 0)); then
			echo "plugins: []"
		else
			echo "plugins:"
			local name path sum line
			for line in "${hub_plugins[@]}"; do
				read -r name path sum <<<"$line"
				printf '  - name: %s\n    path: %s\n    sha256: %s\n' "$name" "$path" "$sum"
			done
		fi
	} >"$STAGE/hub/hub.yaml"

	# Agent: the example as it is, plus a commented source per site plugin.
	{
		cat configs/agent.example.yaml
		if ((${#agent_plugins[@]} > 0)); then
			echo
			echo "# Site plugins shipped with this package, pinned by SHA-256 (written when"
			echo "# the package was built). To use one, add a source like the one below to"
			echo "# \`sources:\` (its options: /usr/share/doc/plantsync-agent/plugins/NAME/README.md)"
			echo "# and let the service write to the folder it watches:"
			echo "#   systemctl edit plantsync-agent  →  [Service] ReadWritePaths=/srv/plantsync/drop"
			local name path sum line
			for line in "${agent_plugins[@]}"; do
				read -r name path sum <<<"$line"
				printf '#\n#  - name: %s\n#    type: plugin\n#    path: %s\n#    sha256: %s\n' "$name" "$path" "$sum"
			done
		fi
	} >"$STAGE/agent/agent.yaml"

	echo "staged $STAGE (version $VERSION, package version $PKG_VERSION, $ARCH;" \
		"plugins: agent ${#agent_plugins[@]}, hub ${#hub_plugins[@]})"
}

packages() {
	stage
	local pkg packager
	for pkg in agent hub; do
		for packager in deb rpm; do
			$GO tool nfpm package --config "packaging/nfpm/$pkg.yaml" --packager "$packager" --target "$DIST/"
		done
	done
}

case $mode in
stage) stage ;;
packages) packages ;;
*) die "unknown mode '$mode'; want stage or packages" ;;
esac
