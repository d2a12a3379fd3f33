#!/bin/sh
# postinstall of @NAME@, made from packaging/scripts/postinstall.sh. Called as
#   deb: postinst configure [OLD-VERSION] | abort-upgrade | abort-remove ...
#   rpm: %post N   (N = 1 on install, 2 on upgrade)
# Creates the system user and the folders, and starts nothing: the service
# runs only once an operator has configured and enabled it. On an upgrade a
# running service is restarted on the new binary.
set -e

name=@NAME@
user=@NAME@
state=/var/lib/@NAME@
conf=/etc/@NAME@

upgrade=no
case "$1" in
configure) [ -n "$2" ] && upgrade=yes ;;
2) upgrade=yes ;;
1 | abort-upgrade | abort-remove | abort-deconfigure) ;;
*) exit 0 ;;
esac

nologin=/usr/sbin/nologin
[ -x "$nologin" ] || nologin=/sbin/nologin

if ! getent group "$user" >/dev/null; then
	groupadd --system "$user"
fi
if ! getent passwd "$user" >/dev/null; then
	useradd --system --gid "$user" --home-dir "$state" --no-create-home \
		--shell "$nologin" --comment "@DESCRIPTION@" "$user"
fi

# The state folder is not in the package, so removing the package leaves
# it (and an unsent buffer) in place; only a purge deletes it.
install -d -m 0700 -o "$user" -g "$user" "$state"
# Keys live next to the config: readable by the service's group, not by all.
chgrp "$user" "$conf"
chmod 0750 "$conf"

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$upgrade" = yes ]; then
		systemctl try-restart "$name.service" >/dev/null 2>&1 || true
	fi
fi

if [ "$upgrade" = no ] && [ "$1" != abort-upgrade ]; then
	cat <<MSG
$name is installed but not started. Next:
  1. edit $conf/@CONFIG@ (an example; every key is explained in it)
  2. put the certificates it names in $conf (see /usr/share/doc/$name/install.md)
  3. $name validate -config $conf/@CONFIG@
  4. systemctl enable --now $name
MSG
fi
exit 0
