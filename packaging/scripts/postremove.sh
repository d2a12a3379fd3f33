#!/bin/sh
# postremove of @NAME@, made from packaging/scripts/postremove.sh. Called as
#   deb: postrm remove | purge | upgrade NEW-VERSION | failed-upgrade ... |
#        abort-install | abort-upgrade | disappear
#   rpm: %postun N   (N = 0 on erase, 1 on upgrade)
# Remove keeps the state folder, the config folder and the user: a
# reinstall picks up where the agent or hub left off (an unsent buffer is
# sent). Purge deletes all three. rpm has no purge: remove the folders and
# the user by hand (install.md, "Uninstall").
set -e

name=@NAME@
user=@NAME@

case "$1" in
remove | purge | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi

if [ "$1" = purge ]; then
	rm -rf "/var/lib/$name" "/etc/$name"
	# The user owned nothing but those folders, so its id can go with them
	# without leaving orphaned files behind.
	if getent passwd "$user" >/dev/null; then
		userdel "$user" >/dev/null 2>&1 || true
	fi
	if getent group "$user" >/dev/null; then
		groupdel "$user" >/dev/null 2>&1 || true
	fi
fi
exit 0
