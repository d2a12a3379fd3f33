// Package generator is a synthetic source for load tests and benchmarks
// (`type: generator`): it produces production.completion events of a fixed
// payload size as fast as the buffer commits them, or at a fixed rate. It is
// how `make bench` measures the agent without a broker's ceiling.
package generator

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Config of a source of `type: generator`.
type Config struct {
	source.Common `yaml:",inline"`
	// Rate in events per second; 0 means as fast as the buffer commits.
	Rate int `yaml:"rate"`
	// Count stops after this many events; 0 runs until shutdown.
	Count int64 `yaml:"count"`
	// PayloadBytes is the target encoded event size.
	PayloadBytes int `yaml:"payload_bytes"`
	// Batch is the number of events per append.
	Batch int `yaml:"batch"`
	// Inflight bounds appends awaiting commit.
	Inflight int `yaml:"inflight"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() *Config {
	return &Config{PayloadBytes: 200, Batch: 500, Inflight: 16}
}

// Validate implements source.Config.
func (c *Config) Validate(prefix string) []error {
	var errs []error
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("%s.rate: %d; want 0 (unlimited) or events per second", prefix, c.Rate))
	}
	if c.PayloadBytes < 64 || c.PayloadBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("%s.payload_bytes: %d; want 64 to 1048576, e.g. 200", prefix, c.PayloadBytes))
	}
	if c.Batch < 1 || c.Batch > 10000 {
		errs = append(errs, fmt.Errorf("%s.batch: %d; want 1 to 10000, e.g. 500", prefix, c.Batch))
	}
	if c.Inflight < 1 || c.Inflight > 1024 {
		errs = append(errs, fmt.Errorf("%s.inflight: %d; want 1 to 1024, e.g. 16", prefix, c.Inflight))
	}
	return errs
}

// Factory registers the type with the agent.
var Factory = source.Factory{
	Type:             "generator",
	NewDefaultConfig: func() source.Config { return NewDefaultConfig() },
	New: func(cfg source.Config, env source.Env) (source.Source, error) {
		return &Source{cfg: cfg.(*Config), env: env}, nil
	},
}

// Source generates events.
type Source struct {
	cfg       *Config
	env       source.Env
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
	committed atomic.Int64
	lastErr   atomic.Value
}

// Committed is how many generated events the buffer has committed.
func (s *Source) Committed() int64 { return s.committed.Load() }

// Start implements source.Source.
func (s *Source) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go s.run(ctx)
	return nil
}

func (s *Source) run(ctx context.Context) {
	defer s.wg.Done()
	log := s.env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sem := make(chan struct{}, s.cfg.Inflight)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	pad := s.padding()
	var n int64
	start := time.Now()
	for ctx.Err() == nil && (s.cfg.Count == 0 || n < s.cfg.Count) {
		size := int64(s.cfg.Batch)
		if s.cfg.Count > 0 {
			size = min(size, s.cfg.Count-n)
		}
		if s.cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(n) / float64(s.cfg.Rate) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
		}
		events := make([]*pb.Event, size)
		now := timestamppb.Now()
		for i := range events {
			events[i] = s.event(n+int64(i), now, pad)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		inflight.Add(1)
		err := s.env.Sink.AppendAsync(ctx, events, func(first, last uint64, err error) {
			defer inflight.Done()
			<-sem
			if err != nil {
				s.lastErr.Store(err.Error())
				return
			}
			s.committed.Add(int64(len(events)))
		})
		if err != nil {
			inflight.Done()
			<-sem
			if ctx.Err() == nil {
				log.Error("generator append failed", "error", err)
			}
			return
		}
		n += size
	}
	log.Info("generator finished", "events", n)
}

func (s *Source) padding() string {
	probe := s.event(0, timestamppb.Now(), "")
	need := s.cfg.PayloadBytes - proto.Size(probe) - 8
	if need < 0 {
		need = 0
	}
	return strings.Repeat("x", need)
}

func (s *Source) event(i int64, now *timestamppb.Timestamp, pad string) *pb.Event {
	id, _ := uuid.NewV7()
	ev := &pb.Event{
		Id:            id.String(),
		Plant:         s.env.Plant,
		Source:        &pb.Source{Name: s.env.Name, Kind: "generator", Uri: "generator:" + s.env.Name},
		Type:          "production.completion",
		OccurredAt:    now,
		ObservedAt:    now,
		SchemaVersion: 1,
		Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
			Order: "PO-" + strconv.FormatInt(1000+i%100, 10), Item: "P-4711", WorkCenter: "L1-M1",
			Good: &pb.Quantity{Value: "1", Unit: "EA"},
		}},
	}
	if pad != "" {
		ev.Attributes = map[string]string{"pad": pad}
	}
	return ev
}

// Shutdown implements source.Source.
func (s *Source) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Health implements source.Source.
func (s *Source) Health() source.Health {
	h := source.Health{State: source.StateRunning, Connected: true}
	if v, ok := s.lastErr.Load().(string); ok {
		h.LastError = v
	}
	return h
}
