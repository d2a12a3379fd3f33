package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/plantsync/plantsync/proto/plantsync/plugin/v1"
)

// This file converts between the Go interfaces and the gRPC protocol, in
// both directions: the server side runs in the plugin process, the client
// side in the host.

// maxMessage bounds one gRPC message between host and plugin; documents and
// record batches are far smaller, but the gRPC default (4 MiB) is too
// tight for a List page of large documents.
const maxMessage = 64 << 20

// toStatus turns a connector's error into a gRPC status, keeping
// ErrUnsupported recognisable on the other side.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnsupported) {
		return status.Error(codes.Unimplemented, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// remoteError is an error a plugin returned, as the host sees it.
type remoteError struct {
	msg  string
	kind error // ErrUnsupported, a context error, or nil
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// fromStatus turns a gRPC error back into a Go error. Transport failures
// (the plugin process is gone) are returned unchanged for the host to
// classify.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unimplemented:
		return &remoteError{msg: st.Message(), kind: ErrUnsupported}
	case codes.Unknown:
		return &remoteError{msg: st.Message()}
	case codes.DeadlineExceeded:
		return &remoteError{msg: st.Message(), kind: context.DeadlineExceeded}
	case codes.Canceled:
		return &remoteError{msg: st.Message(), kind: context.Canceled}
	}
	return err
}

func encodeConfig(cfg map[string]any) ([]byte, error) {
	if cfg == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(cfg)
}

func decodeConfig(raw []byte) (map[string]any, error) {
	out := map[string]any{}
	if len(raw) == 0 {
		return out, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	// Keep numbers exact: a config may carry ids beyond float precision.
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return out, nil
}

func capsFrom(in []string) []Capability {
	out := make([]Capability, 0, len(in))
	for _, c := range in {
		out = append(out, Capability(c))
	}
	return out
}

func capsTo(in []Capability) []string {
	out := make([]string, 0, len(in))
	for _, c := range in {
		out = append(out, string(c))
	}
	return out
}

func configureToProto(r ConfigureResponse) *pluginv1.ConfigureResponse {
	return &pluginv1.ConfigureResponse{Actions: r.Actions, Capabilities: capsTo(r.Capabilities), Version: r.Version}
}

func configureFromProto(r *pluginv1.ConfigureResponse) ConfigureResponse {
	return ConfigureResponse{Actions: r.GetActions(), Capabilities: capsFrom(r.GetCapabilities()), Version: r.GetVersion()}
}

func outcomeToProto(o Outcome) pluginv1.Outcome {
	switch o {
	case OutcomeOK:
		return pluginv1.Outcome_OUTCOME_OK
	case OutcomeRetryable:
		return pluginv1.Outcome_OUTCOME_RETRYABLE
	case OutcomePermanent:
		return pluginv1.Outcome_OUTCOME_PERMANENT
	}
	return pluginv1.Outcome_OUTCOME_UNSPECIFIED
}

func outcomeFromProto(o pluginv1.Outcome) Outcome {
	switch o {
	case pluginv1.Outcome_OUTCOME_OK:
		return OutcomeOK
	case pluginv1.Outcome_OUTCOME_PERMANENT:
		return OutcomePermanent
	}
	// An unspecified outcome is a plugin bug; retrying is the safe reading.
	return OutcomeRetryable
}

func lookupToProto(s LookupStatus) pluginv1.LookupStatus {
	switch s {
	case LookupFound:
		return pluginv1.LookupStatus_LOOKUP_STATUS_FOUND
	case LookupNotFound:
		return pluginv1.LookupStatus_LOOKUP_STATUS_NOT_FOUND
	}
	return pluginv1.LookupStatus_LOOKUP_STATUS_UNKNOWN
}

func lookupFromProto(s pluginv1.LookupStatus) LookupStatus {
	switch s {
	case pluginv1.LookupStatus_LOOKUP_STATUS_FOUND:
		return LookupFound
	case pluginv1.LookupStatus_LOOKUP_STATUS_NOT_FOUND:
		return LookupNotFound
	}
	return LookupUnknown
}

func tsTo(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tsFrom(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// --- destination, plugin side ------------------------------------------------

type destinationServer struct {
	pluginv1.UnimplementedDestinationServer
	impl Destination
}

func (s *destinationServer) Configure(ctx context.Context, in *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	cfg, err := decodeConfig(in.GetConfigJson())
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := s.impl.Configure(ctx, ConfigureRequest{Name: in.GetName(), Config: cfg})
	if err != nil {
		return nil, toStatus(err)
	}
	return configureToProto(res), nil
}

func (s *destinationServer) Deliver(ctx context.Context, in *pluginv1.DeliverRequest) (*pluginv1.DeliverResponse, error) {
	res, err := s.impl.Deliver(ctx, DeliverRequest{
		IdempotencyKey: in.GetIdempotencyKey(), Action: in.GetAction(), OrderingKey: in.GetOrderingKey(),
		CorrelationID: in.GetCorrelationId(), Attempt: int(in.GetAttempt()), Document: in.GetDocumentJson(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pluginv1.DeliverResponse{Outcome: outcomeToProto(res.Outcome), ExternalRef: res.ExternalRef, Message: res.Message, Uncertain: res.Uncertain}
	if res.RetryAfter > 0 {
		out.RetryAfter = durationpb.New(res.RetryAfter)
	}
	return out, nil
}

func (s *destinationServer) Lookup(ctx context.Context, in *pluginv1.LookupRequest) (*pluginv1.LookupResponse, error) {
	res, err := s.impl.Lookup(ctx, LookupRequest{IdempotencyKey: in.GetIdempotencyKey(), Action: in.GetAction(), Document: in.GetDocumentJson()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.LookupResponse{Status: lookupToProto(res.Status), ExternalRef: res.ExternalRef, Message: res.Message}, nil
}

func (s *destinationServer) List(ctx context.Context, in *pluginv1.ListRequest) (*pluginv1.ListResponse, error) {
	res, err := s.impl.List(ctx, ListRequest{Since: tsFrom(in.GetSince()), Action: in.GetAction(), Limit: int(in.GetLimit()), PageToken: in.GetPageToken()})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pluginv1.ListResponse{NextPageToken: res.NextPageToken}
	for _, d := range res.Documents {
		out.Documents = append(out.Documents, &pluginv1.Document{IdempotencyKey: d.IdempotencyKey, Action: d.Action,
			ExternalRef: d.ExternalRef, CreatedAt: tsTo(d.CreatedAt), DocumentJson: d.Document})
	}
	return out, nil
}

func (s *destinationServer) Changes(ctx context.Context, in *pluginv1.ChangesRequest) (*pluginv1.ChangesResponse, error) {
	res, err := s.impl.Changes(ctx, ChangesRequest{Cursor: in.GetCursor(), Limit: int(in.GetLimit())})
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pluginv1.ChangesResponse{NextCursor: res.NextCursor, More: res.More}
	for _, c := range res.Changes {
		out.Changes = append(out.Changes, &pluginv1.Change{Id: c.ID, Kind: c.Kind, ExternalRef: c.ExternalRef,
			IdempotencyKey: c.IdempotencyKey, ChangedAt: tsTo(c.ChangedAt), DocumentJson: c.Document})
	}
	return out, nil
}

func (s *destinationServer) Health(ctx context.Context, _ *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	res, err := s.impl.Health(ctx, HealthRequest{})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.HealthResponse{Healthy: res.Healthy, Message: res.Message}, nil
}

// --- destination, host side --------------------------------------------------

type destinationClient struct{ c pluginv1.DestinationClient }

func (c *destinationClient) Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error) {
	raw, err := encodeConfig(req.Config)
	if err != nil {
		return ConfigureResponse{}, fmt.Errorf("config: %w", err)
	}
	res, err := c.c.Configure(ctx, &pluginv1.ConfigureRequest{Name: req.Name, ConfigJson: raw})
	if err != nil {
		return ConfigureResponse{}, fromStatus(err)
	}
	return configureFromProto(res), nil
}

func (c *destinationClient) Deliver(ctx context.Context, req DeliverRequest) (DeliverResponse, error) {
	res, err := c.c.Deliver(ctx, &pluginv1.DeliverRequest{IdempotencyKey: req.IdempotencyKey, Action: req.Action,
		OrderingKey: req.OrderingKey, CorrelationId: req.CorrelationID, Attempt: uint32(max(req.Attempt, 0)), DocumentJson: req.Document})
	if err != nil {
		return DeliverResponse{}, fromStatus(err)
	}
	out := DeliverResponse{Outcome: outcomeFromProto(res.GetOutcome()), ExternalRef: res.GetExternalRef(),
		Message: res.GetMessage(), Uncertain: res.GetUncertain()}
	if res.GetRetryAfter() != nil {
		out.RetryAfter = res.GetRetryAfter().AsDuration()
	}
	return out, nil
}

func (c *destinationClient) Lookup(ctx context.Context, req LookupRequest) (LookupResponse, error) {
	res, err := c.c.Lookup(ctx, &pluginv1.LookupRequest{IdempotencyKey: req.IdempotencyKey, Action: req.Action, DocumentJson: req.Document})
	if err != nil {
		return LookupResponse{}, fromStatus(err)
	}
	return LookupResponse{Status: lookupFromProto(res.GetStatus()), ExternalRef: res.GetExternalRef(), Message: res.GetMessage()}, nil
}

func (c *destinationClient) List(ctx context.Context, req ListRequest) (ListResponse, error) {
	res, err := c.c.List(ctx, &pluginv1.ListRequest{Since: tsTo(req.Since), Action: req.Action, Limit: uint32(max(req.Limit, 0)), PageToken: req.PageToken})
	if err != nil {
		return ListResponse{}, fromStatus(err)
	}
	out := ListResponse{NextPageToken: res.GetNextPageToken()}
	for _, d := range res.GetDocuments() {
		out.Documents = append(out.Documents, Document{IdempotencyKey: d.GetIdempotencyKey(), Action: d.GetAction(),
			ExternalRef: d.GetExternalRef(), CreatedAt: tsFrom(d.GetCreatedAt()), Document: d.GetDocumentJson()})
	}
	return out, nil
}

func (c *destinationClient) Changes(ctx context.Context, req ChangesRequest) (ChangesResponse, error) {
	res, err := c.c.Changes(ctx, &pluginv1.ChangesRequest{Cursor: req.Cursor, Limit: uint32(max(req.Limit, 0))})
	if err != nil {
		return ChangesResponse{}, fromStatus(err)
	}
	out := ChangesResponse{NextCursor: res.GetNextCursor(), More: res.GetMore()}
	for _, ch := range res.GetChanges() {
		out.Changes = append(out.Changes, Change{ID: ch.GetId(), Kind: ch.GetKind(), ExternalRef: ch.GetExternalRef(),
			IdempotencyKey: ch.GetIdempotencyKey(), ChangedAt: tsFrom(ch.GetChangedAt()), Document: ch.GetDocumentJson()})
	}
	return out, nil
}

func (c *destinationClient) Health(ctx context.Context, _ HealthRequest) (HealthResponse, error) {
	res, err := c.c.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil {
		return HealthResponse{}, fromStatus(err)
	}
	return HealthResponse{Healthy: res.GetHealthy(), Message: res.GetMessage()}, nil
}

// --- source, plugin side -----------------------------------------------------

type sourceServer struct {
	pluginv1.UnimplementedSourceServer
	impl Source
	// mu orders acks against the start of a new Read: once a new stream
	// is current, acks of the old one are dropped, and an ack being
	// applied finishes before the new Read begins.
	mu     sync.Mutex
	stream uint64
}

func (s *sourceServer) Configure(ctx context.Context, in *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	cfg, err := decodeConfig(in.GetConfigJson())
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := s.impl.Configure(ctx, ConfigureRequest{Name: in.GetName(), Config: cfg})
	if err != nil {
		return nil, toStatus(err)
	}
	return configureToProto(res), nil
}

func (s *sourceServer) Read(in *pluginv1.ReadRequest, stream grpc.ServerStreamingServer[pluginv1.RecordBatch]) error {
	s.mu.Lock()
	s.stream = in.GetStream()
	s.mu.Unlock()
	err := s.impl.Read(stream.Context(), ReadRequest{}, func(recs []Record) error {
		if len(recs) == 0 {
			return nil
		}
		b := &pluginv1.RecordBatch{Records: make([]*pluginv1.Record, len(recs))}
		for i, r := range recs {
			b.Records[i] = &pluginv1.Record{Seq: r.Seq, Id: r.ID, Event: r.Event}
		}
		return stream.Send(b)
	})
	if err != nil && stream.Context().Err() != nil {
		// The host ended the stream; that is how every Read ends.
		return nil
	}
	return toStatus(err)
}

func (s *sourceServer) Ack(ctx context.Context, in *pluginv1.AckRequest) (*pluginv1.AckResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.GetStream() != s.stream {
		return &pluginv1.AckResponse{}, nil
	}
	if _, err := s.impl.Ack(ctx, AckRequest{Through: in.GetThrough()}); err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.AckResponse{}, nil
}

func (s *sourceServer) Health(ctx context.Context, _ *pluginv1.HealthRequest) (*pluginv1.HealthResponse, error) {
	res, err := s.impl.Health(ctx, HealthRequest{})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.HealthResponse{Healthy: res.Healthy, Message: res.Message}, nil
}

// --- source, host side -------------------------------------------------------

type sourceClient struct{ c pluginv1.SourceClient }

// sendError marks an error of the host's own send callback, so Read's
// caller gets it back instead of a plugin restart.
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

func (c *sourceClient) Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error) {
	raw, err := encodeConfig(req.Config)
	if err != nil {
		return ConfigureResponse{}, fmt.Errorf("config: %w", err)
	}
	res, err := c.c.Configure(ctx, &pluginv1.ConfigureRequest{Name: req.Name, ConfigJson: raw})
	if err != nil {
		return ConfigureResponse{}, fromStatus(err)
	}
	return configureFromProto(res), nil
}

func (c *sourceClient) read(ctx context.Context, stream uint64, send func([]Record) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.c.Read(ctx, &pluginv1.ReadRequest{Stream: stream})
	if err != nil {
		return fromStatus(err)
	}
	for {
		b, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fromStatus(err)
		}
		recs := make([]Record, len(b.GetRecords()))
		for i, r := range b.GetRecords() {
			recs[i] = Record{Seq: r.GetSeq(), ID: r.GetId(), Event: r.GetEvent()}
		}
		if err := send(recs); err != nil {
			return &sendError{err: err}
		}
	}
}

func (c *sourceClient) ack(ctx context.Context, stream, through uint64) error {
	if _, err := c.c.Ack(ctx, &pluginv1.AckRequest{Stream: stream, Through: through}); err != nil {
		return fromStatus(err)
	}
	return nil
}

func (c *sourceClient) Health(ctx context.Context, _ HealthRequest) (HealthResponse, error) {
	res, err := c.c.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil {
		return HealthResponse{}, fromStatus(err)
	}
	return HealthResponse{Healthy: res.GetHealthy(), Message: res.GetMessage()}, nil
}

// RegisterDestinationServer serves impl on s with the plugin protocol.
// Plugin binaries use ServeDestination; this is for harnesses (sdktest)
// and hosts that embed a connector.
func RegisterDestinationServer(s grpc.ServiceRegistrar, impl Destination) {
	pluginv1.RegisterDestinationServer(s, &destinationServer{impl: impl})
}

// NewDestinationClient speaks the plugin protocol over cc. It does no
// scrubbing, metrics or restarts (OpenDestination does).
func NewDestinationClient(cc grpc.ClientConnInterface) Destination {
	return &destinationClient{c: pluginv1.NewDestinationClient(cc)}
}

// RegisterSourceServer serves impl on s with the plugin protocol.
func RegisterSourceServer(s grpc.ServiceRegistrar, impl Source) {
	pluginv1.RegisterSourceServer(s, &sourceServer{impl: impl})
}

// NewSourceClient speaks the plugin protocol over cc. Each Read is a new
// stream; Ack applies to the latest one.
func NewSourceClient(cc grpc.ClientConnInterface) Source {
	return &sourceConn{c: &sourceClient{c: pluginv1.NewSourceClient(cc)}}
}

type sourceConn struct {
	c      *sourceClient
	mu     sync.Mutex
	stream uint64
}

func (s *sourceConn) Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error) {
	return s.c.Configure(ctx, req)
}

func (s *sourceConn) Read(ctx context.Context, _ ReadRequest, send func([]Record) error) error {
	s.mu.Lock()
	s.stream++
	stream := s.stream
	s.mu.Unlock()
	err := s.c.read(ctx, stream, send)
	var se *sendError
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

func (s *sourceConn) Ack(ctx context.Context, req AckRequest) (AckResponse, error) {
	s.mu.Lock()
	stream := s.stream
	s.mu.Unlock()
	return AckResponse{}, s.c.ack(ctx, stream, req.Through)
}

func (s *sourceConn) Health(ctx context.Context, req HealthRequest) (HealthResponse, error) {
	return s.c.Health(ctx, req)
}
