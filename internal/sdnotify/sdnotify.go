package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Environment variables the service manager sets for a Type=notify unit.
const (
	EnvSocket       = "NOTIFY_SOCKET"
	EnvWatchdogUSec = "WATCHDOG_USEC"
	EnvWatchdogPID  = "WATCHDOG_PID"
)

var (
	// ErrUnsupportedSocket is returned by FromEnv for a NOTIFY_SOCKET this
	// package cannot reach (e.g. a vsock address); notifications stay off.
	ErrUnsupportedSocket = errors.New("unsupported NOTIFY_SOCKET address")
	// ErrBadWatchdog is returned by FromEnv for a WATCHDOG_USEC or
	// WATCHDOG_PID that is not a positive number.
	ErrBadWatchdog = errors.New("bad watchdog setting")
)

// Notifier sends state changes to the service manager. The zero value and a
// nil *Notifier are disabled: every method returns nil at once.
type Notifier struct {
	socket   string
	watchdog time.Duration
}

// New returns a notifier that writes to socket (a filesystem path, or a
// Linux abstract address starting with "@") and expects a watchdog ping at
// least every watchdog (0: no watchdog). An empty socket disables it.
func New(socket string, watchdog time.Duration) *Notifier {
	return &Notifier{socket: socket, watchdog: max(watchdog, 0)}
}

// FromEnv builds the notifier the service manager asked for through
// NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, read with getenv. pid is
// this process's id: a WATCHDOG_PID naming another process (the variables
// were inherited from a parent) turns the watchdog off. With NOTIFY_SOCKET
// unset the notifier is disabled and err is nil.
func FromEnv(getenv func(string) string, pid int) (*Notifier, error) {
	socket := getenv(EnvSocket)
	if socket == "" {
		return New("", 0), nil
	}
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return New("", 0), fmt.Errorf("%s=%q: %w; want a path or an @abstract address", EnvSocket, socket, ErrUnsupportedSocket)
	}
	n := New(socket, 0)
	usec := getenv(EnvWatchdogUSec)
	if usec == "" {
		return n, nil
	}
	if p := getenv(EnvWatchdogPID); p != "" {
		wpid, err := strconv.Atoi(p)
		if err != nil || wpid <= 0 {
			return n, fmt.Errorf("%s=%q: %w", EnvWatchdogPID, p, ErrBadWatchdog)
		}
		if wpid != pid {
			return n, nil
		}
	}
	us, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || us <= 0 {
		return n, fmt.Errorf("%s=%q: %w", EnvWatchdogUSec, usec, ErrBadWatchdog)
	}
	n.watchdog = time.Duration(us) * time.Microsecond
	return n, nil
}

// Enabled reports whether messages go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is the longest the service manager waits between pings
// before it kills the daemon; 0 when no watchdog is armed.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}

// Send writes one datagram of newline-separated KEY=VALUE fields.
func (n *Notifier) Send(fields ...string) error {
	if !n.Enabled() || len(fields) == 0 {
		return nil
	}
	// One connection per message: notifications are rare (a few per
	// minute), and a fresh socket survives the manager re-creating its end
	// (e.g. after `systemctl daemon-reexec`).
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(fields, "\n"))); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	return nil
}

// Ready says the daemon serves: Start has returned and its listeners are
// bound. status is shown by `systemctl status`.
func (n *Notifier) Ready(status string) error {
	return n.Send(withStatus(status, "READY=1")...)
}

// Reloading says a config reload began; Ready must follow when it ends,
// whether it succeeded or not.
func (n *Notifier) Reloading(status string) error {
	fields := []string{"RELOADING=1"}
	// systemd ≥ 253 (Type=notify-reload) matches the reload to the request
	// by this timestamp; older managers ignore it.
	if us, ok := monotonicUsec(); ok {
		fields = append(fields, "MONOTONIC_USEC="+strconv.FormatInt(us, 10))
	}
	return n.Send(withStatus(status, fields...)...)
}

// Stopping says the daemon is draining before it exits.
func (n *Notifier) Stopping(status string) error {
	return n.Send(withStatus(status, "STOPPING=1")...)
}

// Status sets the free-form status line without changing state.
func (n *Notifier) Status(status string) error {
	return n.Send(withStatus(status)...)
}

// Ping feeds the service manager's watchdog. Call it through a Watchdog, so
// that pings come from the main loop and stop when the loop does.
func (n *Notifier) Ping() error { return n.Send("WATCHDOG=1") }

func withStatus(status string, fields ...string) []string {
	if status != "" {
		// The protocol is line-based: a newline would end the field.
		fields = append(fields, "STATUS="+strings.ReplaceAll(status, "\n", " "))
	}
	return fields
}
