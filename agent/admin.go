package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/internal/buildinfo"
)

// Status is the body of /api/v1/status and /healthz.
type Status struct {
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons,omitempty"`
	Agent   struct {
		ID      string `json:"id"`
		Plant   string `json:"plant"`
		Version string `json:"version"`
	} `json:"agent"`
	Buffer struct {
		Path         string `json:"path"`
		Epoch        string `json:"epoch"`
		Events       uint64 `json:"events"`
		Bytes        int64  `json:"bytes"`
		MaxBytes     int64  `json:"max_bytes"`
		LastSequence uint64 `json:"last_sequence"`
		AckedThrough uint64 `json:"acked_through"`
		DroppedTotal uint64 `json:"dropped_total"`
		Blocked      bool   `json:"blocked"`
		Writable     bool   `json:"writable"`
		LastError    string `json:"last_error,omitempty"`
	} `json:"buffer"`
	Uplink struct {
		Hub          string    `json:"hub"`
		Connected    bool      `json:"connected"`
		Since        time.Time `json:"since"`
		Reconnects   uint64    `json:"reconnects"`
		AckedThrough uint64    `json:"acked_through"`
		LastError    string    `json:"last_error,omitempty"`
	} `json:"uplink"`
	Sources map[string]source.Health `json:"sources"`
}

// Status collects the agent's state; Healthy is false with reasons when the
// buffer is not writable, the uplink is down or a source is degraded.
func (a *Agent) Status() Status {
	var s Status
	s.Agent.ID, s.Agent.Plant, s.Agent.Version = a.cfg.Agent.ID, a.cfg.Agent.Plant, buildinfo.Version
	bs := a.buf.Stats()
	s.Buffer.Path, s.Buffer.Epoch = a.cfg.BufferPath(), bs.Epoch
	s.Buffer.Events, s.Buffer.Bytes, s.Buffer.MaxBytes = bs.Events, bs.Bytes, a.cfg.Buffer.MaxBytes
	s.Buffer.LastSequence, s.Buffer.AckedThrough, s.Buffer.DroppedTotal = bs.LastSeq, bs.AckedThrough, bs.DroppedTotal
	s.Buffer.Blocked, s.Buffer.Writable, s.Buffer.LastError = bs.Blocked, bs.Degraded == "", bs.Degraded
	us := a.up.State()
	s.Uplink.Hub, s.Uplink.Connected, s.Uplink.Since = a.cfg.Uplink.Hub, us.Connected, us.Since
	s.Uplink.Reconnects, s.Uplink.AckedThrough, s.Uplink.LastError = us.Reconnects, us.AckedThrough, us.LastError
	s.Sources = map[string]source.Health{}
	for _, ns := range a.sources {
		h := ns.src.Health()
		s.Sources[ns.name] = h
		if h.State == source.StateDegraded {
			s.Reasons = append(s.Reasons, "source "+ns.name+" degraded: "+h.LastError)
		}
	}
	if bs.Degraded != "" {
		s.Reasons = append(s.Reasons, "buffer not writable: "+bs.Degraded)
	}
	if bs.Blocked {
		s.Reasons = append(s.Reasons, "buffer full: sources are held back (policy block)")
	}
	if !us.Connected {
		s.Reasons = append(s.Reasons, "uplink to "+a.cfg.Uplink.Hub+" down: "+us.LastError)
	}
	s.Healthy = len(s.Reasons) == 0
	return s
}

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		s := a.Status()
		code := http.StatusOK
		if !s.Healthy {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"healthy": s.Healthy, "reasons": s.Reasons})
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	for _, ns := range a.sources {
		if ah, ok := ns.src.(source.AdminHandler); ok {
			prefix := "/api/v1/sources/" + ns.name
			mux.Handle(prefix+"/", http.StripPrefix(prefix, ah.Admin()))
		}
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
