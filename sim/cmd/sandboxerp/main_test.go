package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The command prints its URLs, serves them, and stops on cancel.
func TestRun(t *testing.T) {
	t.Setenv("SANDBOX_TEST_SECRET", "sandbox-secret-value")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-data", t.TempDir(), "-hmac-secret", "env:SANDBOX_TEST_SECRET", "-log-level", "warn"}, pw, io.Discard)
		_ = pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	urls := map[string]string{}
	for len(urls) < 3 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		urls[k] = v
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	// Unsigned: refused.
	resp, err := http.Post(urls["webhook"], "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned POST: %d", resp.StatusCode)
	}
	resp, err = http.Get(urls["documents"])
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(urls["lookup"], "/documents/by-key/{key}") {
		t.Errorf("documents: %d, urls %v", resp.StatusCode, urls)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
	if code := run(context.Background(), []string{"-hmac-secret", "inline"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("inline secret: exit %d, want 2", code)
	}
}
