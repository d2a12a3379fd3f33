package hub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/internal/buildinfo"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

const maxEventsLimit = 1000

func (h *Hub) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", h.healthz)
	// Every /api/v1 route needs a bearer token (hub/auth): viewer reads,
	// approver also decides approvals and acknowledges alerts, admin also
	// edits crosswalks and replays.
	view := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, h.guard.Require(auth.Viewer, f)) }
	approve := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, h.guard.Require(auth.Approver, f)) }
	admin := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, h.guard.Require(auth.Admin, f)) }
	view("GET /api/v1/agents", h.agents)
	view("GET /api/v1/delivery", func(w http.ResponseWriter, _ *http.Request) {
		// Per destination: breaker state, in-flight and retrying keys,
		// keys held back behind parked entries, the last errors.
		writeJSON(w, http.StatusOK, map[string]any{"destinations": h.DeliveryStatus()})
	})
	view("GET /api/v1/events", h.events)
	view("GET /api/v1/rejected", h.rejected)
	h.pipelineRoutes(view, approve, admin)
	// Partners authenticate with their own credentials (hub/partner), not
	// with operator tokens.
	mux.Handle(partner.Route, h.partners)
	view("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("no endpoint %s %s; GET / lists them", r.Method, r.URL.Path)})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"name": "plantsync-hub", "version": buildinfo.Version,
			"endpoints": append([]string{"/healthz", "/metrics", "/api/v1/agents", "/api/v1/delivery", "/api/v1/events?after=POSITION&limit=N", "/api/v1/rejected", "/api/v1/ingest/{partner} (POST, partner credentials)"}, pipelineEndpoints...),
			"auth":      "every /api/v1 endpoint needs Authorization: Bearer <token> (tokens file: http.auth.tokens_file)",
		})
	})
	return mux
}

// opsRoutes is the optional ops listener: health and metrics only.
func (h *Hub) opsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", h.healthz)
	return mux
}

// apiError is the JSON body of every 4xx/5xx.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (h *Hub) healthz(w http.ResponseWriter, _ *http.Request) {
	st := h.journal.Stats()
	ps := h.pipeline.Status()
	body := map[string]any{"healthy": st.Degraded == "" && ps.Degraded == "", "journal_last_position": st.LastPosition,
		"pipeline_cursor": ps.Cursor, "pipeline_lag": ps.Lag}
	var reasons []string
	if st.Degraded != "" {
		reasons = append(reasons, "journal commits failing: "+st.Degraded)
	}
	if ps.Degraded != "" {
		reasons = append(reasons, "pipeline commits failing: "+ps.Degraded)
	}
	if len(reasons) > 0 {
		body["reasons"] = reasons
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

type agentView struct {
	ID           string `json:"id"`
	Plant        string `json:"plant"`
	Epoch        string `json:"epoch"`
	Connected    bool   `json:"connected"`
	LastSequence uint64 `json:"last_sequence"`
	// Sequences of this epoch dropped as id duplicates or kept as rejected.
	DuplicateEvents uint64     `json:"duplicate_events"`
	RejectedEvents  uint64     `json:"rejected_events"`
	LastSeen        time.Time  `json:"last_seen"`
	BufferedEvents  *uint64    `json:"buffered_events,omitempty"`
	BufferedBytes   *uint64    `json:"buffered_bytes,omitempty"`
	DroppedTotal    *uint64    `json:"dropped_events_total,omitempty"`
	ReportedAt      *time.Time `json:"buffer_reported_at,omitempty"`
}

func (h *Hub) agents(w http.ResponseWriter, _ *http.Request) {
	states, err := h.journal.Agents()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
		return
	}
	live := h.ingest.Live()
	out := make([]agentView, 0, len(states))
	for _, s := range states {
		v := agentView{ID: s.ID, Plant: s.Plant, Epoch: s.Epoch, LastSequence: s.LastSequence, LastSeen: s.LastSeen,
			DuplicateEvents: s.DuplicateEvents, RejectedEvents: s.RejectedEvents}
		if l, ok := live[s.ID]; ok {
			v.Connected = l.Connected
			if !l.ReportedAt.IsZero() {
				v.BufferedEvents, v.BufferedBytes, v.DroppedTotal, v.ReportedAt = &l.BufferedEvents, &l.BufferedBytes, &l.DroppedTotal, &l.ReportedAt
			}
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	writeJSON(w, http.StatusOK, map[string]any{"agents": out})
}

// pageParams parses after and limit with errors that say what to send.
func pageParams(r *http.Request) (after uint64, limit int, err error) {
	limit = 100
	if s := r.URL.Query().Get("after"); s != "" {
		if after, err = strconv.ParseUint(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("query parameter after: %q is not a journal position; want a whole number >= 0", s)
		}
	}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 1 || n > maxEventsLimit {
			return 0, 0, fmt.Errorf("query parameter limit: %q; want 1 to %d", s, maxEventsLimit)
		}
		limit = n
	}
	return after, limit, nil
}

type eventView struct {
	Position   uint64          `json:"position"`
	ReceivedAt time.Time       `json:"received_at"`
	Producer   string          `json:"producer"`
	Epoch      string          `json:"epoch,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Event      json.RawMessage `json:"event"`
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

func (h *Hub) events(w http.ResponseWriter, r *http.Request)   { h.page(w, r, h.journal.Read) }
func (h *Hub) rejected(w http.ResponseWriter, r *http.Request) { h.page(w, r, h.journal.Rejected) }

func (h *Hub) page(w http.ResponseWriter, r *http.Request, read func(uint64, int) ([]journal.Record, error)) {
	after, limit, err := pageParams(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
		return
	}
	recs, err := read(after, limit)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
		return
	}
	out := make([]eventView, 0, len(recs))
	next := after
	for _, rec := range recs {
		v := eventView{Position: rec.Position, ReceivedAt: rec.ReceivedAt, Producer: rec.Producer, Epoch: rec.Epoch, Reason: rec.Reason}
		var ev pb.Event
		if err := proto.Unmarshal(rec.Event, &ev); err != nil {
			v.Event, _ = json.Marshal(map[string]string{"undecodable": err.Error(), "id": rec.EventID})
		} else if v.Event, err = jsonOpts.Marshal(&ev); err != nil {
			v.Event, _ = json.Marshal(map[string]string{"unencodable": err.Error()})
		}
		out = append(out, v)
		next = rec.Position
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "next_after": next})
}
