//go:build !linux

package sdnotify

// monotonicUsec is unavailable off Linux, where no systemd runs anyway.
func monotonicUsec() (int64, bool) { return 0, false }
