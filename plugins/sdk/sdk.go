package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrUnsupported is returned (wrapped) by a connector for an operation or
// capability it does not offer, e.g. Changes of a webhook. It crosses the
// plugin boundary as gRPC Unimplemented, and errors.Is finds it on the host.
var ErrUnsupported = errors.New("not supported by this connector")

// Destination is what a connector the hub delivers to implements. Every
// method takes ctx first (its deadline crosses the process boundary) and
// plain request and response structs, so fields can be added without
// breaking connectors.
//
// A returned error means the plugin could not say what happened: the host
// treats it like a retryable, uncertain outcome (Lookup before creating
// again). Known outcomes, including refusals by the target, are answered in
// the response.
type Destination interface {
	// Configure checks and applies the connector's config; it is called
	// once after start (and again after every restart) before any other
	// call, and answers what the connector can do.
	Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error)
	// Deliver applies one document to the target.
	Deliver(ctx context.Context, req DeliverRequest) (DeliverResponse, error)
	// Lookup tells whether a document with this idempotency key exists at
	// the target (for an update: whether the target holds its values).
	Lookup(ctx context.Context, req LookupRequest) (LookupResponse, error)
	// List returns documents created at the target since a time
	// (capability "list"; reconciliation reads it).
	List(ctx context.Context, req ListRequest) (ListResponse, error)
	// Changes returns changes made at the target since a cursor
	// (capability "changes"; inbound ERP events read it).
	Changes(ctx context.Context, req ChangesRequest) (ChangesResponse, error)
	// Health checks the connection to the target.
	Health(ctx context.Context, req HealthRequest) (HealthResponse, error)
}

// Source is what an agent-side site plugin implements: it produces records
// and forgets each only after the agent acknowledged it (DESIGN.md rule 1).
type Source interface {
	Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error)
	// Read sends records to send until ctx ends. Seq numbers start at 1 in
	// each Read and increase by one. Records not acknowledged when a Read
	// ends must be sent again by the next Read (with new seq numbers, the
	// same ids).
	Read(ctx context.Context, req ReadRequest, send func([]Record) error) error
	// Ack reports that the records of the current Read with Seq <=
	// req.Through sit committed in the agent's buffer.
	Ack(ctx context.Context, req AckRequest) (AckResponse, error)
	Health(ctx context.Context, req HealthRequest) (HealthResponse, error)
}

// ConfigureRequest carries the connector's own config section.
type ConfigureRequest struct {
	// Name is the configured instance name, e.g. the destination "erp" or
	// the agent source "legacy-drop".
	Name string
	// Config is the plugin's `config:` section as decoded from YAML or
	// JSON. Secret references (file:PATH, env:NAME) under secret-named keys
	// are already resolved by the host.
	Config map[string]any
}

// Decode decodes Config into v (a pointer to the connector's config
// struct, with `json` tags and defaults set) strictly: an unknown key is an
// error naming it.
func (r ConfigureRequest) Decode(v any) error {
	raw, err := json.Marshal(r.Config)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Capability is an optional operation a destination offers.
type Capability string

// Capabilities. Deliver and Health are always offered.
const (
	// CapabilityLookup: Lookup can find a delivered document by its
	// idempotency key. Without it, Lookup answers LookupUnknown.
	CapabilityLookup Capability = "lookup"
	// CapabilityList: List returns documents created since a time.
	CapabilityList Capability = "list"
	// CapabilityChanges: Changes returns target-side changes.
	CapabilityChanges Capability = "changes"
)

// ConfigureResponse says what a configured connector can do.
type ConfigureResponse struct {
	// Actions the destination performs; the hub refuses a workflow routing
	// another action to it. Empty for sources.
	Actions      []string
	Capabilities []Capability
	// Version of the connector, for logs and status pages.
	Version string
}

// Supports reports whether action is among r.Actions.
func (r ConfigureResponse) Supports(action string) bool { return slices.Contains(r.Actions, action) }

// Has reports whether c is among r.Capabilities.
func (r ConfigureResponse) Has(c Capability) bool { return slices.Contains(r.Capabilities, c) }

// DeliverRequest is one outbox entry.
type DeliverRequest struct {
	// IdempotencyKey is the same on every attempt of this entry, after any
	// crash or replay. Connectors write it into the target document.
	IdempotencyKey string
	Action         string
	OrderingKey    string
	CorrelationID  string
	// Attempt counts from 1.
	Attempt int
	// Document is the JSON document in the destination's codes.
	Document json.RawMessage
}

// DecodeDocument decodes Document into v.
func (r DeliverRequest) DecodeDocument(v any) error { return decodeDocument(r.Document, v) }

func decodeDocument(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return errors.New("document: empty")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("document: %w", err)
	}
	return nil
}

// Outcome of a delivery attempt.
type Outcome string

// Outcomes.
const (
	// OutcomeOK: the target holds the document (created now or before).
	OutcomeOK Outcome = "ok"
	// OutcomeRetryable: try again later (target down, throttled, timeout).
	OutcomeRetryable Outcome = "retryable"
	// OutcomePermanent: the target refused the document; retrying the same
	// document cannot help. It goes to the exceptions.
	OutcomePermanent Outcome = "permanent"
)

// DeliverResponse is the result of one attempt.
type DeliverResponse struct {
	Outcome Outcome
	// ExternalRef is the target's id of the document (ERP number, URL).
	ExternalRef string
	// Message explains a retryable or permanent outcome.
	Message string
	// RetryAfter is the target's wish for the next attempt; 0: none.
	RetryAfter time.Duration
	// Uncertain: the target may have applied the document although the
	// outcome is not ok (e.g. a timeout after the request was sent). The
	// engine calls Lookup before delivering again.
	Uncertain bool
}

// OK is a successful delivery.
func OK(externalRef string) DeliverResponse {
	return DeliverResponse{Outcome: OutcomeOK, ExternalRef: externalRef}
}

// Retryable is an attempt to repeat later; after is the target's wish (0:
// none).
func Retryable(after time.Duration, format string, args ...any) DeliverResponse {
	return DeliverResponse{Outcome: OutcomeRetryable, RetryAfter: after, Message: fmt.Sprintf(format, args...)}
}

// Permanent is a refusal that no retry can fix.
func Permanent(format string, args ...any) DeliverResponse {
	return DeliverResponse{Outcome: OutcomePermanent, Message: fmt.Sprintf(format, args...)}
}

// LookupRequest asks for a document by its idempotency key. Action and
// Document let a connector compare an update's values with the target's.
type LookupRequest struct {
	IdempotencyKey string
	Action         string
	Document       json.RawMessage
}

// DecodeDocument decodes Document into v.
func (r LookupRequest) DecodeDocument(v any) error { return decodeDocument(r.Document, v) }

// LookupStatus is what a lookup found out.
type LookupStatus string

// Lookup statuses.
const (
	// LookupFound: the target holds the document (for an update: its
	// values); delivering it again is not needed.
	LookupFound LookupStatus = "found"
	// LookupNotFound: the target certainly does not hold it.
	LookupNotFound LookupStatus = "not_found"
	// LookupUnknown: the connector cannot tell (no lookup capability, or
	// the target did not answer); the engine relies on the target's own
	// idempotency handling or waits.
	LookupUnknown LookupStatus = "unknown"
)

// LookupResponse is the result of a lookup.
type LookupResponse struct {
	Status      LookupStatus
	ExternalRef string
	Message     string
}

// ListRequest asks for documents created at the target since a time.
type ListRequest struct {
	Since time.Time
	// Action filters by action; empty: every action.
	Action string
	// Limit bounds the answer; 0: the connector's default.
	Limit     int
	PageToken string
}

// Document is one document found at the target.
type Document struct {
	IdempotencyKey string
	Action         string
	ExternalRef    string
	CreatedAt      time.Time
	Document       json.RawMessage
}

// ListResponse is one page of documents; NextPageToken is empty on the last.
type ListResponse struct {
	Documents     []Document
	NextPageToken string
}

// ChangesRequest asks for target-side changes after Cursor (empty: from the
// connector's configured beginning).
type ChangesRequest struct {
	Cursor string
	Limit  int
}

// Change is one change made at the target, e.g. a purchase order confirmed
// in the ERP.
type Change struct {
	// ID is stable for one change, so reading it twice is recognised.
	ID string
	// Kind names the change in the destination's terms, e.g.
	// "purchase_order.confirmed".
	Kind        string
	ExternalRef string
	// IdempotencyKey is set when plantsync created the document.
	IdempotencyKey string
	ChangedAt      time.Time
	Document       json.RawMessage
}

// ChangesResponse is a page of changes; NextCursor resumes after them and
// More says whether another call now would return more.
type ChangesResponse struct {
	Changes    []Change
	NextCursor string
	More       bool
}

// HealthRequest is empty; it exists so fields can be added.
type HealthRequest struct{}

// HealthResponse says whether the connector reaches its target.
type HealthResponse struct {
	Healthy bool
	Message string
}

// ReadRequest is empty; it exists so fields can be added.
type ReadRequest struct{}

// Record is one observation of a source plugin.
type Record struct {
	// Seq increases by one within a Read, starting at 1; acks refer to it.
	Seq uint64
	// ID is the record's stable id at its origin (e.g. a row id). The agent
	// derives the event id from it, so a record sent again after a crash
	// becomes the same event (DESIGN.md rule 2).
	ID string
	// Event holds type, timestamps, attributes and payload; the agent sets
	// id, plant, sequence and source name.
	Event *pb.Event
}

// AckRequest acknowledges every record of the current Read with Seq <=
// Through.
type AckRequest struct {
	Through uint64
}

// AckResponse is empty; it exists so fields can be added.
type AckResponse struct{}

// UnimplementedDestination gives a connector the answers for what it does
// not offer; embed it and implement the rest. Lookup answers LookupUnknown,
// List and Changes ErrUnsupported, Health healthy.
type UnimplementedDestination struct{}

// Lookup implements Destination.
func (UnimplementedDestination) Lookup(context.Context, LookupRequest) (LookupResponse, error) {
	return LookupResponse{Status: LookupUnknown, Message: "this connector cannot look documents up"}, nil
}

// List implements Destination.
func (UnimplementedDestination) List(context.Context, ListRequest) (ListResponse, error) {
	return ListResponse{}, fmt.Errorf("list: %w", ErrUnsupported)
}

// Changes implements Destination.
func (UnimplementedDestination) Changes(context.Context, ChangesRequest) (ChangesResponse, error) {
	return ChangesResponse{}, fmt.Errorf("changes: %w", ErrUnsupported)
}

// Health implements Destination.
func (UnimplementedDestination) Health(context.Context, HealthRequest) (HealthResponse, error) {
	return HealthResponse{Healthy: true}, nil
}
