#!/usr/bin/env bash
# sparkplug-npm.sh — install the Node.js Sparkplug B edge node that the MQTT
# source's interop tests (agent/source/mqtt, TestInteropMQTT*) start.
#
# The edge node (sim/interop/sparkplug/edge.js) encodes its payloads with the
# npm packages sparkplug-payload and sparkplug-client, pinned in
# package-lock.json. `npm ci` runs only when node_modules is missing, so a
# rerun costs nothing. Needs node and npm (Debian: apt-get install nodejs npm).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir="$root/sim/interop/sparkplug"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	bash "$root/scripts/ensure-apt-packages.sh" nodejs npm
fi
if [[ ! -d $dir/node_modules/sparkplug-client || ! -d $dir/node_modules/sparkplug-payload ]]; then
	echo "sparkplug: npm ci in $dir"
	(cd "$dir" && npm ci --no-audit --no-fund)
fi
echo "sparkplug: edge node ready: node $dir/edge.js ($(node --version))"
