package failpoint

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUnconfiguredFailpointIsNoOp(t *testing.T) {
	if got := Enabled(); got != wantEnabled {
		t.Fatalf("Enabled() = %v, want %v", got, wantEnabled)
	}
	Inject("test/never-configured")
	if err := Error("test/never-configured"); err != nil {
		t.Fatalf("Error = %v, want nil", err)
	}
}

// buildVictim compiles testdata/victim (go test ./... skips testdata, so it
// is built only here), with the failpoints tag when tagged.
func buildVictim(t *testing.T, tagged bool) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the victim test needs the go command on PATH (go test puts it there): %v", err)
	}
	out := filepath.Join(t.TempDir(), "victim")
	args := []string{"build", "-o", out}
	if tagged {
		args = append(args, "-tags", "failpoints")
	}
	args = append(args, "./testdata/victim")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return out
}

type victimRun struct {
	stdout, stderr string
	killed         bool // ended by SIGKILL
	exitCode       int
	elapsed        time.Duration
}

func runVictim(t *testing.T, bin, spec string) victimRun {
	t.Helper()
	// A victim whose kill failed sleeps forever; the timeout turns that into
	// a failure instead of a hung test. Its own SIGKILL is told apart by the
	// context not having expired.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), EnvVar+"="+spec)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := victimRun{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("victim with %s=%q did not end within the timeout; stdout:\n%s", EnvVar, spec, r.stdout)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		ws, ok := exitErr.Sys().(syscall.WaitStatus)
		if !ok {
			t.Fatalf("unexpected process state %T", exitErr.Sys())
		}
		r.killed = ws.Signaled() && ws.Signal() == syscall.SIGKILL
		r.exitCode = ws.ExitStatus()
		if !r.killed && !ws.Exited() {
			t.Fatalf("victim ended by %v, want SIGKILL or a normal exit", ws.Signal())
		}
	default:
		t.Fatalf("run victim: %v", err)
	}
	return r
}

// steps renders the victim's stdout for the given (written, done) pairs.
func steps(lines ...string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

const allStepsDone = "step 1 written\nstep 1 done\nstep 2 written\nstep 2 done\nstep 3 written\nstep 3 done\n" +
	"step 4 written\nstep 4 done\nstep 5 written\nstep 5 done\nfinished\n"

func TestVictimProcess(t *testing.T) {
	tagged := buildVictim(t, true)

	tests := []struct {
		name       string
		spec       string
		wantKilled bool
		wantStdout string
		// wantStderr lists substrings that must each appear exactly once.
		wantStderr []string
		minElapsed time.Duration
	}{
		{
			name:       "kill on third hit leaves exactly two completed steps",
			spec:       "victim/after-write=kill@3",
			wantKilled: true,
			wantStdout: steps("step 1 written", "step 1 done", "step 2 written", "step 2 done", "step 3 written"),
		},
		{
			name:       "kill on first hit",
			spec:       "victim/after-write=kill",
			wantKilled: true,
			wantStdout: steps("step 1 written"),
		},
		{
			name:       "unset runs to the end",
			spec:       "",
			wantStdout: allStepsDone,
		},
		{
			name:       "other names are not affected",
			spec:       "victim/elsewhere=kill",
			wantStdout: allStepsDone,
		},
		{
			name: "error on second hit fails that step only",
			spec: "victim/before-write=error@2",
			wantStdout: "step 1 written\nstep 1 done\nstep 2 failed: failpoint: injected error at victim/before-write (hit 2)\n" +
				"step 3 written\nstep 3 done\nstep 4 written\nstep 4 done\nstep 5 written\nstep 5 done\nfinished\n",
		},
		{
			name:       "sleep delays each hit",
			spec:       "victim/after-write=sleep(40ms)",
			wantStdout: allStepsDone,
			minElapsed: 5 * 40 * time.Millisecond,
		},
		{
			name:       "malformed entries are reported once and skipped",
			spec:       "garbage; victim/after-write=explode ;victim/before-write=kill@2",
			wantKilled: true,
			wantStdout: steps("step 1 written", "step 1 done"),
			wantStderr: []string{`entry "garbage" ignored: missing "="`, `entry "victim/after-write=explode" ignored: unknown action "explode"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runVictim(t, tagged, tt.spec)
			if r.killed != tt.wantKilled {
				t.Fatalf("killed by SIGKILL = %v, want %v (exit code %d); stdout:\n%s\nstderr:\n%s",
					r.killed, tt.wantKilled, r.exitCode, r.stdout, r.stderr)
			}
			if !tt.wantKilled && r.exitCode != 0 {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", r.exitCode, r.stderr)
			}
			if r.stdout != tt.wantStdout {
				t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, tt.wantStdout)
			}
			for _, want := range tt.wantStderr {
				if n := strings.Count(r.stderr, want); n != 1 {
					t.Errorf("stderr mentions %q %d times, want once; stderr:\n%s", want, n, r.stderr)
				}
			}
			if len(tt.wantStderr) == 0 && r.stderr != "" {
				t.Errorf("unexpected stderr:\n%s", r.stderr)
			}
			if r.elapsed < tt.minElapsed {
				t.Errorf("victim ran %v, want at least %v", r.elapsed, tt.minElapsed)
			}
		})
	}
}

func TestVictimWithoutTagIgnoresEnvironment(t *testing.T) {
	untagged := buildVictim(t, false)
	r := runVictim(t, untagged, "victim/after-write=kill@3;victim/before-write=error")
	if r.killed || r.exitCode != 0 {
		t.Fatalf("untagged victim killed=%v exit=%d, want a normal exit", r.killed, r.exitCode)
	}
	if r.stdout != allStepsDone {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, allStepsDone)
	}
}
