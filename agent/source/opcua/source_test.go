package opcua

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/opcua/internal/uatest"
)

func stateNode(i int) string { return uatest.NodeID(machineKey(i) + ".State") }
func tempNode(i int) string  { return uatest.NodeID(machineKey(i) + ".Temp") }

// Values of explicit nodes arrive mapped, with quality and both
// timestamps, under ids derived from endpoint, node, timestamp and value.
func TestSourceNoneSecurity(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 2)
	cfg := baseConfig(srv.Endpoint())
	cfg.Nodes = []NodeConfig{
		{NodeID: stateNode(1), Mapping: Mapping{EventType: "machine.state",
			Fields: map[string]string{"work_center": "L1", "machine": "M1", "state": "{value}"}}},
		{NodeID: tempNode(1), Mapping: Mapping{Fields: map[string]string{"unit": "Cel"}}},
	}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, waitFor, "source running", func() bool { return h.src.Health().State == source.StateRunning })
	eventually(t, waitFor, "initial values", func() bool { return len(sink.find(stateNode(1))) > 0 && len(sink.find(tempNode(1))) > 0 })

	ts := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	must(t, srv.Namespace().SetAt(machineKey(1)+".State", "running", ts))
	must(t, srv.Namespace().SetAt(machineKey(1)+".Temp", 71.5, ts))
	eventually(t, waitFor, "changed values", func() bool {
		return len(sink.find(stateNode(1))) >= 2 && len(sink.find(tempNode(1))) >= 2
	})
	states := sink.find(stateNode(1))
	st := states[len(states)-1]
	if st.GetType() != "machine.state" || st.GetMachineState().GetState() != "running" || st.GetMachineState().GetMachine() != "M1" {
		t.Fatalf("state event = %v", st)
	}
	if st.GetAttributes()["status"] != "Good" || st.GetAttributes()["source_timestamp"] != "2026-03-01T10:00:00Z" || st.GetAttributes()["server_timestamp"] == "" {
		t.Fatalf("state event lacks quality and timestamps: %v", st.GetAttributes())
	}
	if want := EventID("DE-01", srv.Endpoint(), stateNode(1), ts, "running", 0); st.GetId() != want {
		t.Fatalf("id = %s, want %s", st.GetId(), want)
	}
	if !st.GetOccurredAt().AsTime().Equal(ts) {
		t.Fatalf("occurred_at = %v, want the source timestamp", st.GetOccurredAt().AsTime())
	}
	temps := sink.find(tempNode(1))
	obs := temps[len(temps)-1].GetObservation()
	if obs.GetDoubleValue() != 71.5 || obs.GetDataType() != "Double" || obs.GetUnit() != "Cel" || obs.GetStatusCode() != 0 ||
		!obs.GetSourceTimestamp().AsTime().Equal(ts) || obs.GetServerTimestamp() == nil {
		t.Fatalf("observation = %v", obs)
	}
	if got := value(t, h.src.m.items.WithLabelValues("good")); got != 2 {
		t.Fatalf("good items = %v, want 2", got)
	}
	if !strings.HasPrefix(st.GetSource().GetUri(), srv.Endpoint()+"#") || st.GetSource().GetKind() != "opcua" {
		t.Fatalf("source = %v", st.GetSource())
	}
}

// Basic256Sha256 SignAndEncrypt with the client certificate the source
// generates into its state folder; the server is pinned by fingerprint.
// Then the same server is refused while its certificate is unknown, with
// its fingerprint and the fix in the error, until `opcua trust` stores it.
func TestSourceSecureChannelAndServerTrust(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 1)
	fp := Fingerprint(serverIdentity(t).Cert)

	t.Run("SignAndEncrypt with a pinned server", func(t *testing.T) {
		cfg := baseConfig(srv.Endpoint())
		cfg.Security = SecurityConfig{Policy: PolicyBasic256Sha256, Mode: ModeSignAndEncrypt}
		cfg.Trust.Fingerprints = []string{strings.ToUpper(fp)}
		cfg.Nodes = []NodeConfig{{NodeID: tempNode(1)}}
		sink := &memSink{}
		h := startSource(t, cfg, sink, "")
		eventually(t, waitFor, "secure session", func() bool { return h.src.Health().State == source.StateRunning })
		if got := h.src.Security(); got != "Basic256Sha256/SignAndEncrypt" {
			t.Fatalf("session security = %q", got)
		}
		must(t, srv.Namespace().Set(machineKey(1)+".Temp", 33.25))
		eventually(t, waitFor, "value over the encrypted channel", func() bool {
			for _, ev := range sink.find(tempNode(1)) {
				if ev.GetObservation().GetDoubleValue() == 33.25 {
					return true
				}
			}
			return false
		})
		certPath, keyPath := ownPaths(h.dir)
		before, err := os.ReadFile(certPath)
		if err != nil {
			t.Fatalf("generated certificate not kept: %v", err)
		}
		if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("generated key %s: %v %v", keyPath, fi, err)
		}
		c, err := x509.ParseCertificate(before)
		if err != nil || len(c.URIs) != 1 || c.URIs[0].String() != "urn:plantsync:agent:agent-1:line1" {
			t.Fatalf("generated certificate lacks the application URI: %v %v", c.URIs, err)
		}
		// A restarted source keeps its certificate (the server trusts it).
		h.stop(t)
		h2 := startSource(t, cfg, &memSink{}, h.dir)
		eventually(t, waitFor, "secure session again", func() bool { return h2.src.Health().State == source.StateRunning })
		after, _ := os.ReadFile(certPath)
		if !bytes.Equal(before, after) {
			t.Fatal("the client certificate changed across restarts")
		}
	})

	t.Run("unknown server certificate refused until trusted", func(t *testing.T) {
		cfg := baseConfig(srv.Endpoint())
		cfg.Security = SecurityConfig{Policy: PolicyAuto, Mode: ModeAuto}
		cfg.Reconnect.RefusedInterval = 300 * time.Millisecond
		cfg.Nodes = []NodeConfig{{NodeID: tempNode(1)}}
		sink := &memSink{}
		h := startSource(t, cfg, sink, "")
		eventually(t, waitFor, "refusal", func() bool { return h.src.Health().LastError != "" })
		msg := h.src.Health().LastError
		for _, want := range []string{fp, "plantsync-agent opcua trust -endpoint " + srv.Endpoint() + " -state-dir " + h.dir, `trust: {fingerprints: ["` + fp + `"]}`} {
			if !strings.Contains(msg, want) {
				t.Fatalf("error %q lacks %q", msg, want)
			}
		}
		time.Sleep(time.Second)
		attempts := value(t, h.src.m.connectAttempts)
		if h.src.Health().Connected || len(sink.all()) > 0 {
			t.Fatal("connected to an untrusted server")
		}
		// 1s at a refused interval of 300ms (+ up to 20% jitter): a handful.
		if attempts > 6 {
			t.Fatalf("%v connect attempts in about a second; the refused interval is not kept", attempts)
		}
		if value(t, h.src.m.errors.WithLabelValues("trust")) < 1 {
			t.Fatal("trust errors not counted")
		}
		var out, errOut bytes.Buffer
		if code := RunCLI([]string{"trust", "-endpoint", srv.Endpoint(), "-state-dir", h.dir}, &out, &errOut); code != 0 {
			t.Fatalf("opcua trust exit %d: %s", code, errOut.String())
		}
		if !strings.Contains(out.String(), fp) || !strings.Contains(out.String(), filepath.Join(h.dir, "pki", "trusted")) {
			t.Fatalf("opcua trust output:\n%s", out.String())
		}
		eventually(t, waitFor, "session after trusting", func() bool { return h.src.Health().State == source.StateRunning })
		if got := h.src.Security(); got != "Basic256Sha256/SignAndEncrypt" {
			t.Fatalf("auto picked %q, want the strongest offered", got)
		}
		eventually(t, waitFor, "values after trusting", func() bool { return len(sink.find(tempNode(1))) > 0 })
	})
}
