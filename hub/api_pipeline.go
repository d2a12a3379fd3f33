package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/approvals"
	"github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipeline"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// maxBody bounds request bodies (a crosswalk table replaced in one PUT).
const maxBody = 64 << 20

var pipelineEndpoints = []string{
	"/api/v1/schemas", "/api/v1/workflows", "/api/v1/pipeline",
	"/api/v1/crosswalks", "/api/v1/crosswalks/{table} (GET, PUT with If-Match)", "/api/v1/crosswalks/{table}/rows (POST)", "/api/v1/crosswalks/{table}/history",
	"/api/v1/exceptions?plant=&type=&kind=&reason=&state=", "/api/v1/exceptions/{id}", "/api/v1/exceptions/{id}/replay (POST)", "/api/v1/exceptions/{id}/discard (POST, comment)", "/api/v1/exceptions/replay (POST, filter)",
	"/api/v1/approvals?state=pending", "/api/v1/approvals/{id}", "/api/v1/approvals/{id}/approve|reject (POST)",
	"/api/v1/alerts?state=open", "/api/v1/alerts/{id}/ack (POST)",
	"/api/v1/outbox/{destination}?state=&after=&limit=", "/api/v1/trace/{correlation_id}",
}

type route func(pattern string, f http.HandlerFunc)

func (h *Hub) pipelineRoutes(view, approve, admin route) {
	view("GET /api/v1/schemas", h.schemas)
	view("GET /api/v1/schemas/{type}", h.schemaOf)
	view("GET /api/v1/workflows", h.workflows)
	view("GET /api/v1/pipeline", h.pipelineStatus)
	view("GET /api/v1/crosswalks", h.crosswalkList)
	view("GET /api/v1/crosswalks/{table}", h.crosswalkGet)
	view("GET /api/v1/crosswalks/{table}/history", h.crosswalkHistory)
	admin("PUT /api/v1/crosswalks/{table}", h.crosswalkPut)
	admin("POST /api/v1/crosswalks/{table}/rows", h.crosswalkRows)
	view("GET /api/v1/exceptions", h.exceptionList)
	view("GET /api/v1/exceptions/{id}", h.exceptionGet)
	admin("POST /api/v1/exceptions/{id}/replay", h.exceptionReplay)
	admin("POST /api/v1/exceptions/{id}/discard", h.exceptionDiscard)
	admin("POST /api/v1/exceptions/replay", h.exceptionReplayFilter)
	view("GET /api/v1/approvals", h.approvalList)
	view("GET /api/v1/approvals/{id}", h.approvalGet)
	approve("POST /api/v1/approvals/{id}/{decision}", h.approvalDecide)
	view("GET /api/v1/alerts", h.alertList)
	approve("POST /api/v1/alerts/{id}/ack", h.alertAck)
	view("GET /api/v1/outbox/{destination}", h.outboxList)
	view("GET /api/v1/trace/{correlation_id}", h.trace)
}

func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf(format, args...)})
}

// storeError maps store errors onto status codes.
func storeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, crosswalk.ErrUnknownTable), errors.Is(err, exceptions.ErrNotFound), errors.Is(err, approvals.ErrNotFound),
		errors.Is(err, alerts.ErrNotFound), errors.Is(err, outbox.ErrUnknownDestination), errors.Is(err, pipeline.ErrTraceNotFound):
		code = http.StatusNotFound
	case errors.Is(err, crosswalk.ErrVersionMismatch):
		code = http.StatusPreconditionFailed
	case errors.Is(err, crosswalk.ErrInvalidRow), errors.Is(err, crosswalk.ErrCSV), errors.Is(err, pipeline.ErrBadDecision):
		code = http.StatusBadRequest
	case errors.Is(err, approvals.ErrDecided), errors.Is(err, alerts.ErrAcknowledged):
		code = http.StatusConflict
	}
	writeJSON(w, code, apiError{err.Error()})
}

func pathID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	s := r.PathValue("id")
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		badRequest(w, "id %q is not an id; want a whole number such as 17", s)
		return 0, false
	}
	return id, true
}

func queryUint(w http.ResponseWriter, r *http.Request, name string) (uint64, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, true
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		badRequest(w, "query parameter %s: %q is not a whole number", name, s)
		return 0, false
	}
	return v, true
}

func queryLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 100, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxEventsLimit {
		badRequest(w, "query parameter limit: %q; want 1 to %d", s, maxEventsLimit)
		return 0, false
	}
	return n, true
}

// decodeJSON reads a JSON body strictly; an empty body leaves v as it is
// when emptyOK.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) bool {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{fmt.Sprintf("request body: %v (limit %d bytes)", err, maxBody)})
		return false
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		if emptyOK {
			return true
		}
		badRequest(w, "request body: empty; want JSON")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			badRequest(w, "request body: invalid JSON at byte offset %d: %v", se.Offset, err)
		case errors.As(err, &te):
			badRequest(w, "request body: field %s at byte offset %d: want %s, got %s", te.Field, te.Offset, te.Type, te.Value)
		default:
			badRequest(w, "request body: %v", err)
		}
		return false
	}
	if dec.More() {
		badRequest(w, "request body: more than one JSON value")
		return false
	}
	return true
}

func (h *Hub) schemas(w http.ResponseWriter, _ *http.Request) {
	reg := h.pipeline.Schemas()
	writeJSON(w, http.StatusOK, map[string]any{"envelope": reg.Envelope, "schemas": reg.Types()})
}

func (h *Hub) schemaOf(w http.ResponseWriter, r *http.Request) {
	t, ok := h.pipeline.Schemas().Lookup(r.PathValue("type"))
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("no schema for event type %q; GET /api/v1/schemas lists them", r.PathValue("type"))})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"envelope": h.pipeline.Schemas().Envelope, "schema": t})
}

func (h *Hub) workflows(w http.ResponseWriter, _ *http.Request) {
	type dest struct {
		Name    string   `json:"name"`
		Type    string   `json:"type"`
		Actions []string `json:"actions"`
	}
	var ds []dest
	for _, d := range h.pipeline.Destinations() {
		acts := d.Actions
		if acts == nil {
			acts = pipeline.Actions()
		}
		ds = append(ds, dest{d.Name, d.Type, acts})
	}
	writeJSON(w, http.StatusOK, map[string]any{"workflows": h.pipeline.Workflows(), "rules": h.pipeline.Rules(), "destinations": ds})
}

func (h *Hub) pipelineStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status": h.pipeline.Status(), "exceptions_open": h.pipeline.Exceptions().OpenCount(),
		"approvals_pending": h.pipeline.Approvals().PendingCount(), "alerts_open": h.pipeline.Alerts().OpenCount(),
	})
}

// tableView is a crosswalk table as the API shows it.
type tableView struct {
	crosswalk.Spec
	Columns []string `json:"columns"`
	Exists  bool     `json:"exists"`
	*crosswalk.Table
}

func (h *Hub) crosswalkList(w http.ResponseWriter, _ *http.Request) {
	type summary struct {
		crosswalk.Spec
		Exists  bool   `json:"exists"`
		Version uint64 `json:"version"`
		Rows    int    `json:"rows"`
	}
	var out []summary
	cw := h.pipeline.Crosswalks()
	for _, sp := range cw.Specs() {
		t, exists, err := cw.Table(sp.Name)
		if err != nil {
			storeError(w, err)
			return
		}
		out = append(out, summary{Spec: sp, Exists: exists, Version: t.Version, Rows: len(t.Rows)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tables": out})
}

func etag(v uint64) string { return strconv.Quote(strconv.FormatUint(v, 10)) }

func (h *Hub) crosswalkGet(w http.ResponseWriter, r *http.Request) {
	t, exists, err := h.pipeline.Crosswalks().Table(r.PathValue("table"))
	if err != nil {
		storeError(w, err)
		return
	}
	w.Header().Set("ETag", etag(t.Version))
	if r.URL.Query().Get("format") == "csv" || strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv")
		_ = crosswalk.WriteCSV(w, t.Spec, t.Rows)
		return
	}
	writeJSON(w, http.StatusOK, tableView{Spec: t.Spec, Columns: t.Spec.Columns(), Exists: exists, Table: t})
}

func (h *Hub) crosswalkHistory(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryLimit(w, r)
	if !ok {
		return
	}
	hist, err := h.pipeline.Crosswalks().History(r.PathValue("table"), limit)
	if err != nil {
		storeError(w, err)
		return
	}
	if hist == nil {
		hist = []crosswalk.Change{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"table": r.PathValue("table"), "changes": hist})
}

// rowsBody reads rows as JSON ({"rows": [...]}) or, with Content-Type
// text/csv, as a CSV table whose errors name the line.
func (h *Hub) rowsBody(w http.ResponseWriter, r *http.Request, table string) ([]crosswalk.Row, bool) {
	sp, err := h.pipeline.Crosswalks().Spec(table)
	if err != nil {
		storeError(w, err)
		return nil, false
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "text/csv" {
		rows, err := crosswalk.ReadCSV("request body", http.MaxBytesReader(w, r.Body, maxBody), sp)
		if err != nil {
			storeError(w, err)
			return nil, false
		}
		return rows, true
	}
	var body struct {
		Rows []crosswalk.Row `json:"rows"`
	}
	if !decodeJSON(w, r, &body, false) {
		return nil, false
	}
	if body.Rows == nil {
		badRequest(w, `request body: want {"rows": [{"%s": "...", ...}]}`, strings.Join(sp.Columns(), `": "...", "`))
		return nil, false
	}
	return body.Rows, true
}

func (h *Hub) crosswalkPut(w http.ResponseWriter, r *http.Request) {
	table := r.PathValue("table")
	if _, err := h.pipeline.Crosswalks().Spec(table); err != nil {
		storeError(w, err)
		return
	}
	im := strings.TrimSpace(r.Header.Get("If-Match"))
	if im == "" {
		writeJSON(w, http.StatusPreconditionFailed, apiError{"If-Match required: send the table's current version as the ETag GET returned (e.g. If-Match: \"3\"; \"0\" for a new table)"})
		return
	}
	ver, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
	if err != nil {
		writeJSON(w, http.StatusPreconditionFailed, apiError{fmt.Sprintf("If-Match %s is not a table version; send the ETag GET returned, e.g. \"3\"", im)})
		return
	}
	rows, ok := h.rowsBody(w, r, table)
	if !ok {
		return
	}
	t, err := h.pipeline.Crosswalks().Replace(table, ver, rows, auth.Subject(r.Context()))
	if err != nil {
		storeError(w, err)
		return
	}
	w.Header().Set("ETag", etag(t.Version))
	writeJSON(w, http.StatusOK, map[string]any{"table": table, "version": t.Version, "rows": len(t.Rows)})
}

func (h *Hub) crosswalkRows(w http.ResponseWriter, r *http.Request) {
	table := r.PathValue("table")
	rows, ok := h.rowsBody(w, r, table)
	if !ok {
		return
	}
	if len(rows) == 0 {
		badRequest(w, "request body: no rows")
		return
	}
	t, err := h.pipeline.Crosswalks().Upsert(table, rows, auth.Subject(r.Context()))
	if err != nil {
		storeError(w, err)
		return
	}
	w.Header().Set("ETag", etag(t.Version))
	writeJSON(w, http.StatusOK, map[string]any{"table": table, "version": t.Version, "rows": len(t.Rows)})
}

// exceptionView shows the parked event as JSON instead of its bytes.
type exceptionView struct {
	*exceptions.Exception
	Event json.RawMessage `json:"event,omitempty"`
}

func viewException(e *exceptions.Exception) exceptionView {
	v := exceptionView{Exception: e}
	if len(e.Event) > 0 {
		var ev pb.Event
		if proto.Unmarshal(e.Event, &ev) == nil {
			v.Event, _ = jsonOpts.Marshal(&ev)
		}
	}
	return v
}

func exceptionFilter(w http.ResponseWriter, r *http.Request) (exceptions.Filter, bool) {
	q := r.URL.Query()
	f := exceptions.Filter{Plant: q.Get("plant"), Type: q.Get("type"), Kind: q.Get("kind"), Reason: q.Get("reason"), State: q.Get("state")}
	var ok bool
	if f.Before, ok = queryUint(w, r, "before"); !ok {
		return f, false
	}
	if f.Limit, ok = queryLimit(w, r); !ok {
		return f, false
	}
	if err := f.Validate(); err != nil {
		badRequest(w, "query parameter %v", err)
		return f, false
	}
	return f, true
}

func (h *Hub) exceptionList(w http.ResponseWriter, r *http.Request) {
	f, ok := exceptionFilter(w, r)
	if !ok {
		return
	}
	list, err := h.pipeline.Exceptions().List(f)
	if err != nil {
		storeError(w, err)
		return
	}
	out := make([]exceptionView, len(list))
	var next uint64
	for i, e := range list {
		out[i] = viewException(e)
		next = e.ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"exceptions": out, "next_before": next})
}

func (h *Hub) exceptionGet(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	e, err := h.pipeline.Exceptions().Get(id)
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewException(e))
}

func (h *Hub) exceptionReplay(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	res, err := h.pipeline.Replay([]uint64{id}, auth.Subject(r.Context()))
	if err != nil {
		storeError(w, err)
		return
	}
	if res[0].Outcome == pipeline.ReplayNotFound {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("exception %d not found", id)})
		return
	}
	writeJSON(w, http.StatusOK, res[0])
}

// exceptionDiscard resolves an exception without replaying it, e.g. a
// delivery the target will never accept, so the entries behind it in its
// ordering key can leave.
func (h *Hub) exceptionDiscard(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var body struct {
		Comment string `json:"comment"`
	}
	if !decodeJSON(w, r, &body, false) {
		return
	}
	if body.Comment == "" {
		badRequest(w, `request body: "comment" is required: say why the exception is discarded (it is kept in the audit trail)`)
		return
	}
	res, err := h.pipeline.Discard(id, auth.Subject(r.Context()), body.Comment)
	if err != nil {
		storeError(w, err)
		return
	}
	if res.Outcome == pipeline.ReplayNotFound {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("exception %d not found", id)})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *Hub) exceptionReplayFilter(w http.ResponseWriter, r *http.Request) {
	var body struct {
		exceptions.Filter
		// All replays every open exception; required when no filter field
		// is set, so an empty body never replays everything by accident.
		All bool `json:"all"`
	}
	if !decodeJSON(w, r, &body, false) {
		return
	}
	f := body.Filter
	if f.State != "" || f.Before != 0 || f.Limit != 0 {
		badRequest(w, "request body: state, before and limit do not apply to a replay; filter by plant, type, kind or reason")
		return
	}
	if f.Plant == "" && f.Type == "" && f.Kind == "" && f.Reason == "" && !body.All {
		badRequest(w, `request body: give a filter (plant, type, kind, reason), or {"all": true} to replay every open exception`)
		return
	}
	res, more, err := h.pipeline.ReplayFilter(f, auth.Subject(r.Context()))
	if err != nil {
		storeError(w, err)
		return
	}
	counts := map[string]int{}
	for _, x := range res {
		counts[x.Outcome]++
	}
	writeJSON(w, http.StatusOK, map[string]any{"replayed": len(res), "outcomes": counts, "more": more, "results": res})
}

func (h *Hub) approvalList(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "":
		state = string(approvals.StatePending)
	case "pending", "approved", "rejected", "all":
	default:
		badRequest(w, "query parameter state: %q; want pending, approved, rejected or all", state)
		return
	}
	limit, ok := queryLimit(w, r)
	if !ok {
		return
	}
	list, err := h.pipeline.Approvals().List(state, limit)
	if err != nil {
		storeError(w, err)
		return
	}
	if list == nil {
		list = []approvals.Listed{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": list})
}

func (h *Hub) approvalGet(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	a, waiting, err := h.pipeline.Approvals().Get(id)
	if err != nil {
		storeError(w, err)
		return
	}
	if waiting == nil {
		waiting = []approvals.Waiting{}
	}
	writeJSON(w, http.StatusOK, approvals.Listed{Approval: a, Waiting: waiting})
}

type commentBody struct {
	Comment string `json:"comment"`
}

func (h *Hub) approvalDecide(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	decision := r.PathValue("decision")
	if decision != "approve" && decision != "reject" {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("no endpoint %s; POST .../approve or .../reject", r.URL.Path)})
		return
	}
	var body commentBody
	if !decodeJSON(w, r, &body, true) {
		return
	}
	a, released, err := h.pipeline.Decide(id, decision, auth.Subject(r.Context()), body.Comment)
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"approval": a, "released": released})
}

func (h *Hub) alertList(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "":
		state = alerts.StateOpen
	case alerts.StateOpen, alerts.StateAcknowledged, "all":
	default:
		badRequest(w, "query parameter state: %q; want open, acknowledged or all", state)
		return
	}
	before, ok := queryUint(w, r, "before")
	if !ok {
		return
	}
	limit, ok := queryLimit(w, r)
	if !ok {
		return
	}
	list, err := h.pipeline.Alerts().List(state, before, limit)
	if err != nil {
		storeError(w, err)
		return
	}
	if list == nil {
		list = []*alerts.Alert{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"alerts": list})
}

func (h *Hub) alertAck(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var body commentBody
	if !decodeJSON(w, r, &body, true) {
		return
	}
	if err := h.pipeline.AckAlert(id, auth.Subject(r.Context()), body.Comment); err != nil {
		storeError(w, err)
		return
	}
	a, err := h.pipeline.Alerts().Get(id)
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (h *Hub) outboxList(w http.ResponseWriter, r *http.Request) {
	q := outbox.Query{Destination: r.PathValue("destination"), State: outbox.State(r.URL.Query().Get("state"))}
	switch q.State {
	case "", outbox.StatePending, outbox.StateDelivered, outbox.StateFailed:
	default:
		badRequest(w, "query parameter state: %q; want pending, delivered or failed", q.State)
		return
	}
	var ok bool
	if q.After, ok = queryUint(w, r, "after"); !ok {
		return
	}
	q.Ascending = r.URL.Query().Has("after")
	if q.Before, ok = queryUint(w, r, "before"); !ok {
		return
	}
	if q.Limit, ok = queryLimit(w, r); !ok {
		return
	}
	list, err := h.pipeline.Outbox().List(q)
	if err != nil {
		storeError(w, err)
		return
	}
	if list == nil {
		list = []outbox.Entry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"destination": q.Destination, "depth": h.pipeline.Outbox().Depth(q.Destination), "entries": list})
}

func (h *Hub) trace(w http.ResponseWriter, r *http.Request) {
	t, err := h.pipeline.Trace(r.PathValue("correlation_id"))
	if err != nil {
		storeError(w, err)
		return
	}
	for _, e := range t.Exceptions {
		e.Event = nil
	}
	writeJSON(w, http.StatusOK, t)
}
