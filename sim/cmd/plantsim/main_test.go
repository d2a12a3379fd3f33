package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/internal/syncbuf"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunPrintsAddressesAndStops(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "plantsim.yaml")
	if err := os.WriteFile(cfgFile, []byte("plant: XX-09\nlines: [L1, L2]\nmachine_interval: 50ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr syncbuf.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{
			"-config", cfgFile,
			"-opcua-listen", "127.0.0.1:0",
			"-mqtt-listen", "127.0.0.1:0",
			"-mes-interval", "20ms",
		}, pw, &stderr)
		_ = pw.Close()
	}()

	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	addrs := map[string]string{}
	timeout := time.After(10 * time.Second)
	for len(addrs) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("run exited early; stderr:\n%s", stderr.String())
			}
			k, v, found := strings.Cut(l, ": ")
			if !found {
				t.Fatalf("unexpected stdout line %q", l)
			}
			addrs[k] = v
		case <-timeout:
			t.Fatalf("no addresses on stdout; stderr:\n%s", stderr.String())
		}
	}
	for key, prefix := range map[string]string{"opcua": "opc.tcp://127.0.0.1:", "mqtt": "tcp://127.0.0.1:"} {
		if !strings.HasPrefix(addrs[key], prefix) {
			t.Fatalf("%s: %q, want prefix %s", key, addrs[key], prefix)
		}
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(strings.TrimPrefix(addrs[key], "opc.tcp://"), "tcp://"), 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addrs[key], err)
		}
		if key == "mqtt" {
			// Complete an MQTT 3.1.1 CONNECT/CONNACK before closing: mochi
			// races its Close against a connection it is still setting up
			// (a data race inside mochi v2.7.9), so the test lets the
			// broker finish with this one first.
			connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 't'}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(connect); err != nil {
				t.Fatalf("mqtt connect: %v", err)
			}
			ack := make([]byte, 4)
			if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
				t.Fatalf("mqtt connack %x: %v", ack, err)
			}
			_, _ = c.Write([]byte{0xE0, 0})
		}
		_ = c.Close()
	}
	if !strings.Contains(stderr.String(), "plant=XX-09") {
		t.Errorf("config file plant not used; stderr:\n%s", stderr.String())
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	for range lines { // drain until the pipe closes
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("lines: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"-nope"}, 2, "flag provided but not defined"},
		{"stray argument", []string{"extra"}, 2, "unexpected arguments"},
		{"bad log level", []string{"-log-level", "loud"}, 2, "-log-level"},
		{"missing config file", []string{"-config", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
		{"invalid config file", []string{"-config", bad}, 1, "lines: empty"},
		{"invalid flag value", []string{"-plant", "a/b"}, 1, "plant: \"a/b\" is not a plant id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncbuf.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr); code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not mention %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}

func TestRunVersion(t *testing.T) {
	var stdout, stderr syncbuf.Buffer
	if code := run(context.Background(), []string{"-version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.HasPrefix(stdout.String(), "plantsim ") {
		t.Errorf("version output %q", stdout.String())
	}
}
