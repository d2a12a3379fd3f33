package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// The admin API, mounted by the agent at /api/v1/sources/<name>/ on its
// loopback admin listener (the agent holds the lock on quarantine.db, so
// the CLI goes through it):
//
//	GET    quarantine?after=ID&limit=N   list quarantined messages, oldest first
//	GET    quarantine/{id}               one entry, payload included
//	POST   quarantine/replay[?id=ID...]  map them again with the running config
//	DELETE quarantine/{id}               forget one entry

// QuarantineList is the body of GET quarantine.
type QuarantineList struct {
	Source    string            `json:"source"`
	Total     int               `json:"total"`
	Entries   []QuarantineEntry `json:"entries"`
	NextAfter uint64            `json:"next_after,string"`
}

// ReplayReport is the body of POST quarantine/replay.
type ReplayReport struct {
	Source   string         `json:"source"`
	Replayed int            `json:"replayed"`
	Failed   int            `json:"failed"`
	Results  []ReplayResult `json:"results"`
}

// ReplayResult is what became of one replayed entry: replayed (its events
// are committed and the entry deleted) or failed (kept, with the reason).
type ReplayResult struct {
	ID     uint64 `json:"id,string"`
	Topic  string `json:"topic"`
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
}

// Admin implements source.AdminHandler.
func (s *Source) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /quarantine", func(w http.ResponseWriter, r *http.Request) {
		q, ok := s.quarantineOrFail(w)
		if !ok {
			return
		}
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil || limit <= 0 || limit > 1000 {
			limit = 100
		}
		entries, err := q.list(after, limit)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		body := QuarantineList{Source: s.env.Name, Total: q.count(), Entries: entries}
		if body.Entries == nil {
			body.Entries = []QuarantineEntry{}
		}
		if len(entries) > 0 {
			body.NextAfter = entries[len(entries)-1].ID
		}
		writeJSON(w, http.StatusOK, body)
	})
	mux.HandleFunc("GET /quarantine/{id}", func(w http.ResponseWriter, r *http.Request) {
		q, ok := s.quarantineOrFail(w)
		if !ok {
			return
		}
		id, err := parseQuarantineID(r.PathValue("id"))
		if err == nil {
			var e QuarantineEntry
			if e, err = q.get(id); err == nil {
				writeJSON(w, http.StatusOK, e)
				return
			}
		}
		writeError(w, statusOf(err), err)
	})
	mux.HandleFunc("DELETE /quarantine/{id}", func(w http.ResponseWriter, r *http.Request) {
		q, ok := s.quarantineOrFail(w)
		if !ok {
			return
		}
		id, err := parseQuarantineID(r.PathValue("id"))
		if err == nil {
			if err = q.remove(id); err == nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		writeError(w, statusOf(err), err)
	})
	mux.HandleFunc("POST /quarantine/replay", func(w http.ResponseWriter, r *http.Request) {
		var ids []uint64
		for _, v := range r.URL.Query()["id"] {
			id, err := parseQuarantineID(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
			ids = append(ids, id)
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
		defer cancel()
		rep, err := s.Replay(ctx, ids)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	return mux
}

func (s *Source) quarantineOrFail(w http.ResponseWriter) (*quarantine, bool) {
	s.mu.Lock()
	q, stopped := s.q, s.stopped
	s.mu.Unlock()
	if q == nil || stopped {
		writeError(w, http.StatusServiceUnavailable, ErrNotStarted)
		return nil, false
	}
	return q, true
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotQuarantined):
		return http.StatusNotFound
	case errors.Is(err, ErrNotStarted):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// Replay maps quarantined messages again with the running configuration
// (after a mapping fix and an agent restart, say). Entries that map now are
// committed to the buffer and deleted from the quarantine; the others stay
// with their new reason. No ids means every entry.
func (s *Source) Replay(ctx context.Context, ids []uint64) (ReplayReport, error) {
	s.mu.Lock()
	q, running := s.q, s.started && !s.stopped
	s.mu.Unlock()
	rep := ReplayReport{Source: s.env.Name, Results: []ReplayResult{}}
	if !running {
		return rep, ErrNotStarted
	}
	var entries []QuarantineEntry
	if len(ids) == 0 {
		var after uint64
		for {
			page, err := q.list(after, 1000)
			if err != nil {
				return rep, err
			}
			if len(page) == 0 {
				break
			}
			entries = append(entries, page...)
			after = page[len(page)-1].ID
		}
	}
	for _, id := range ids {
		e, err := q.get(id)
		if err != nil {
			return rep, err
		}
		entries = append(entries, e)
	}
	for _, e := range entries {
		res := ReplayResult{ID: e.ID, Topic: e.Topic}
		ch := make(chan result, 1)
		s.handle(inMsg{topic: e.Topic, payload: e.Payload, qos: e.QoS, received: time.Now()}, true, func(r result) { ch <- r })
		var r result
		select {
		case r = <-ch:
		case <-ctx.Done():
			return rep, fmt.Errorf("replay of quarantine entry %d: %w", e.ID, ctx.Err())
		}
		switch {
		case r.err != nil:
			res.Result, res.Reason = resultFailed, "not committed to the buffer: "+r.err.Error()
			rep.Failed++
		case r.kind == resultFailed:
			res.Result, res.Reason = resultFailed, r.reason
			rep.Failed++
			if err := q.update(e.ID, r.reason, r.location); err != nil {
				return rep, err
			}
		default:
			res.Result = "replayed"
			if r.kind != resultMapped {
				res.Reason = r.kind
			}
			rep.Replayed++
			if err := q.remove(e.ID); err != nil && !errors.Is(err, ErrNotQuarantined) {
				return rep, err
			}
		}
		rep.Results = append(rep.Results, res)
	}
	if rep.Replayed > 0 {
		s.log.Info("mqtt quarantine replayed", "replayed", rep.Replayed, "failed", rep.Failed)
	}
	return rep, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
