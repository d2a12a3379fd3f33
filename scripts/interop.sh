#!/usr/bin/env bash
# interop.sh — run the Go interop tests against real third-party peers.
#
# Called by `make interop` and by .ci/run. It provisions the peers, exports
# their paths in PLANTSYNC_* variables and runs every TestInterop* test (files
# tagged `//go:build interop`). The tests start their own peer processes on
# 127.0.0.1 from those paths; this script never starts a peer itself.
#
# It fails when the go test run fails, when no TestInterop test passed (a
# filter or build tag that silently matches nothing must not look green), and
# when any test was skipped (a skipped interop test is a missing peer, not a
# pass).
#
# Environment:
#   PLANTSYNC_MOSQUITTO, PLANTSYNC_MOSQUITTO_PUB, PLANTSYNC_MOSQUITTO_SUB
#                          override the broker and client paths
#   PLANTSYNC_INTEROP_LOG  where the go test output goes
#                          (default .state/interop/go-test.log)
#   INTEROP_RUN            -run pattern (default Interop)
#   INTEROP_TIMEOUT        go test -timeout (default 20m)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { printf 'interop: %s\n' "$*"; }
die() {
	printf 'interop: FAIL: %s\n' "$*" >&2
	exit 1
}

# --- peer: mosquitto (MQTT broker, Debian 12 ships 2.0.11) -------------------

provision_mosquitto() {
	bash scripts/ensure-apt-packages.sh mosquitto mosquitto-clients

	: "${PLANTSYNC_MOSQUITTO:=/usr/sbin/mosquitto}"
	: "${PLANTSYNC_MOSQUITTO_PUB:=/usr/bin/mosquitto_pub}"
	: "${PLANTSYNC_MOSQUITTO_SUB:=/usr/bin/mosquitto_sub}"
	local bin
	for bin in "$PLANTSYNC_MOSQUITTO" "$PLANTSYNC_MOSQUITTO_PUB" "$PLANTSYNC_MOSQUITTO_SUB"; do
		[[ -x $bin ]] || die "$bin is not an executable"
	done
	export PLANTSYNC_MOSQUITTO PLANTSYNC_MOSQUITTO_PUB PLANTSYNC_MOSQUITTO_SUB

	stop_system_mosquitto
	log "mosquitto: $("$PLANTSYNC_MOSQUITTO" -h 2>&1 | head -n 1 || true) at $PLANTSYNC_MOSQUITTO"
}

# Debian's package registers a service (systemd unit and /etc/init.d script).
# The tests run their own brokers with their own configs, and a system broker
# on 1883 with Debian's defaults (persistence, 1000-message queue) is the kind
# of thing a test talking to the wrong port would silently succeed against.
stop_system_mosquitto() {
	local sudo=()
	if ((EUID != 0)) && command -v sudo >/dev/null; then
		sudo=(sudo -n)
	fi
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		"${sudo[@]}" systemctl stop mosquitto 2>/dev/null || true
	elif command -v service >/dev/null; then
		"${sudo[@]}" service mosquitto stop >/dev/null 2>&1 || true
	fi

	# Without an init system the service wrappers may not know about a broker
	# that was started by hand with the system config: that config writes this
	# pid file, so stop exactly that process.
	local pidfile=/run/mosquitto/mosquitto.pid pid
	if [[ -r $pidfile ]]; then
		pid=$(<"$pidfile")
		if [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null || true) == mosquitto ]]; then
			log "stopping system mosquitto (pid $pid from $pidfile)"
			"${sudo[@]}" kill "$pid" 2>/dev/null || true
			local deadline=$((SECONDS + 10))
			while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do
				sleep 0.2
			done
		fi
	fi

	if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
		die "something still listens on 127.0.0.1:1883 (a system mosquitto?); stop it and rerun"
	fi
}

# --- peer: node-opcua (OPC UA server) ----------------------------------------
source scripts/peers/node-opcua.sh # node-opcua server (npm) for TestInteropOPCUA* in agent/source/opcua; exports PLANTSYNC_NODE, PLANTSYNC_NODE_OPCUA_DIR

# --- peer: Tryton 6.0 (ERP) -----------------------------------------------------
source scripts/peers/tryton.sh # Tryton 6.0 (apt) + cached seeded SQLite database for TestInteropTryton* in plugins/tryton and e2e; exports PLANTSYNC_TRYTOND, PLANTSYNC_TRYTON_SEED

# --- provision ------------------------------------------------------------------

provision_mosquitto
bash scripts/peers/sparkplug-npm.sh # Sparkplug B edge node (npm) for TestInteropMQTT* in agent/source/mqtt
log "peers provisioned: mosquitto, node-opcua, Sparkplug B edge node (npm), Tryton"

# --- run ------------------------------------------------------------------------

logfile=${PLANTSYNC_INTEROP_LOG:-.state/interop/go-test.log}
mkdir -p "$(dirname "$logfile")"
run_pattern=${INTEROP_RUN:-Interop}
timeout=${INTEROP_TIMEOUT:-20m}

# The Makefile exports CGO_ENABLED=0 for static binaries; the race detector
# needs cgo.
export CGO_ENABLED=1

log "go test -race -count=1 -tags interop -run '$run_pattern' -timeout $timeout -v ./... (log: $logfile)"
set +e
go test -race -count=1 -tags interop -run "$run_pattern" -timeout "$timeout" -v ./... 2>&1 | tee "$logfile"
go_rc=${PIPESTATUS[0]}
set -e

# PASS/FAIL/SKIP count top-level tests and subtests (-v prints one indented
# line per subtest); the TestInterop count is top-level tests only.
count() { grep -cE "^[[:space:]]*--- $1: " "$logfile" || true; }
passed=$(count PASS)
failed=$(count FAIL)
skipped=$(count SKIP)
interop_passed=$(grep -cE '^--- PASS: TestInterop' "$logfile" || true)

echo
echo "==================== interop summary ===================="
printf '  PASS %d   FAIL %d   SKIP %d   (incl. subtests; top-level TestInterop* passed: %d)\n' \
	"$passed" "$failed" "$skipped" "$interop_passed"
if ((failed > 0)); then
	echo "  failed:"
	grep -E '^[[:space:]]*--- FAIL: ' "$logfile" | sed 's/^[[:space:]]*--- FAIL: /    /'
fi
if ((skipped > 0)); then
	echo "  skipped:"
	grep -E '^[[:space:]]*--- SKIP: ' "$logfile" | sed 's/^[[:space:]]*--- SKIP: /    /'
fi
# Build failures and panics do not produce "--- FAIL" lines.
if grep -qE '^FAIL[[:space:]]' "$logfile"; then
	echo "  failed packages:"
	grep -E '^FAIL[[:space:]]' "$logfile" | sed 's/^/    /'
fi
echo "  log: $logfile"
echo "========================================================="

# Report every reason, not just the first: a build failure and "nothing ran"
# usually point at the same missing file.
reasons=()
if ((go_rc != 0)); then
	reasons+=("go test exited with status $go_rc")
fi
if ((interop_passed == 0)); then
	reasons+=("no interop test ran: no '--- PASS: TestInterop' line (want _test.go files with '//go:build interop' and TestInterop* names)")
fi
if ((skipped > 0)); then
	reasons+=("$skipped test(s) skipped; an interop test must not skip (missing peer?)")
fi
if ((${#reasons[@]} > 0)); then
	for r in "${reasons[@]}"; do
		printf 'interop: FAIL: %s\n' "$r" >&2
	done
	exit 1
fi
log "ok: $interop_passed TestInterop* passed"
