#!/bin/sh
# preremove of @NAME@, made from packaging/scripts/preremove.sh. Called as
#   deb: prerm remove | upgrade NEW-VERSION | deconfigure ... | failed-upgrade ...
#   rpm: %preun N   (N = 0 on erase, 1 on upgrade)
# Stops and disables the service when the package goes away; an upgrade
# leaves it running until postinstall restarts it on the new binary. Stopping
# drains: what the hub has not acknowledged stays in the state folder.
set -e

name=@NAME@

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl stop "$name.service" >/dev/null 2>&1 || true
fi
# Works without a running systemd too (it only removes the enablement links).
systemctl disable "$name.service" >/dev/null 2>&1 || true
exit 0
