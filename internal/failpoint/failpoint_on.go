//go:build failpoints

package failpoint

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Inject performs the action configured for name in PLANTSYNC_FAILPOINTS:
// kill the process, or sleep. An "error" action does nothing here; it needs a
// call site that can return it, see Error. Unconfigured names cost one map
// lookup.
func Inject(name string) {
	_ = active().hit(name)
}

// Error is Inject for call sites that can fail: it returns an error wrapping
// ErrInjected when name's action is "error" (or "error@N" on the N-th hit)
// and nil otherwise, after killing or sleeping like Inject.
func Error(name string) error {
	return active().hit(name)
}

// Enabled reports whether this binary was built with -tags failpoints.
func Enabled() bool { return true }

// active is the process-wide configuration, read from the environment on
// first use: the environment is process-wide too, and reading it once keeps
// a hot-path failpoint to a map lookup.
var active = sync.OnceValue(func() *registry {
	return load(os.Getenv(EnvVar), os.Stderr, killSelf, time.Sleep)
})

// killSelf ends the process the way a power loss would: SIGKILL cannot be
// caught, so no deferred function, no flush and no Close runs.
func killSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	// Should the signal take a moment to land, the step after the failpoint
	// must still never run.
	for {
		time.Sleep(time.Hour)
	}
}

type kind int

const (
	kindKill kind = iota + 1
	kindSleep
	kindError
)

// action is one parsed entry of PLANTSYNC_FAILPOINTS.
type action struct {
	kind kind
	// nth is the 1-based hit on which kill or error fires; 0 means every hit.
	nth   uint64
	sleep time.Duration
}

type point struct {
	action
	hits atomic.Uint64
}

type registry struct {
	points map[string]*point
	kill   func()
	sleep  func(time.Duration)
}

// load parses spec and reports each malformed entry once to stderr, which in
// a test run ends up in the test's output; the entry is ignored rather than
// crashing a process that is about to be used for a fault test.
func load(spec string, stderr io.Writer, kill func(), sleep func(time.Duration)) *registry {
	actions, errs := parse(spec)
	for _, err := range errs {
		fmt.Fprintf(stderr, "plantsync: %v\n", err)
	}
	r := &registry{points: make(map[string]*point, len(actions)), kill: kill, sleep: sleep}
	for name, a := range actions {
		r.points[name] = &point{action: a}
	}
	return r
}

func (r *registry) hit(name string) error {
	p, ok := r.points[name]
	if !ok {
		return nil
	}
	n := p.hits.Add(1)
	switch p.kind {
	case kindKill:
		if p.nth == 0 || n == p.nth {
			r.kill()
		}
	case kindSleep:
		r.sleep(p.sleep)
	case kindError:
		if p.nth == 0 || n == p.nth {
			return fmt.Errorf("%w at %s (hit %d)", ErrInjected, name, n)
		}
	}
	return nil
}

const formatHint = "want name=action[;name=action], actions kill, kill@N, sleep(DURATION), error, error@N, e.g. hub/delivery/after-deliver=kill@3"

// parse reads "name=action[;name2=action2]". Empty entries (a trailing ";")
// are allowed; every malformed entry yields one error and is left out, so
// one typo does not disable the rest of the configuration.
func parse(spec string) (map[string]action, []error) {
	actions := make(map[string]action)
	var errs []error
	for entry := range strings.SplitSeq(spec, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s entry %q ignored: %s (%s)", EnvVar, entry, fmt.Sprintf(format, args...), formatHint))
		}
		name, act, ok := strings.Cut(entry, "=")
		name, act = strings.TrimSpace(name), strings.TrimSpace(act)
		switch {
		case !ok:
			bad(`missing "="`)
			continue
		case name == "":
			bad("empty failpoint name")
			continue
		case strings.ContainsAny(name, " \t\r\n"):
			bad("failpoint name %q contains white space", name)
			continue
		}
		if _, dup := actions[name]; dup {
			bad("failpoint %q is already set by an earlier entry", name)
			continue
		}
		a, err := parseAction(act)
		if err != nil {
			bad("%v", err)
			continue
		}
		actions[name] = a
	}
	return actions, errs
}

func parseAction(s string) (action, error) {
	switch {
	case s == "kill":
		return action{kind: kindKill}, nil
	case s == "error":
		return action{kind: kindError}, nil
	case strings.HasPrefix(s, "kill@"):
		n, err := parseNth(strings.TrimPrefix(s, "kill@"))
		return action{kind: kindKill, nth: n}, err
	case strings.HasPrefix(s, "error@"):
		n, err := parseNth(strings.TrimPrefix(s, "error@"))
		return action{kind: kindError, nth: n}, err
	case strings.HasPrefix(s, "sleep(") && strings.HasSuffix(s, ")"):
		arg := strings.TrimSuffix(strings.TrimPrefix(s, "sleep("), ")")
		d, err := time.ParseDuration(arg)
		if err != nil {
			return action{}, fmt.Errorf("sleep duration %q is not a Go duration such as 200ms", arg)
		}
		if d < 0 {
			return action{}, fmt.Errorf("sleep duration %s is negative", d)
		}
		return action{kind: kindSleep, sleep: d}, nil
	case s == "":
		return action{}, fmt.Errorf("empty action")
	default:
		return action{}, fmt.Errorf("unknown action %q", s)
	}
}

func parseNth(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("hit number %q is not a positive integer (hits count from 1)", s)
	}
	return n, nil
}
