// Package sdnotify tells systemd (or any service manager speaking the
// sd_notify protocol) about a daemon's state: ready once it serves, reloading
// while it re-reads its config, stopping while it drains, and watchdog pings
// while its main loop keeps turning.
//
// It sits between the binaries' shared run loop (internal/cli) and the
// service manager: a unit with Type=notify starts the daemon with
// NOTIFY_SOCKET set, waits for READY=1 before ordering dependants after it,
// and, with WatchdogSec=, kills and restarts a daemon whose pings stop.
// Without NOTIFY_SOCKET (a terminal, a test, a container) every call is a
// no-op, so callers never branch on how they were started.
package sdnotify
