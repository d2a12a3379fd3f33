package opcua

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// pump moves mapped events to the buffer without ever blocking the OPC UA
// side: a server cannot be told to wait. While the buffer holds appends
// (block policy, Stats().Blocked) the pump appends nothing and keeps only
// the latest value per node, counting the values it supersedes; once the
// buffer accepts again it writes what it kept.
type pump struct {
	sink     source.Sink
	name     string
	log      *slog.Logger
	m        *metrics
	maxQueue int
	batch    int
	inflight chan struct{}

	mu      sync.Mutex
	queue   []*pendingEvent
	byKey   map[string]*pendingEvent // latest queued value per node
	wake    chan struct{}
	blocked atomic.Bool
	dropped uint64

	// appended counts events the buffer committed; tests and benchmarks
	// read it.
	appended atomic.Uint64
	wg       sync.WaitGroup
}

type pendingEvent struct {
	key   string // "" for events that must never be conflated (alarms)
	ev    *pb.Event
	state *buffer.StateWrite
}

func newPump(sink source.Sink, name string, maxQueue int, log *slog.Logger, m *metrics) *pump {
	return &pump{
		sink: sink, name: name, log: log, m: m, maxQueue: maxQueue,
		batch:    2000,
		inflight: make(chan struct{}, 8),
		byKey:    map[string]*pendingEvent{},
		wake:     make(chan struct{}, 1),
	}
}

// add queues ev. Under a blocked buffer a queued value of the same node is
// replaced (conflation); otherwise every value is kept in order.
func (p *pump) add(key string, ev *pb.Event, state *buffer.StateWrite) {
	p.mu.Lock()
	if key != "" {
		if old := p.byKey[key]; old != nil && p.blocked.Load() {
			old.ev, old.state = ev, mergeState(old.state, state)
			p.mu.Unlock()
			p.m.superseded.Inc()
			return
		}
	}
	pe := &pendingEvent{key: key, ev: ev, state: state}
	p.queue = append(p.queue, pe)
	if key != "" {
		p.byKey[key] = pe
	}
	overflow := len(p.queue) > p.maxQueue
	if overflow {
		// Nothing disappears silently: the drop is counted and logged.
		old := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		if old.key != "" && p.byKey[old.key] == old {
			delete(p.byKey, old.key)
		}
		p.dropped++
	}
	p.mu.Unlock()
	if overflow {
		p.m.errors.WithLabelValues("overflow").Inc()
		if d := p.droppedCount(); d == 1 || d%10000 == 0 {
			p.log.Warn("values dropped: more waiting for the buffer than max_pending allows", "dropped_total", d, "max_pending", p.maxQueue)
		}
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// mergeState keeps the newest state write of a node; a conflated value
// must still advance the node's back-fill mark.
func mergeState(old, new *buffer.StateWrite) *buffer.StateWrite {
	if new != nil {
		return new
	}
	return old
}

// take removes up to n events from the head.
func (p *pump) take(n int) ([]*pb.Event, []buffer.StateWrite) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil, nil
	}
	n = min(n, len(p.queue))
	events := make([]*pb.Event, 0, n)
	var states []buffer.StateWrite
	var stateIdx map[string]int
	for _, pe := range p.queue[:n] {
		events = append(events, pe.ev)
		if pe.key != "" && p.byKey[pe.key] == pe {
			delete(p.byKey, pe.key)
		}
		if pe.state != nil {
			// One write per key and commit: the last one wins.
			if stateIdx == nil {
				stateIdx = map[string]int{}
			}
			if i, ok := stateIdx[string(pe.state.Key)]; ok {
				states[i] = *pe.state
			} else {
				stateIdx[string(pe.state.Key)] = len(states)
				states = append(states, *pe.state)
			}
		}
	}
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil // let the backing array go after a burst
	}
	return events, states
}

func (p *pump) droppedCount() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

func (p *pump) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

func (p *pump) start(ctx context.Context) {
	p.wg.Add(1)
	go p.run(ctx)
}

// run appends until ctx ends, then flushes what is queued while the buffer
// accepts (bounded by the flush context given to stop).
func (p *pump) run(ctx context.Context) {
	defer p.wg.Done()
	defer p.waitInflight()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		if p.sink.Stats().Blocked {
			if !p.blocked.Swap(true) {
				p.log.Warn("buffer is full (block policy): keeping only the latest value per node until it accepts again")
			}
		} else {
			if p.blocked.Swap(false) {
				p.log.Info("buffer accepts again: writing the latest values")
			}
			if p.flushOnce(ctx) {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-poll.C:
		}
	}
}

// flushOnce appends one batch; it reports whether there was one.
func (p *pump) flushOnce(ctx context.Context) bool {
	select {
	case p.inflight <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	events, states := p.take(p.batch)
	if len(events) == 0 {
		<-p.inflight
		return false
	}
	n := uint64(len(events))
	err := p.sink.AppendWithState(ctx, events, states, func(_, _ uint64, err error) {
		<-p.inflight
		if err != nil {
			p.m.errors.WithLabelValues("buffer").Inc()
			return
		}
		p.appended.Add(n)
		p.m.appended.Add(float64(n))
	})
	if err != nil {
		<-p.inflight
		p.m.errors.WithLabelValues("buffer").Inc()
		if ctx.Err() == nil {
			p.log.Error("append to buffer failed", "events", n, "error", err)
		}
	}
	return true
}

func (p *pump) waitInflight() {
	for i := 0; i < cap(p.inflight); i++ {
		p.inflight <- struct{}{}
	}
	for i := 0; i < cap(p.inflight); i++ {
		<-p.inflight
	}
}

// drain appends what is still queued, while the buffer accepts and ctx
// allows; it is the last step of Shutdown.
func (p *pump) drain(ctx context.Context) int {
	for ctx.Err() == nil && p.pending() > 0 && !p.sink.Stats().Blocked {
		if !p.flushOnce(ctx) {
			break
		}
	}
	done := make(chan struct{})
	go func() { p.waitInflight(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return p.pending()
}
