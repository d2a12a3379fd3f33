package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/generator"
	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/internal/testkit"
)

// generatorAgent starts an in-process agent whose only source is the
// synthetic generator: count events (0: endless) at rate per second (0:
// as fast as the buffer commits).
func generatorAgent(t *testing.T, p *testkit.PKI, id, hubAddr string, count int64, rate int) *agent.Agent {
	t.Helper()
	cfg := testkit.AgentConfig(t, p, id, "DE-01", filepath.Join(t.TempDir(), id), hubAddr, "")
	gc := generator.NewDefaultConfig()
	gc.Common = source.Common{Name: "load", Type: "generator"}
	gc.Count, gc.Rate, gc.Batch = count, rate, 50
	cfg.Sources = []agent.SourceEntry{{Common: gc.Common, Config: gc}}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("agent config: %v", errs)
	}
	a, err := agent.New(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

// hubSequence is the highest sequence the hub committed for agent id.
func hubSequence(t *testing.T, h *hub.Hub, id string) uint64 {
	t.Helper()
	states, err := h.Journal().Agents()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		if s.ID == id {
			return s.LastSequence
		}
	}
	return 0
}

// hungUp reports whether the peer closed conn within the deadline, reading
// whatever it sends first (a TLS alert, an HTTP response). A reset counts as
// closed; err says which.
func hungUp(conn net.Conn, within time.Duration) (got []byte, closed bool, err error) {
	_ = conn.SetReadDeadline(time.Now().Add(within))
	got, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return got, false, err
	}
	return got, true, err
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Garbage on the hub's gRPC port: each connection is refused (closed by the
// hub) without harm. An agent connected before keeps delivering throughout,
// and one that connects afterwards, while a stalled half-handshake is still
// open, delivers everything.
func TestGarbageOnHubGRPCPort(t *testing.T) {
	p := testkit.NewPKI(t)
	h := startHub(t, testkit.HubConfig(t, p, filepath.Join(t.TempDir(), "hub")))
	defer stop(t, h)
	addr := h.GRPCAddr()

	before := generatorAgent(t, p, "press-1", addr, 0, 500)
	defer stop(t, before)
	testkit.Eventually(t, 10*time.Second, "press-1 delivering", func() bool { return hubSequence(t, h, "press-1") >= 50 })

	// A client that sends half a ClientHello and then nothing: it must not
	// hold up anyone else while the hub waits for it.
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}); err != nil {
		t.Fatal(err)
	}

	agentCert, agentKey := p.Agent(t, "press-9", "DE-01")
	for _, tc := range []struct {
		name string
		// talk misbehaves on conn and returns what the client saw, if
		// anything worth checking.
		talk  func(t *testing.T, conn net.Conn) error
		check func(t *testing.T, clientErr error, reply []byte)
	}{
		{name: "random bytes", talk: func(t *testing.T, c net.Conn) error {
			_, err := c.Write(randomBytes(t, 4096))
			return err
		}},
		{name: "TLS record header announcing 64 KiB", talk: func(t *testing.T, c net.Conn) error {
			_, err := c.Write(append([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, randomBytes(t, 512)...))
			return err
		}},
		{name: "HTTP/1.1 request", talk: func(t *testing.T, c net.Conn) error {
			_, err := c.Write([]byte("GET /api/v1/events HTTP/1.1\r\nHost: hub.example.net\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"))
			return err
		}},
		{name: "cleartext HTTP/2 preface (gRPC without TLS)", talk: func(t *testing.T, c net.Conn) error {
			_, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
			return err
		}},
		{name: "TLS ClientHello without a client certificate", talk: func(t *testing.T, c net.Conn) error {
			roots, err := pki.ClientTLS(agentCert, agentKey, p.Paths.CACert, "localhost")
			if err != nil {
				t.Fatal(err)
			}
			roots.Certificates = nil
			tc := tls.Client(c, roots)
			if err := tc.Handshake(); err != nil {
				return err
			}
			// TLS 1.3: the hub's verdict on the client comes after the
			// client's handshake, as an alert.
			_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = tc.Read(make([]byte, 1))
			return err
		}, check: func(t *testing.T, clientErr error, _ []byte) {
			if clientErr == nil || !strings.Contains(clientErr.Error(), "certificate required") {
				t.Errorf("client saw %v, want the alert \"certificate required\"", clientErr)
			}
		}},
		{name: "valid client certificate, then garbage instead of HTTP/2", talk: func(t *testing.T, c net.Conn) error {
			cfg, err := pki.ClientTLS(agentCert, agentKey, p.Paths.CACert, "localhost")
			if err != nil {
				t.Fatal(err)
			}
			cfg.NextProtos = []string{"h2"}
			tc := tls.Client(c, cfg)
			if err := tc.Handshake(); err != nil {
				t.Fatalf("handshake with a valid certificate: %v", err)
			}
			_, err = tc.Write(randomBytes(t, 4096))
			if err == nil {
				_, _ = io.Copy(io.Discard, tc) // until the hub hangs up
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
			clientErr := tc.talk(t, conn)
			reply, closed, _ := hungUp(conn, 10*time.Second)
			if !closed {
				t.Fatalf("the hub kept the connection open (client error %v)", clientErr)
			}
			if tc.check != nil {
				tc.check(t, clientErr, reply)
			}
		})
	}

	// press-1 was never disturbed.
	seq := hubSequence(t, h, "press-1")
	testkit.Eventually(t, 10*time.Second, "press-1 still delivering", func() bool { return hubSequence(t, h, "press-1") >= seq+50 })
	if st := before.Status(); !st.Uplink.Connected || st.Uplink.Reconnects != 0 {
		t.Errorf("press-1 uplink: connected=%v reconnects=%d, want one undisturbed stream", st.Uplink.Connected, st.Uplink.Reconnects)
	}

	// press-2 connects after all that, the stalled client still waiting.
	after := generatorAgent(t, p, "press-2", addr, 300, 0)
	defer stop(t, after)
	testkit.Eventually(t, 15*time.Second, "all 300 events of press-2 at the hub", func() bool { return hubSequence(t, h, "press-2") == 300 })
	testkit.Eventually(t, 10*time.Second, "press-2 buffer drained", func() bool { return after.Buffer().Stats().Events == 0 })

	health := getJSON[struct {
		Healthy bool `json:"healthy"`
	}](t, h.URL()+"/healthz")
	if !health.Healthy {
		t.Fatal("hub unhealthy after the garbage")
	}
}

// rawHTTP sends raw bytes to an HTTP listener and returns the status line
// of the reply, failing if the server keeps the connection open. The bytes
// are written while the reply is read: a server may answer, and close,
// before it has read everything.
func rawHTTP(t *testing.T, addr string, payload []byte) (statusLine string, readErr error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = conn.Write(payload) // fails once the server hangs up early
	}()
	defer func() { <-wrote }()
	reply, closed, readErr := hungUp(conn, 10*time.Second)
	if !closed {
		t.Fatalf("server kept the connection open after %q", payload[:min(len(payload), 20)])
	}
	statusLine, _, _ = strings.Cut(string(reply), "\r\n")
	return statusLine, readErr
}

// refusedHTTP checks the reply to garbage: 400, or 431 for headers beyond
// the server's limit, which may also reach the client as a reset when the
// server closed with unread bytes.
func refusedHTTP(t *testing.T, name, line string, readErr error) {
	t.Helper()
	switch {
	case strings.HasPrefix(line, "HTTP/1.1 400 Bad Request"):
	case name == "huge header" && (strings.HasPrefix(line, "HTTP/1.1 431 Request Header Fields Too Large") || line == "" && errors.Is(readErr, syscall.ECONNRESET)):
	default:
		t.Fatalf("reply %q (read error %v), want 400 Bad Request", line, readErr)
	}
}

// garbageHTTP are requests no HTTP client would send.
func garbageHTTP(t *testing.T) map[string][]byte {
	return map[string][]byte{
		"random bytes":          randomBytes(t, 2048),
		"TLS ClientHello start": {0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00, '\r', '\n', '\r', '\n'},
		"bad request line":      []byte("HELLO\r\n\r\n"),
		"header without colon":  []byte("GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"),
		"huge header":           []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"),
	}
}

// Garbage on the agent's admin listener is answered 400 and does not
// disturb the API the agent's CLI relies on.
func TestGarbageOnAgentAdminPort(t *testing.T) {
	p := testkit.NewPKI(t)
	// No hub: the admin API must work while the uplink is down, too.
	a := generatorAgent(t, p, "press-1", testkit.FreePort(t), 100, 0)
	defer stop(t, a)
	admin := a.AdminAddr()

	for name, payload := range garbageHTTP(t) {
		t.Run(name, func(t *testing.T) {
			line, err := rawHTTP(t, admin, payload)
			refusedHTTP(t, name, line, err)
		})
	}

	testkit.Eventually(t, 10*time.Second, "the 100 generated events in the status API", func() bool {
		st := getJSON[agent.Status](t, "http://"+admin+"/api/v1/status")
		return st.Agent.ID == "press-1" && st.Buffer.LastSequence == 100
	})
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var health struct {
		Healthy bool     `json:"healthy"`
		Reasons []string `json:"reasons"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
		t.Fatalf("healthz body: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || health.Healthy || !strings.Contains(strings.Join(health.Reasons, "; "), "uplink to") {
		t.Fatalf("healthz = %d %+v, want 503 naming the uplink", resp.StatusCode, health)
	}
}

// Malformed queries to the hub's API get a 400 with a JSON error naming the
// parameter and what to send; garbage on its HTTP port gets a 400; the API
// goes on answering.
func TestHubAPIRejectsMalformedQueries(t *testing.T) {
	p := testkit.NewPKI(t)
	h := startHub(t, testkit.HubConfig(t, p, filepath.Join(t.TempDir(), "hub")))
	defer stop(t, h)

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"/api/v1/events?after=abc", []string{"query parameter after", `"abc" is not a journal position`, "want a whole number >= 0"}},
		{"/api/v1/events?after=-1", []string{"query parameter after", `"-1"`, "want a whole number >= 0"}},
		{"/api/v1/events?after=18446744073709551616", []string{"query parameter after", "want a whole number >= 0"}},
		{"/api/v1/events?limit=0", []string{"query parameter limit", `"0"`, "want 1 to 1000"}},
		{"/api/v1/events?limit=100000", []string{"query parameter limit", `"100000"`, "want 1 to 1000"}},
		{"/api/v1/events?after=5&limit=ten", []string{"query parameter limit", `"ten"`, "want 1 to 1000"}},
		{"/api/v1/rejected?after=1.5", []string{"query parameter after", `"1.5"`}},
		{"/api/v1/rejected?limit=-3", []string{"query parameter limit", `"-3"`}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			resp := viewerGet(t, h.URL()+tc.query)
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %s, want 400; body %s", resp.Status, raw)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var body struct {
				Error string `json:"error"`
			}
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("body %s is not {\"error\": ...}: %v", raw, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(body.Error, w) {
					t.Errorf("error %q lacks %q", body.Error, w)
				}
			}
		})
	}

	httpAddr := strings.TrimPrefix(h.URL(), "http://")
	for name, payload := range garbageHTTP(t) {
		t.Run("garbage/"+name, func(t *testing.T) {
			line, err := rawHTTP(t, httpAddr, payload)
			refusedHTTP(t, name, line, err)
		})
	}

	resp := viewerGet(t, h.URL()+"/api/v1/events?after=0&limit=1000")
	defer resp.Body.Close()
	var page struct {
		Events    []json.RawMessage `json:"events"`
		NextAfter uint64            `json:"next_after"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); resp.StatusCode != http.StatusOK || err != nil || len(page.Events) != 0 || page.NextAfter != 0 {
		t.Fatalf("events of an empty hub: %s %+v %v", resp.Status, page, err)
	}
}

// viewerGet GETs url with the testkit viewer token; the API checks the
// token before it reads the query.
func viewerGet(t *testing.T, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testkit.ViewerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
