#!/usr/bin/env bash
# packaging/test/deb.sh — install, check, upgrade and remove the packages
# `make package` built, on this machine, as root. .ci/run calls it; it is
# safe to run by hand on a Debian machine that has no plantsync installed
# otherwise: it purges both packages (and so their users and folders) when it
# ends, whatever happened.
#
# What it shows, for the agent (the hub gets the install/verify/purge part):
#   files, conffile, version; the system user and folders; units neither
#   enabled nor started; `systemd-analyze verify` and `security`;
#   `plantsync-agent validate` on the shipped example with the dev
#   certificates it names, as the service user; the installed agent running
#   as that user and draining on SIGTERM with events left unsent; an
#   upgrade over itself keeping the edited config and the buffer; remove
#   keeping the state folder; purge removing folders and user. The .rpm
#   files are inspected with rpm (they cannot be installed here).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
check() { printf '  ok  %s\n' "$*"; }
section() { printf '\n--- %s\n' "$*"; }

((EUID == 0)) || fail "run as root (it installs packages)"
for tool in dpkg systemd-analyze jq setpriv sha256sum; do
	command -v "$tool" >/dev/null || fail "$tool not found"
done

one() { # one GLOB: the single file matching it
	local m=($1)
	((${#m[@]} == 1)) && [[ -f ${m[0]} ]] || fail "want exactly one $1, found: ${m[*]}"
	printf '%s\n' "${m[0]}"
}
agent_deb=$(one "dist/plantsync-agent_*.deb")
hub_deb=$(one "dist/plantsync-hub_*.deb")
agent_rpm=$(one "dist/plantsync-agent-*.rpm")
hub_rpm=$(one "dist/plantsync-hub-*.rpm")

# installed PKG: dpkg knows PKG, fully or as leftover config files.
installed() {
	local s
	s=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)
	[[ -n $s && $s != not-installed ]]
}

# running EXE: a process runs EXE (by path: other plantsync processes, e.g.
# of tests, may run on this machine from bin/).
running() {
	local p
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == "$1" ]] && return 0
	done
	return 1
}

tmp=$(mktemp -d)
agent_pid=""
cleanup() {
	local rc=$?
	if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
		kill -KILL "$agent_pid" 2>/dev/null || true
	fi
	for p in plantsync-agent plantsync-hub; do
		if installed "$p"; then dpkg --purge "$p" >/dev/null 2>&1 || true; fi
	done
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT

for p in plantsync-agent plantsync-hub; do
	if installed "$p"; then
		echo "purging $p left from an earlier run"
		dpkg --purge "$p"
	fi
done
for u in plantsync-agent plantsync-hub; do
	! getent passwd "$u" >/dev/null || fail "user $u exists before the install; remove it first"
done

section "install $agent_deb $hub_deb"
dpkg -i "$agent_deb" "$hub_deb" </dev/null

for pkg in plantsync-agent plantsync-hub; do
	conf=${pkg#plantsync-}.yaml

	section "$pkg: files"
	for f in "/usr/bin/$pkg" "/usr/lib/systemd/system/$pkg.service" "/etc/$pkg/$conf" \
		"/usr/share/$pkg/${conf%.yaml}.example.yaml" "/usr/share/doc/$pkg/install.md"; do
		[[ -f $f ]] || fail "$f missing"
		dpkg -S "$f" >/dev/null || fail "$f not owned by a package"
	done
	check "binary, unit, config, example, docs"
	grep -q " /etc/$pkg/$conf " <<<"$(dpkg-query -W -f='${Conffiles}\n' "$pkg")" ||
		fail "/etc/$pkg/$conf is not a conffile"
	check "/etc/$pkg/$conf is a conffile (kept when edited)"
	want=$("bin/$pkg" version)
	got=$("/usr/bin/$pkg" version)
	[[ $got == "$want" ]] || fail "installed '$got', built '$want'"
	[[ $got != *" dev "* && $got != *"commit unknown"* ]] || fail "unstamped binary: $got"
	check "version: $got"

	section "$pkg: plugins and their checksums in the example config"
	n=0
	for f in bin/plugins/*; do
		[[ -f $f ]] || continue
		owner=plantsync-hub
		[[ $(basename "$f") == *filedrop* ]] && owner=plantsync-agent
		[[ $owner == "$pkg" ]] || continue
		dst=/usr/lib/$pkg/plugins/$(basename "$f")
		[[ -x $dst ]] || fail "$dst missing"
		sum=$(sha256sum "$f" | cut -d' ' -f1)
		grep -q "sha256: $sum" "/etc/$pkg/$conf" || fail "checksum of $(basename "$f") not in /etc/$pkg/$conf"
		n=$((n + 1))
	done
	if [[ $pkg == plantsync-hub ]] && ((n == 0)); then
		grep -qx 'plugins: \[\]' /etc/plantsync-hub/hub.yaml || fail "no plugins built, want 'plugins: []' in hub.yaml"
	fi
	check "$n plugin(s)"

	section "$pkg: user and folders"
	IFS=: read -r _ _ uid gid _ home shell < <(getent passwd "$pkg") || fail "no user $pkg"
	((uid < 1000)) || fail "$pkg has uid $uid, want a system user"
	[[ $home == /var/lib/$pkg && $shell == */nologin ]] || fail "$pkg: home $home shell $shell"
	[[ $(stat -c '%U:%G %a' "/var/lib/$pkg") == "$pkg:$pkg 700" ]] || fail "/var/lib/$pkg: $(stat -c '%U:%G %a' "/var/lib/$pkg")"
	[[ $(stat -c '%U:%G %a' "/etc/$pkg") == "root:$pkg 750" ]] || fail "/etc/$pkg: $(stat -c '%U:%G %a' "/etc/$pkg")"
	check "system user $pkg (uid $uid), /var/lib/$pkg 700, /etc/$pkg 750"

	section "$pkg: unit"
	unit=/usr/lib/systemd/system/$pkg.service
	for d in Type=notify WatchdogSec= Restart=on-failure "User=$pkg" "StateDirectory=$pkg" \
		"ConfigurationDirectory=$pkg" NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
		PrivateTmp=yes ExecReload= TimeoutStopSec=; do
		grep -q "^$d" "$unit" || fail "$unit: no $d"
	done
	grep -qx 'CapabilityBoundingSet=' "$unit" || fail "$unit: CapabilityBoundingSet is not empty"
	! grep -q '^ReadWritePaths=' "$unit" || fail "$unit: writable paths beyond the state folder"
	check "notify + watchdog, restart on failure, own user, state/config folders, hardening"
	[[ ! -e /etc/systemd/system/multi-user.target.wants/$pkg.service ]] || fail "$pkg enabled by the install"
	state=$(systemctl is-enabled "$pkg.service" 2>/dev/null || true)
	[[ $state == disabled ]] || fail "$pkg.service is '$state', want disabled"
	! running "/usr/bin/$pkg" || fail "$pkg started by the install"
	check "neither enabled nor started"
	systemd-analyze verify "$unit"
	check "systemd-analyze verify"
	systemd-analyze security --offline=true --threshold=20 "$unit" | tail -n 1
	check "systemd-analyze security: exposure at most 2.0"
done

section "plantsync-agent: validate the shipped example with the dev certificates it names"
cfg=/etc/plantsync-agent/agent.yaml
# tls_path KEY: the uplink.tls file the example names.
tls_path() { awk -v k="$1" '/^  tls:/ { t = 1; next } t && /^  [^ ]/ { t = 0 } t && $1 == k":" { print $2; exit }' "$cfg"; }
yaml_agent() { awk -v k="$1" '/^agent:/ { a = 1; next } a && /^[^ ]/ { a = 0 } a && $1 == k":" { print $2; exit }' "$cfg"; }
ca=$(tls_path ca) crt=$(tls_path cert) key=$(tls_path key) id=$(yaml_agent id) plant=$(yaml_agent plant)
[[ -n $ca && -n $crt && -n $key && -n $id && -n $plant ]] || fail "cannot read uplink.tls or agent id/plant from $cfg"
# The hub's PKI (dev: a temp folder), a key and CSR made on the "plant
# server", a certificate issued from the CSR: install.md's steps.
plantsync-hub pki init -dir "$tmp/pki" -hosts localhost >/dev/null
plantsync-agent pki csr -id "$id" -key "$key" -out "$tmp/$id.csr" >/dev/null
mkdir -p "$tmp/issued"
plantsync-hub pki issue-agent -dir "$tmp/pki" -id "$id" -plant "$plant" -csr "$tmp/$id.csr" -out "$tmp/issued" >/dev/null
install -m 0644 "$tmp/issued/$id.crt" "$crt"
install -m 0644 "$tmp/issued/ca.crt" "$ca"
chown plantsync-agent:plantsync-agent "$key"
chmod 0600 "$key"
setpriv --reuid=plantsync-agent --regid=plantsync-agent --init-groups -- plantsync-agent validate -config "$cfg"
check "validate as plantsync-agent: $ca $crt $key"

section "plantsync-hub: PKI in the state folder, validate the shipped example"
setpriv --reuid=plantsync-hub --regid=plantsync-hub --init-groups -- \
	plantsync-hub pki init -dir /var/lib/plantsync-hub/pki -hosts localhost >/dev/null
setpriv --reuid=plantsync-hub --regid=plantsync-hub --init-groups -- \
	plantsync-hub validate -config /etc/plantsync-hub/hub.yaml
check "validate as plantsync-hub"

section "plantsync-agent: edit the config, run the installed agent, drain on SIGTERM"
# An operator's edit: debug logs, a hub that does not answer (so events stay
# unsent), and a generator source in place of the MQTT example.
admin=127.0.0.1:19464
{
	echo "# edited by packaging/test/deb.sh"
	awk -v admin="$admin" '
		/^sources:/ {
			print "sources:\n  - name: load\n    type: generator\n    rate: 2000\n    count: 1000"
			skip = 1; next
		}
		skip && /^[a-z]/ { skip = 0 }
		skip { next }
		/^  hub:/ { print "  hub: 127.0.0.1:9"; next }
		/^  listen:/ { print "  listen: " admin; next }
		/^  level:/ { print "  level: debug"; next }
		{ print }
	' "$cfg"
} >"$tmp/agent.yaml"
install -m 0644 "$tmp/agent.yaml" "$cfg"
plantsync-agent validate -config "$cfg" >/dev/null
setpriv --reuid=plantsync-agent --regid=plantsync-agent --init-groups -- \
	/usr/bin/plantsync-agent run -config "$cfg" 2>"$tmp/agent.log" &
agent_pid=$!
events=0
for _ in $(seq 100); do
	events=$(plantsync-agent status -addr "$admin" 2>/dev/null | jq -r '.buffer.events' 2>/dev/null || echo 0)
	[[ $events == 1000 ]] && break
	kill -0 "$agent_pid" 2>/dev/null || { cat "$tmp/agent.log" >&2; fail "the agent exited"; }
	sleep 0.1
done
[[ $events == 1000 ]] || { cat "$tmp/agent.log" >&2; fail "buffer holds $events events, want 1000"; }
check "running as plantsync-agent, 1000 events buffered, hub unreachable"
kill -TERM "$agent_pid"
rc=0
wait "$agent_pid" || rc=$?
agent_pid=""
((rc == 0)) || { cat "$tmp/agent.log" >&2; fail "agent exited $rc after SIGTERM"; }
grep -q 'msg=drained' "$tmp/agent.log" || { cat "$tmp/agent.log" >&2; fail "no 'drained' in the log"; }
[[ $(stat -c %U /var/lib/plantsync-agent/buffer.db) == plantsync-agent ]] || fail "buffer.db not owned by plantsync-agent"
buffer_sum=$(sha256sum /var/lib/plantsync-agent/buffer.db | cut -d' ' -f1)
check "SIGTERM: drained, exit 0; buffer.db in the state folder"

section "plantsync-agent: upgrade over itself keeps the edited config and the buffer"
uid_before=$(id -u plantsync-agent)
dpkg -i "$agent_deb" </dev/null
grep -q '^# edited by packaging/test/deb.sh' "$cfg" || fail "the upgrade replaced the edited $cfg"
cmp -s "$tmp/agent.yaml" "$cfg" || fail "$cfg changed in the upgrade"
[[ $(sha256sum /var/lib/plantsync-agent/buffer.db | cut -d' ' -f1) == "$buffer_sum" ]] || fail "buffer.db changed in the upgrade"
[[ $(id -u plantsync-agent) == "$uid_before" ]] || fail "user recreated"
setpriv --reuid=plantsync-agent --regid=plantsync-agent --init-groups -- plantsync-agent validate -config "$cfg" >/dev/null
check "config, certificates, buffer and user unchanged; still validates"

section "plantsync-agent: remove keeps the state folder, purge removes everything"
dpkg -r plantsync-agent </dev/null
[[ ! -e /usr/bin/plantsync-agent && ! -e /usr/lib/systemd/system/plantsync-agent.service ]] || fail "binary or unit left after remove"
[[ $(sha256sum /var/lib/plantsync-agent/buffer.db | cut -d' ' -f1) == "$buffer_sum" ]] || fail "remove touched the unsent buffer"
[[ -f $cfg ]] && getent passwd plantsync-agent >/dev/null || fail "remove deleted the config or the user"
[[ $(dpkg-query -W -f='${db:Status-Status}' plantsync-agent) == config-files ]] || fail "not in config-files state"
check "remove: binary and unit gone; buffer, config, user kept"
dpkg --purge plantsync-agent </dev/null
[[ ! -e /var/lib/plantsync-agent && ! -e /etc/plantsync-agent ]] || fail "purge left folders"
! getent passwd plantsync-agent >/dev/null && ! getent group plantsync-agent >/dev/null || fail "purge left the user"
! installed plantsync-agent || fail "still known to dpkg"
check "purge: state, config and user gone"

section "plantsync-hub: purge"
dpkg --purge plantsync-hub </dev/null
[[ ! -e /var/lib/plantsync-hub && ! -e /etc/plantsync-hub && ! -e /usr/bin/plantsync-hub ]] || fail "purge left files"
! getent passwd plantsync-hub >/dev/null || fail "purge left the user"
check "purge: files, state (with its PKI) and user gone"

if command -v rpm >/dev/null; then
	for r in "$agent_rpm" "$hub_rpm"; do
		pkg=$(rpm -qp --qf '%{NAME}' "$r" 2>/dev/null)
		section "$pkg: inspect $r"
		# Read whole outputs first: with pipefail, grep -q closing the pipe
		# early would fail rpm with SIGPIPE.
		files=$(rpm -qpl "$r" 2>/dev/null)
		configs=$(rpm -qpc "$r" 2>/dev/null)
		scripts=$(rpm -qp --scripts "$r" 2>/dev/null)
		grep -qx "/usr/bin/$pkg" <<<"$files" || fail "$r: no /usr/bin/$pkg"
		grep -qx "/usr/lib/systemd/system/$pkg.service" <<<"$files" || fail "$r: no unit"
		grep -qx "/etc/$pkg/${pkg#plantsync-}.yaml" <<<"$configs" || fail "$r: config not marked %config"
		grep -q 'useradd --system' <<<"$scripts" || fail "$r: no user creation"
		deb_version=$(dpkg-deb -f "$([[ $pkg == plantsync-agent ]] && echo "$agent_deb" || echo "$hub_deb")" Version)
		[[ $(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$r" 2>/dev/null) == "$deb_version" ]] || fail "$r: version differs from the .deb ($deb_version)"
		check "files, %config, scripts, version $deb_version"
	done
else
	echo "rpm not installed: .rpm files not inspected"
fi

printf '\npackaging checks passed\n'
