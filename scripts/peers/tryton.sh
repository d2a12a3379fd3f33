#!/usr/bin/env bash
# tryton.sh — install Tryton 6.0 (Debian 12 packages) and build, once, the
# seeded SQLite database the Tryton connector's interop tests
# (plugins/tryton, TestInteropTryton*) copy and start on 127.0.0.1.
#
#   source scripts/peers/tryton.sh
#       provision (packages, seed), then export
#         PLANTSYNC_TRYTOND        the trytond binary
#         PLANTSYNC_TRYTON_SEED    a folder with plantsync.sqlite (modules
#                                  activated, seeded) and admin.pass
#   bash scripts/peers/tryton.sh   the same, printing the exports
#
# The seed is cached under .state/interop/tryton-seed-<key>, the key being
# the trytond version and the seed script's checksum, so a rerun costs
# nothing and a changed seed script rebuilds it (≈15 s: trytond-admin
# --all, module activation, scripts/peers/tryton-seed.py). Facts behind it:
# ../shared/PEERS.md (Tryton 6.0).

_tryton_provision() {
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
	bash "$root/scripts/ensure-apt-packages.sh" tryton-server tryton-modules-purchase \
		tryton-modules-purchase-request tryton-modules-purchase-requisition tryton-modules-stock \
		tryton-modules-stock-supply tryton-modules-production >&2 || return 1
	_tryton_stop_system

	local trytond admin python version key seed
	trytond=$(command -v trytond) || { echo "tryton: trytond not found after install" >&2; return 1; }
	admin=$(command -v trytond-admin) || { echo "tryton: trytond-admin not found after install" >&2; return 1; }
	# The seed script needs the interpreter trytond runs with (a pyenv
	# python3 on PATH does not see Debian's trytond package).
	python=$(head -n 1 "$trytond" | sed 's/^#! *//')
	version=$("$trytond" --version 2>/dev/null | awk '{print $2}')
	key=$(printf '%s %s' "$version" "$(sha256sum "$root/scripts/peers/tryton-seed.py" | cut -c1-16)" | sha256sum | cut -c1-12)
	seed="$root/.state/interop/tryton-seed-$key"
	if [[ ! -f $seed/plantsync.sqlite ]]; then
		_tryton_build_seed "$root" "$seed" "$admin" "$python" || return 1
	fi
	PLANTSYNC_TRYTOND=$trytond
	PLANTSYNC_TRYTON_SEED=$seed
	export PLANTSYNC_TRYTOND PLANTSYNC_TRYTON_SEED
	echo "tryton: trytond $version, seed $seed" >&2
}

# The Debian package registers a tryton-server service; the tests run their
# own servers on their own ports, so a system one is only in the way.
_tryton_stop_system() {
	local sudo=()
	if ((EUID != 0)) && command -v sudo >/dev/null; then
		sudo=(sudo -n)
	fi
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		"${sudo[@]}" systemctl stop tryton-server 2>/dev/null || true
	elif command -v service >/dev/null; then
		"${sudo[@]}" service tryton-server stop >/dev/null 2>&1 || true
	fi
}

_tryton_build_seed() {
	local root=$1 seed=$2 admin=$3 python=$4 tmp
	echo "tryton: building the seed database in $seed (about 15 s)" >&2
	mkdir -p "$(dirname "$seed")" || return 1
	tmp=$(mktemp -d "$(dirname "$seed")/tryton-seed.XXXXXX") || return 1
	printf '%s\n' "plantsync-interop-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$tmp/admin.pass"
	cat >"$tmp/trytond.conf" <<-CONF
		[database]
		uri = sqlite://
		path = $tmp
	CONF
	touch "$tmp/plantsync.sqlite"
	if ! TRYTONPASSFILE="$tmp/admin.pass" "$admin" -c "$tmp/trytond.conf" -d plantsync --all --email admin@example.com >"$tmp/admin.log" 2>&1 ||
		! "$admin" -c "$tmp/trytond.conf" -d plantsync -u purchase_request purchase_requisition stock_supply production \
			--activate-dependencies >>"$tmp/admin.log" 2>&1 ||
		! "$python" "$root/scripts/peers/tryton-seed.py" "$tmp/trytond.conf" plantsync >>"$tmp/admin.log" 2>&1; then
		echo "tryton: building the seed failed; log:" >&2
		tail -n 30 "$tmp/admin.log" >&2
		rm -rf "$tmp"
		return 1
	fi
	tail -n 1 "$tmp/admin.log" >&2
	rm -f "$tmp/trytond.conf"
	rm -rf "$seed"
	mv "$tmp" "$seed"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	_tryton_provision
	printf 'export PLANTSYNC_TRYTOND=%q PLANTSYNC_TRYTON_SEED=%q\n' "$PLANTSYNC_TRYTOND" "$PLANTSYNC_TRYTON_SEED"
else
	_tryton_provision
fi
