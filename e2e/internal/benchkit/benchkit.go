// Package benchkit holds what the benchmark commands (e2e/cmd/bench,
// e2e/cmd/mqttbench) share: process CPU time, free loopback ports, log
// tails, medians and number formatting.
package benchkit

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ProcCPU is the user plus system time process pid has used so far, from
// /proc/PID/stat; 0 when it cannot be read.
func ProcCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	// USER_HZ is 100 on every Linux the benchmarks run on.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// FreeAddr is a free 127.0.0.1 port. Loopback without a free port is
// beyond what a benchmark can fix: it then returns port 1, and the process
// that uses the address reports the failure clearly.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:1"
	}
	defer l.Close()
	return l.Addr().String()
}

// Tail is the last n lines of the file at path (or why it cannot be
// read), for a failure message.
func Tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// Median of v (NaN when empty); with an even number of runs, the mean of
// the middle two.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	switch {
	case len(s) == 0:
		return math.NaN()
	case len(s)%2 == 0:
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// Thousands formats v as an integer with sep between groups of three
// digits.
func Thousands(v float64, sep byte) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var out []byte
	for i := range s {
		if i > 0 && s[i-1] != '-' && (len(s)-i)%3 == 0 {
			out = append(out, sep)
		}
		out = append(out, s[i])
	}
	return string(out)
}
