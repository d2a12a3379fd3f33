package partner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/schema"
	"github.com/plantsync/plantsync/internal/failpoint"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Route is the pattern the hub serves the handler under; {partner} is a
// configured partner name.
const Route = "POST /api/v1/ingest/{partner}"

// FailpointAfterCommit marks the moment between the journal commit of the
// accepted events and the answer to the partner.
const FailpointAfterCommit = "hub/partner/after-commit"

// ErrOptions marks Options that cannot build a Handler.
var ErrOptions = errors.New("partner handler options")

// commitTimeout bounds the wait for the journal. The commit is not tied to
// the client's connection: once queued it completes either way, and its
// outcome is counted.
const commitTimeout = 30 * time.Second

// Statuses of Result.
const (
	StatusAccepted  = "accepted"
	StatusDuplicate = "duplicate"
	StatusRejected  = "rejected"
	StatusForbidden = "forbidden"
)

// Answer is the body of 200 and 422 answers: one result per posted event,
// in order. It is written only after the accepted events are committed.
type Answer struct {
	Partner    string   `json:"partner"`
	Accepted   int      `json:"accepted"`
	Duplicates int      `json:"duplicates"`
	Rejected   int      `json:"rejected"`
	Results    []Result `json:"results"`
}

// Result is what became of one posted event.
type Result struct {
	Index int `json:"index"`
	// ID is the partner's own id of the event, as far as it could be read.
	ID string `json:"id,omitempty"`
	// EventID is the derived event id (accepted and duplicate events).
	EventID string `json:"event_id,omitempty"`
	Status  string `json:"status"`
	// Position is the journal position: of this event when accepted, of
	// its first copy when a duplicate.
	Position uint64       `json:"position,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// Refusal is the body of every answer without per-event results (4xx, 5xx);
// Results lists the offending events of a 403.
type Refusal struct {
	Error   string   `json:"error"`
	Results []Result `json:"results,omitempty"`
}

// Options build a Handler.
type Options struct {
	Partners []Config
	Journal  journal.Journal
	// Schemas validates each event against the schema of its type: the
	// registry the pipeline uses and GET /api/v1/schemas serves.
	Schemas    *schema.Registry
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock of the rate limits and observed_at; time.Now when
	// nil.
	Now func() time.Time
}

// Handler serves POST /api/v1/ingest/{partner}. It starts no goroutines;
// the HTTP server's shutdown waits for requests in flight.
type Handler struct {
	journal  journal.Journal
	schemas  *schema.Registry
	log      *slog.Logger
	m        *metrics
	now      func() time.Time
	partners map[string]*partnerState
	unknown  logLimiter // auth failures of partner names not configured
}

type partnerState struct {
	cfg     Config
	creds   credentials
	types   map[string]bool
	plants  map[string]bool // nil: any plant
	limit   *bucket
	authLog logLimiter
}

// New reads the partners' secret files and builds the handler. The configs
// must have passed Validate.
func New(opts Options) (*Handler, error) {
	if opts.Journal == nil || opts.Schemas == nil {
		return nil, fmt.Errorf("%w: Journal and Schemas are required", ErrOptions)
	}
	h := &Handler{journal: opts.Journal, schemas: opts.Schemas, log: opts.Logger, now: opts.Now, partners: map[string]*partnerState{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	names := make([]string, 0, len(opts.Partners))
	for i, c := range opts.Partners {
		c = c.WithDefaults()
		if _, dup := h.partners[c.Name]; dup || c.Name == "" {
			return nil, fmt.Errorf("%w: partners[%d].name %q is empty or not unique", ErrOptions, i, c.Name)
		}
		creds, err := loadCredentials(c.Auth)
		if err != nil {
			return nil, fmt.Errorf("partners[%d] (%s): %w", i, c.Name, err)
		}
		st := &partnerState{cfg: c, creds: creds, types: map[string]bool{},
			limit: newBucket(c.RateLimit.RequestsPerSecond, c.RateLimit.Burst, h.now())}
		for _, t := range c.Types {
			st.types[t] = true
		}
		if !slices.Contains(c.Plants, "*") {
			st.plants = map[string]bool{}
			for _, p := range c.Plants {
				st.plants[p] = true
			}
		}
		h.partners[c.Name] = st
		names = append(names, c.Name)
	}
	h.m = newMetrics(opts.Registerer, names)
	if len(names) > 0 {
		h.log.Info("partner ingestion configured", "partners", names, "route", Route)
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("partner")
	p, ok := h.partners[name]
	if !ok {
		h.m.authFailed.WithLabelValues(unknownPartner, authUnknown).Inc()
		h.m.request(unknownPartner, http.StatusUnauthorized)
		h.unknown.log(h.log, h.now(), "partner request refused: no such partner", "partner", name, "remote", r.RemoteAddr)
		deny(w, http.StatusUnauthorized, "credentials not accepted")
		return
	}
	start := h.now()
	code := h.serve(w, r, p)
	h.m.request(name, code)
	if code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
		h.m.duration.WithLabelValues(name).Observe(h.now().Sub(start).Seconds())
	}
}

func (h *Handler) refuse(p *partnerState, w http.ResponseWriter, r *http.Request, ae *authError) int {
	h.m.authFailed.WithLabelValues(p.cfg.Name, ae.reason).Inc()
	p.authLog.log(h.log, h.now(), "partner request refused: credentials", "partner", p.cfg.Name, "reason", ae.reason, "remote", r.RemoteAddr)
	deny(w, http.StatusUnauthorized, ae.msg)
	return http.StatusUnauthorized
}

// serve handles one authenticated partner's request and returns the
// status code it answered with.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, p *partnerState) int {
	if ae := p.creds.checkHeaders(r); ae != nil {
		return h.refuse(p, w, r, ae)
	}
	// After authentication, so nobody else can use up a partner's budget.
	if ok, wait := p.limit.take(h.now()); !ok {
		h.m.rateLimited.WithLabelValues(p.cfg.Name).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter(wait)))
		return answer(w, http.StatusTooManyRequests, Refusal{Error: fmt.Sprintf("rate limit of partner %q (%g requests/s, burst %d) exceeded; retry after the Retry-After seconds",
			p.cfg.Name, p.cfg.RateLimit.RequestsPerSecond, p.cfg.RateLimit.Burst)})
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return answer(w, http.StatusUnsupportedMediaType, Refusal{Error: fmt.Sprintf("Content-Type %q; want application/json", ct)})
		}
	}
	limit := p.cfg.MaxBodyBytes()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return answer(w, http.StatusRequestEntityTooLarge, Refusal{Error: fmt.Sprintf("request body over %d bytes (max_batch_events %d × %d); split the batch", limit, p.cfg.MaxBatchEvents, perEventBytes)})
		}
		return answer(w, http.StatusBadRequest, Refusal{Error: fmt.Sprintf("request body: %v", err)})
	}
	if ae := p.creds.checkSignature(r, body); ae != nil {
		return h.refuse(p, w, r, ae)
	}
	raws, err := splitBody(body)
	if err != nil {
		return answer(w, http.StatusBadRequest, Refusal{Error: err.Error()})
	}
	if len(raws) > p.cfg.MaxBatchEvents {
		return answer(w, http.StatusRequestEntityTooLarge, Refusal{Error: fmt.Sprintf("batch of %d events exceeds max_batch_events %d of partner %q; split it", len(raws), p.cfg.MaxBatchEvents, p.cfg.Name)})
	}

	results, events, forbidden := h.check(p, raws)
	if len(forbidden) > 0 {
		for _, f := range forbidden {
			for _, e := range f.Errors {
				h.m.forbidden.WithLabelValues(p.cfg.Name, e.Field).Inc()
			}
		}
		return answer(w, http.StatusForbidden, Refusal{
			Error:   fmt.Sprintf("partner %q may not send some of these events (see results); nothing of this request was journaled", p.cfg.Name),
			Results: forbidden,
		})
	}
	return h.commit(w, p, results, events)
}

// check decodes and validates every posted event. results has one entry
// per event; events holds the accepted ones by index.
func (h *Handler) check(p *partnerState, raws []json.RawMessage) (results []Result, events map[int]*pb.Event, forbidden []Result) {
	results = make([]Result, len(raws))
	events = map[int]*pb.Event{}
	now := timestamppb.New(h.now())
	for i, raw := range raws {
		res := Result{Index: i, ID: partnerID(raw)}
		ev, errs := decodeEvent(raw)
		if ev != nil {
			res.ID = ev.GetId()
			if f := p.forbidden(ev); len(f) > 0 {
				forbidden = append(forbidden, Result{Index: i, ID: res.ID, Status: StatusForbidden, Errors: f})
				continue
			}
			errs = append(errs, h.validate(p.cfg.Name, ev, now)...)
		}
		if len(errs) > 0 {
			res.Status, res.Errors = StatusRejected, errs
		} else {
			res.EventID = ev.GetId()
			events[i] = ev
		}
		results[i] = res
	}
	return results, events, forbidden
}

// forbidden lists the type and plant the partner may not send. An empty
// one is a schema problem, reported by validate.
func (p *partnerState) forbidden(ev *pb.Event) []FieldError {
	var errs []FieldError
	if t := ev.GetType(); t != "" && !p.types[t] {
		errs = append(errs, FieldError{"type", fmt.Sprintf("partner %q may not send %q; it may send %s", p.cfg.Name, t, strings.Join(p.cfg.Types, ", "))})
	}
	if pl := ev.GetPlant(); pl != "" && p.plants != nil && !p.plants[pl] {
		errs = append(errs, FieldError{"plant", fmt.Sprintf("partner %q may not send for plant %q; it may send for %s", p.cfg.Name, pl, strings.Join(p.cfg.Plants, ", "))})
	}
	return errs
}

// validate gives the event its hub-side identity and checks it against the
// schema of its type.
func (h *Handler) validate(partner string, ev *pb.Event, now *timestamppb.Timestamp) []FieldError {
	id := ev.GetId()
	if ev.Attributes == nil {
		ev.Attributes = map[string]string{}
	}
	ev.Attributes[AttrPartnerID] = id
	ev.Id = EventID(partner, id)
	ev.Source = &pb.Source{Name: partner, Kind: SourceKind, Uri: "/api/v1/ingest/" + partner}
	ev.ObservedAt = now
	if ev.GetType() == "" {
		return []FieldError{{"type", "missing; want the event type, e.g. supplier.confirmation (GET /api/v1/schemas lists them)"}}
	}
	_, err := h.schemas.Validate(ev)
	if err == nil {
		return nil
	}
	var ve *schema.ValidationError
	if errors.As(err, &ve) {
		out := make([]FieldError, len(ve.Violations))
		for i, v := range ve.Violations {
			out[i] = FieldError{v.Field, v.Problem}
		}
		return out
	}
	if errors.Is(err, schema.ErrVersion) {
		return []FieldError{{"schema_version", err.Error()}}
	}
	return []FieldError{{"type", err.Error()}}
}

// commit journals the accepted events and answers only once they are
// durable.
func (h *Handler) commit(w http.ResponseWriter, p *partnerState, results []Result, events map[int]*pb.Event) int {
	order := make([]int, 0, len(events))
	for i := range results {
		if _, ok := events[i]; ok {
			order = append(order, i)
		}
	}
	a := Answer{Partner: p.cfg.Name, Results: results}
	if len(order) > 0 {
		b := &journal.Batch{Producer: Producer(p.cfg.Name), Events: make([]journal.Incoming, 0, len(order))}
		for _, i := range order {
			raw, err := proto.Marshal(events[i])
			if err != nil {
				// Decoded events always marshal; refuse rather than crash.
				return answer(w, http.StatusInternalServerError, Refusal{Error: fmt.Sprintf("event %d: encode: %v", i, err)})
			}
			// The pipeline takes the decoded event from here on.
			b.Events = append(b.Events, journal.Incoming{ID: events[i].GetId(), Raw: raw, Decoded: events[i]})
		}
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		out, err := h.journal.Commit(ctx, b)
		cancel()
		if err != nil {
			h.log.Error("partner events not journaled", "partner", p.cfg.Name, "events", len(order), "error", err)
			w.Header().Set("Retry-After", "1")
			return answer(w, http.StatusServiceUnavailable, Refusal{Error: fmt.Sprintf("journal: %v; resend the request (events already accepted are answered as duplicates)", err)})
		}
		if len(out.Results) != len(order) {
			return answer(w, http.StatusInternalServerError, Refusal{Error: fmt.Sprintf("journal answered %d results for %d events; resend the request", len(out.Results), len(order))})
		}
		failpoint.Inject(FailpointAfterCommit)
		for k, i := range order {
			res := &results[i]
			res.Position = out.Results[k].Position
			switch out.Results[k].Status {
			case journal.StatusJournaled:
				res.Status = StatusAccepted
			case journal.StatusDuplicate:
				res.Status = StatusDuplicate
			default:
				res.Status = StatusRejected
				res.Errors = []FieldError{{Reason: "refused by the journal"}}
			}
		}
	}
	for _, res := range results {
		switch res.Status {
		case StatusAccepted:
			a.Accepted++
		case StatusDuplicate:
			a.Duplicates++
		default:
			a.Rejected++
		}
	}
	h.m.events.WithLabelValues(p.cfg.Name, resultAccepted).Add(float64(a.Accepted))
	h.m.events.WithLabelValues(p.cfg.Name, resultDuplicate).Add(float64(a.Duplicates))
	h.m.events.WithLabelValues(p.cfg.Name, resultRejected).Add(float64(a.Rejected))
	code := http.StatusOK
	if a.Rejected > 0 {
		code = http.StatusUnprocessableEntity
	}
	return answer(w, code, a)
}

func answer(w http.ResponseWriter, code int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	return code
}

func deny(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="plantsync-hub partner ingestion"`)
	answer(w, code, Refusal{Error: msg})
}

// logLimiter keeps refused requests from flooding the log: one line per
// minute, with the number left out since the last one. The metrics count
// every one.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const logEvery = time.Minute

func (l *logLimiter) log(log *slog.Logger, now time.Time, msg string, args ...any) {
	l.mu.Lock()
	if !l.last.IsZero() && now.Sub(l.last) < logEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	log.Warn(msg, append(args, "similar_suppressed", n)...)
}
