#!/usr/bin/env bash
# node-opcua.sh — install (and optionally start) the node-opcua server that
# the OPC UA source's interop tests (agent/source/opcua, TestInteropOPCUA*)
# run as a child process on 127.0.0.1.
#
#   source scripts/peers/node-opcua.sh
#       provision: `npm ci` into sim/interop/opcua-server when its
#       node_modules is missing (node-opcua pinned in package-lock.json,
#       ≈17 s, 74 MB; EBADENGINE warnings on Node 20 are expected, see
#       PEERS.md), then export PLANTSYNC_NODE (the node binary) and
#       PLANTSYNC_NODE_OPCUA_DIR (the folder holding server.mjs).
#   bash scripts/peers/node-opcua.sh start --port 4841 --pki DIR [--max-sessions N] [--accept-unknown]
#       provision, then run the server in the foreground (commands on stdin,
#       see the head of server.mjs).
#
# Needs node and npm (Debian: apt-get install nodejs npm; node-opcua wants
# Node 20 or newer).

_node_opcua_provision() {
	local root dir
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
	dir="$root/sim/interop/opcua-server"
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		bash "$root/scripts/ensure-apt-packages.sh" nodejs npm || return 1
	fi
	if [[ ! -f $dir/node_modules/node-opcua/package.json ]]; then
		echo "node-opcua: npm ci in $dir" >&2
		(cd "$dir" && npm ci --no-audit --no-fund >&2) || {
			echo "node-opcua: npm ci failed in $dir" >&2
			return 1
		}
	fi
	PLANTSYNC_NODE=$(command -v node)
	PLANTSYNC_NODE_OPCUA_DIR=$dir
	export PLANTSYNC_NODE PLANTSYNC_NODE_OPCUA_DIR
	echo "node-opcua: $(cd "$dir" && node -p 'require("./node_modules/node-opcua/package.json").version') with node $(node --version) in $dir" >&2
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	_node_opcua_provision
	case ${1:-} in
	start)
		shift
		exec "$PLANTSYNC_NODE" "$PLANTSYNC_NODE_OPCUA_DIR/server.mjs" "$@"
		;;
	"")
		printf 'export PLANTSYNC_NODE=%q PLANTSYNC_NODE_OPCUA_DIR=%q\n' "$PLANTSYNC_NODE" "$PLANTSYNC_NODE_OPCUA_DIR"
		;;
	*)
		echo "usage: source $0 | bash $0 [start --port N --pki DIR [--max-sessions N] [--accept-unknown]]" >&2
		exit 2
		;;
	esac
else
	_node_opcua_provision
fi
