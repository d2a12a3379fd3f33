//go:build failpoints

package failpoint

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// wantEnabled is what Enabled must report in the build under test.
const wantEnabled = true

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    map[string]action
		wantErr []string // substrings, one per expected error, in order
	}{
		{name: "empty", spec: "", want: map[string]action{}},
		{name: "only separators", spec: " ; ;", want: map[string]action{}},
		{
			name: "kill",
			spec: "hub/delivery/after-deliver=kill",
			want: map[string]action{"hub/delivery/after-deliver": {kind: kindKill}},
		},
		{
			name: "kill on nth hit",
			spec: "agent/buffer/after-commit=kill@3",
			want: map[string]action{"agent/buffer/after-commit": {kind: kindKill, nth: 3}},
		},
		{
			name: "sleep",
			spec: "agent/uplink/before-ack=sleep(200ms)",
			want: map[string]action{"agent/uplink/before-ack": {kind: kindSleep, sleep: 200 * time.Millisecond}},
		},
		{
			name: "error and error on nth hit",
			spec: "a/x=error;b/y=error@2",
			want: map[string]action{"a/x": {kind: kindError}, "b/y": {kind: kindError, nth: 2}},
		},
		{
			name: "several with white space and trailing separator",
			spec: " a/x = kill@1 ; b/y=sleep(1s);",
			want: map[string]action{"a/x": {kind: kindKill, nth: 1}, "b/y": {kind: kindSleep, sleep: time.Second}},
		},
		{
			name:    "missing equals keeps the rest",
			spec:    "a/x;b/y=kill",
			want:    map[string]action{"b/y": {kind: kindKill}},
			wantErr: []string{`entry "a/x" ignored: missing "="`},
		},
		{
			name:    "empty name",
			spec:    "=kill",
			want:    map[string]action{},
			wantErr: []string{"empty failpoint name"},
		},
		{
			name:    "name with white space",
			spec:    "a x=kill",
			want:    map[string]action{},
			wantErr: []string{`name "a x" contains white space`},
		},
		{
			name:    "empty action",
			spec:    "a/x=",
			want:    map[string]action{},
			wantErr: []string{"empty action"},
		},
		{
			name:    "unknown action",
			spec:    "a/x=panic",
			want:    map[string]action{},
			wantErr: []string{`unknown action "panic"`},
		},
		{
			name: "bad hit numbers",
			spec: "a/x=kill@0;b/y=kill@;c/z=kill@two;d/w=error@-1",
			want: map[string]action{},
			wantErr: []string{
				`hit number "0" is not a positive integer`,
				`hit number "" is not a positive integer`,
				`hit number "two" is not a positive integer`,
				`hit number "-1" is not a positive integer`,
			},
		},
		{
			name:    "bad sleep",
			spec:    "a/x=sleep(soon);b/y=sleep(-1s);c/z=sleep(1s",
			want:    map[string]action{},
			wantErr: []string{`sleep duration "soon" is not a Go duration`, "sleep duration -1s is negative", `unknown action "sleep(1s"`},
		},
		{
			name:    "duplicate keeps the first",
			spec:    "a/x=kill@2;a/x=error",
			want:    map[string]action{"a/x": {kind: kindKill, nth: 2}},
			wantErr: []string{`failpoint "a/x" is already set by an earlier entry`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := parse(tt.spec)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parse(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
			if len(errs) != len(tt.wantErr) {
				t.Fatalf("parse(%q) errors = %v, want %d", tt.spec, errs, len(tt.wantErr))
			}
			for i, err := range errs {
				msg := err.Error()
				if !strings.Contains(msg, tt.wantErr[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, msg, tt.wantErr[i])
				}
				// Every message must name the variable and show the format.
				for _, must := range []string{EnvVar, "name=action", "kill@3"} {
					if !strings.Contains(msg, must) {
						t.Errorf("error %q does not mention %q", msg, must)
					}
				}
			}
		})
	}
}

// recorder stands in for killing and sleeping so the registry can be tested
// inside the test process.
type recorder struct {
	kills  int
	sleeps []time.Duration
}

func newTestRegistry(t *testing.T, spec string) (*registry, *recorder, string) {
	t.Helper()
	rec := &recorder{}
	var stderr bytes.Buffer
	r := load(spec, &stderr, func() { rec.kills++ }, func(d time.Duration) { rec.sleeps = append(rec.sleeps, d) })
	return r, rec, stderr.String()
}

func TestRegistryKillOnNthHit(t *testing.T) {
	r, rec, _ := newTestRegistry(t, "a/x=kill@3;b/y=kill")
	for hit := 1; hit <= 5; hit++ {
		if err := r.hit("a/x"); err != nil {
			t.Fatalf("hit %d: %v", hit, err)
		}
		want := 0
		if hit >= 3 {
			want = 1
		}
		if rec.kills != want {
			t.Fatalf("after hit %d kills = %d, want %d", hit, rec.kills, want)
		}
	}
	_ = r.hit("b/y")
	_ = r.hit("b/y")
	if rec.kills != 3 {
		t.Fatalf("kill without @N must fire on every hit; kills = %d, want 3", rec.kills)
	}
}

func TestRegistrySleep(t *testing.T) {
	r, rec, _ := newTestRegistry(t, "a/x=sleep(250ms)")
	for range 2 {
		if err := r.hit("a/x"); err != nil {
			t.Fatal(err)
		}
	}
	if want := []time.Duration{250 * time.Millisecond, 250 * time.Millisecond}; !reflect.DeepEqual(rec.sleeps, want) {
		t.Fatalf("sleeps = %v, want %v", rec.sleeps, want)
	}
	if rec.kills != 0 {
		t.Fatalf("sleep killed")
	}
}

func TestRegistryError(t *testing.T) {
	r, rec, _ := newTestRegistry(t, "a/x=error;b/y=error@2")
	err := r.hit("a/x")
	if !errors.Is(err, ErrInjected) {
		t.Fatalf("hit(a/x) = %v, want ErrInjected", err)
	}
	if !strings.Contains(err.Error(), "a/x") {
		t.Fatalf("error %q does not name the failpoint", err)
	}
	for hit := 1; hit <= 3; hit++ {
		err := r.hit("b/y")
		if got := errors.Is(err, ErrInjected); got != (hit == 2) {
			t.Fatalf("hit %d of b/y: err = %v", hit, err)
		}
	}
	if err := r.hit("c/unset"); err != nil {
		t.Fatalf("unset failpoint returned %v", err)
	}
	if rec.kills != 0 || len(rec.sleeps) != 0 {
		t.Fatalf("error action killed or slept: %+v", rec)
	}
}

func TestLoadReportsEachMalformedEntryOnce(t *testing.T) {
	r, _, stderr := newTestRegistry(t, "oops;a/x=kill@1;b/y=explode")
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("stderr has %d lines, want 2:\n%s", len(lines), stderr)
	}
	if !strings.Contains(lines[0], `"oops"`) || !strings.Contains(lines[1], `"b/y=explode"`) {
		t.Fatalf("stderr does not name the bad entries:\n%s", stderr)
	}
	if _, ok := r.points["a/x"]; !ok || len(r.points) != 1 {
		t.Fatalf("points = %v, want only a/x", r.points)
	}
}
