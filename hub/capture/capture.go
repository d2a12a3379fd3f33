package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/failpoint"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// FailpointAfterJournal sits between the journal commit of a page's events
// and the store of the cursor after that page.
const FailpointAfterJournal = "hub/capture/after-journal"

// maxPagesPerPoll bounds one poll, so a backlog cannot starve shutdown;
// the next poll continues from the stored cursor.
const maxPagesPerPoll = 100

// Source is what capture reads: a connector with the changes capability
// (*sdk.DestinationHost in the hub).
type Source interface {
	Changes(ctx context.Context, req sdk.ChangesRequest) (sdk.ChangesResponse, error)
}

// Options configure one destination's poller.
type Options struct {
	Destination string
	Config      Config
	Source      Source
	Journal     journal.Journal
	Cursors     *Cursors
	// Metrics may be nil.
	Metrics *Metrics
	Logger  *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Poller polls one destination's changes on a schedule.
type Poller struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex // one poll at a time
	cancel  context.CancelFunc
	done    chan struct{}
	stopped sync.Once

	statusMu sync.Mutex
	status   Status
}

// Status is a poller's state for status pages.
type Status struct {
	Destination string    `json:"destination"`
	LastPoll    time.Time `json:"last_poll"`
	LastError   string    `json:"last_error,omitempty"`
	Changes     uint64    `json:"changes"`
}

// New checks o and returns a poller, not yet started.
func New(o Options) (*Poller, error) {
	var errs []error
	if o.Destination == "" {
		errs = append(errs, errors.New("capture: destination is required"))
	}
	if o.Source == nil || o.Journal == nil || o.Cursors == nil {
		errs = append(errs, errors.New("capture: source, journal and cursors are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	o.Config = o.Config.WithDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Poller{o: o, log: o.Logger, status: Status{Destination: o.Destination}}, nil
}

// Start polls once right away, then every poll interval, until Shutdown.
func (p *Poller) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel, p.done = cancel, make(chan struct{})
	go p.run(ctx)
	p.log.Info("change capture started", "destination", p.o.Destination, "poll_interval", p.o.Config.PollInterval)
	return nil
}

func (p *Poller) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Errors are counted and logged in Poll; the next tick retries.
		_, _ = p.Poll(ctx)
		t.Reset(p.o.Config.PollInterval)
	}
}

// Shutdown stops polling; a poll in flight ends with ctx at the latest.
// Idempotent, safe without Start.
func (p *Poller) Shutdown(ctx context.Context) error {
	var err error
	p.stopped.Do(func() {
		if p.cancel == nil {
			return
		}
		p.cancel()
		select {
		case <-p.done:
		case <-ctx.Done():
			err = fmt.Errorf("capture %s: shutdown: %w", p.o.Destination, ctx.Err())
		}
		p.log.Info("change capture stopped", "destination", p.o.Destination)
	})
	return err
}

// Status reports the poller's state.
func (p *Poller) Status() Status {
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	return p.status
}

// Result of one poll.
type Result struct {
	Changes   int // read from the connector
	Journaled int // events newly journaled
	Duplicate int // events the journal already held
	Pages     int
}

// Poll reads every change after the stored cursor, page by page: each
// page's events are committed to the journal, and only then is the cursor
// after the page stored.
func (p *Poller) Poll(ctx context.Context) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	dest := p.o.Destination
	res, err := p.poll(ctx)
	if m := p.o.Metrics; m != nil {
		m.polls.WithLabelValues(dest).Inc()
		if err == nil {
			m.lastPoll.WithLabelValues(dest).Set(float64(p.o.Now().UnixNano()) / 1e9)
		}
	}
	p.statusMu.Lock()
	p.status.Changes += uint64(res.Changes)
	switch {
	case err == nil:
		p.status.LastPoll, p.status.LastError = p.o.Now(), ""
	case ctx.Err() == nil:
		p.status.LastError = err.Error()
	}
	// A poll cut short by the shutdown is not a failure: the next start
	// reads on from the stored cursor.
	p.statusMu.Unlock()
	if err != nil && ctx.Err() == nil {
		p.log.Warn("change capture poll failed", "destination", dest, "error", err)
	}
	return res, err
}

func (p *Poller) countError(kind string) {
	if p.o.Metrics != nil {
		p.o.Metrics.errors.WithLabelValues(p.o.Destination, kind).Inc()
	}
}

func (p *Poller) countChanges(outcome string, n int) {
	if p.o.Metrics != nil && n > 0 {
		p.o.Metrics.changes.WithLabelValues(p.o.Destination, outcome).Add(float64(n))
	}
}

func (p *Poller) poll(ctx context.Context) (Result, error) {
	var res Result
	dest := p.o.Destination
	cursor, err := p.o.Cursors.Get(dest)
	if err != nil {
		p.countError("cursor")
		return res, fmt.Errorf("read cursor: %w", err)
	}
	for res.Pages < maxPagesPerPoll {
		page, err := p.o.Source.Changes(ctx, sdk.ChangesRequest{Cursor: cursor, Limit: p.o.Config.PageSize})
		if err != nil {
			p.countError("changes")
			return res, fmt.Errorf("changes of %s: %w", dest, err)
		}
		res.Pages++
		res.Changes += len(page.Changes)
		b := &journal.Batch{Producer: Producer(dest)}
		now := p.o.Now()
		own, skipped := 0, 0
		for _, c := range page.Changes {
			if c.IdempotencyKey != "" {
				// plantsync created this document: capturing it would
				// loop a workflow back into itself.
				own++
				continue
			}
			evs, err := Events(dest, p.o.Config.Plant, c, now)
			if err != nil {
				p.countError("document")
				skipped++
				p.log.Error("change not captured", "destination", dest, "change", c.ID, "error", err)
				continue
			}
			for _, ev := range evs {
				raw, err := proto.Marshal(ev)
				if err != nil {
					return res, fmt.Errorf("encode event of change %s: %w", c.ID, err)
				}
				// The pipeline takes the decoded event from here on.
				b.Events = append(b.Events, journal.Incoming{ID: ev.GetId(), Raw: raw, Decoded: ev})
			}
		}
		p.countChanges("own", own)
		p.countChanges("skipped", skipped)
		if len(b.Events) > 0 {
			out, err := p.o.Journal.Commit(ctx, b)
			if err != nil {
				p.countError("journal")
				return res, fmt.Errorf("journal changes of %s: %w", dest, err)
			}
			res.Journaled += out.Journaled
			res.Duplicate += out.Duplicates
			if m := p.o.Metrics; m != nil {
				m.events.WithLabelValues(dest, "journaled").Add(float64(out.Journaled))
				m.events.WithLabelValues(dest, "duplicate").Add(float64(out.Duplicates))
				m.events.WithLabelValues(dest, "rejected").Add(float64(out.Rejected))
			}
			// A crash here repeats the page on the next poll.
			failpoint.Inject(FailpointAfterJournal)
		}
		p.countChanges("captured", len(page.Changes)-own-skipped)
		if page.NextCursor != cursor {
			if err := p.o.Cursors.Put(dest, page.NextCursor); err != nil {
				p.countError("cursor")
				return res, fmt.Errorf("store cursor of %s: %w", dest, err)
			}
			cursor = page.NextCursor
		}
		if !page.More {
			break
		}
	}
	return res, nil
}
