package opcua

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func endpoint(policy string, mode ua.MessageSecurityMode, tokens ...ua.UserTokenType) *ua.EndpointDescription {
	ep := &ua.EndpointDescription{SecurityPolicyURI: ua.SecurityPolicyURIPrefix + policy, SecurityMode: mode}
	for _, t := range tokens {
		ep.UserIdentityTokens = append(ep.UserIdentityTokens, &ua.UserTokenPolicy{TokenType: t})
	}
	return ep
}

func TestChooseEndpoint(t *testing.T) {
	anon, user := ua.UserTokenTypeAnonymous, ua.UserTokenTypeUserName
	eps := []*ua.EndpointDescription{
		endpoint("None", ua.MessageSecurityModeNone, anon),
		endpoint("Basic128Rsa15", ua.MessageSecurityModeSignAndEncrypt, anon, user),
		endpoint("Basic256Sha256", ua.MessageSecurityModeSign, anon, user),
		endpoint("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt, anon, user),
		endpoint("Aes128_Sha256_RsaOaep", ua.MessageSecurityModeSign, anon),
	}
	for _, c := range []struct {
		sec  SecurityConfig
		auth string
		want string
	}{
		{SecurityConfig{PolicyAuto, ModeAuto}, AuthAnonymous, "Basic256Sha256/SignAndEncrypt"},
		{SecurityConfig{PolicyAuto, ModeSign}, AuthAnonymous, "Aes128_Sha256_RsaOaep/Sign"},
		{SecurityConfig{PolicyNone, ModeAuto}, AuthAnonymous, "None/None"},
		{SecurityConfig{PolicyAuto, ModeAuto}, AuthUsername, "Basic256Sha256/SignAndEncrypt"},
		{SecurityConfig{PolicyAes128Sha256RsaOaep, ModeAuto}, AuthUsername, ""},
		{SecurityConfig{PolicyAes256Sha256RsaPss, ModeAuto}, AuthAnonymous, ""},
	} {
		ep, err := chooseEndpoint(eps, c.sec, c.auth)
		got := ""
		if err == nil {
			got = strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix) + "/" + modeName(ep.SecurityMode)
		} else if !errors.Is(err, ErrNoEndpoint) || !strings.Contains(err.Error(), "the server offers Aes128_Sha256_RsaOaep/Sign, Basic128Rsa15/SignAndEncrypt") {
			t.Errorf("%+v %s: error %v", c.sec, c.auth, err)
		}
		if got != c.want {
			t.Errorf("%+v %s: chose %q, want %q", c.sec, c.auth, got, c.want)
		}
	}
}

func TestBackoffBoundsRefusedAttempts(t *testing.T) {
	b := &backoff{initial: 100 * time.Millisecond, max: 2 * time.Second, refused: 15 * time.Second}
	var total time.Duration
	for i := 0; i < 8; i++ {
		d := b.next(false)
		if d > time.Duration(float64(b.max)*1.2) || d < 80*time.Millisecond {
			t.Fatalf("attempt %d: %s out of bounds", i, d)
		}
		total += d
	}
	if total < 4*time.Second {
		t.Fatalf("no exponential growth: %s over 8 attempts", total)
	}
	b.reset()
	if d := b.next(false); d > 120*time.Millisecond {
		t.Fatalf("reset did not restart at initial: %s", d)
	}
	// A full PLC (BadTooManySessions) sees at most 4 attempts a minute.
	var minute time.Duration
	n := 0
	for minute < time.Minute {
		minute += b.next(true)
		n++
	}
	if n > 5 {
		t.Fatalf("%d refused attempts in a minute", n)
	}
	for _, err := range []error{ua.StatusBadTooManySessions, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), &UntrustedError{}, ua.StatusBadCertificateUntrusted} {
		if !refusedErr(err) {
			t.Errorf("%v not classed as refused", err)
		}
	}
	if refusedErr(context.DeadlineExceeded) {
		t.Error("a timeout is not a refusal")
	}
}

// The pump keeps every value in order while the buffer accepts, and only
// the latest per node while it is blocked; alarms are never conflated.
func TestPumpConflation(t *testing.T) {
	sink := &memSink{}
	sink.block.Store(true)
	src := newTestSourceWithSink(t, sink)
	p := src.pump
	ctx, cancel := context.WithCancel(context.Background())
	p.start(ctx)
	defer func() { cancel(); p.wg.Wait() }()
	eventually(t, time.Second, "blocked seen", func() bool { return p.blocked.Load() })
	for i := 0; i < 5; i++ {
		for _, n := range []string{"a", "b"} {
			p.add(n, &pb.Event{Id: fmt.Sprintf("%s%d", n, i)}, nil)
		}
		p.add("", &pb.Event{Id: fmt.Sprintf("alarm%d", i)}, nil)
	}
	if got := value(t, src.m.superseded); got != 8 {
		t.Fatalf("superseded = %v, want 8", got)
	}
	sink.block.Store(false)
	eventually(t, 2*time.Second, "flushed", func() bool { return len(sink.all()) == 7 })
	var ids []string
	for _, ev := range sink.all() {
		ids = append(ids, ev.GetId())
	}
	if got := strings.Join(ids, ","); got != "a4,b4,alarm0,alarm1,alarm2,alarm3,alarm4" {
		t.Fatalf("written after the block: %s", got)
	}
	for i := 0; i < 3; i++ {
		p.add("a", &pb.Event{Id: fmt.Sprintf("x%d", i)}, nil)
	}
	eventually(t, 2*time.Second, "all kept while accepting", func() bool { return len(sink.all()) == 10 })
}

func newTestSourceWithSink(t *testing.T, sink *memSink) *Source {
	t.Helper()
	cfg := baseConfig("opc.tcp://127.0.0.1:1")
	cfg.Nodes = []NodeConfig{{NodeID: "ns=2;s=A"}}
	src, err := New(cfg, source.Env{Name: "line1", Plant: "DE-01", Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// historyFixture is a source with a running pump and one historized node;
// at(s) is a value s seconds into the day, with that value.
func historyFixture(t *testing.T) (*Source, *memSink, *item, func(int) *ua.DataValue) {
	t.Helper()
	sink := &memSink{}
	src := newTestSourceWithSink(t, sink)
	it := testItem(t, "ns=2;s=A", "observation", nil, nil, nil)
	it.historized.Store(true)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) *ua.DataValue { return dv(int32(s), 0, base.Add(time.Duration(s)*time.Second), base) }
	ctx, cancel := context.WithCancel(context.Background())
	src.pump.start(ctx)
	t.Cleanup(func() { cancel(); src.pump.wg.Wait() })
	return src, sink, it, at
}

// cutAndBackfill plays a cut: values 1..3 delivered in session 1; after
// the reconnect (session 2) 7 (the initial value; 4..6 changed during the
// cut) and 8 arrive live, then late (values of session 1 processed only
// now), then history returns 3..8. It waits for want events and returns
// the values delivered, in order.
func cutAndBackfill(t *testing.T, src *Source, sink *memSink, it *item, at func(int) *ua.DataValue, want int, late ...int) []int64 {
	t.Helper()
	for s := 1; s <= 3; s++ {
		src.handleValue(it, at(s), now, 1)
	}
	mark := *it.mark.Load()
	src.handleValue(it, at(7), now, 2)
	src.handleValue(it, at(8), now, 2)
	for _, s := range late {
		src.handleValue(it, at(s), now, 1)
	}
	src.handleHistory(historyBatch{it: it, since: mark, epoch: 2, values: []*ua.DataValue{at(3), at(4), at(5), at(6), at(7), at(8)}})
	eventually(t, time.Second, "values written", func() bool { return len(sink.all()) >= want })
	time.Sleep(50 * time.Millisecond) // nothing more may come
	var got []int64
	for _, ev := range sink.all() {
		got = append(got, ev.GetObservation().GetIntValue())
	}
	return got
}

// Back-filled values: those before the mark and those the live
// subscription already delivered are dropped; the gap is delivered once,
// and the mark (committed with the values) advances.
func TestHistoryFilter(t *testing.T) {
	src, sink, it, at := historyFixture(t)
	got := cutAndBackfill(t, src, sink, it, at, 8)
	seen := map[string]bool{}
	for _, ev := range sink.all() {
		if seen[ev.GetId()] {
			t.Fatalf("id %s twice", ev.GetId())
		}
		seen[ev.GetId()] = true
	}
	if fmt.Sprint(got) != "[1 2 3 7 8 4 5 6]" {
		t.Fatalf("delivered %v", got)
	}
	if mk := it.mark.Load(); !mk.ts.Equal(at(8).SourceTimestamp) {
		t.Fatalf("mark = %v", mk.ts)
	}
	var state []byte
	must(t, sink.ReadState("line1", func(k, v []byte) error {
		if string(k) == "ns=2;s=A" {
			state = v
		}
		return nil
	}))
	if lv, ok := decodeMark(state); !ok || !lv.ts.Equal(at(8).SourceTimestamp) {
		t.Fatalf("committed mark = %v %v", lv, ok)
	}
	// The same value again (a redelivered initial value) is dropped.
	src.handleValue(it, at(8), now, 3)
	time.Sleep(50 * time.Millisecond)
	if n := len(sink.all()); n != 8 {
		t.Fatalf("%d events after a redelivery", n)
	}
}

// fakeBrowser serves a fixed tree: parent NodeId -> children.
type fakeBrowser map[string][]child

func (f fakeBrowser) Browse(_ context.Context, req *ua.BrowseRequest) (*ua.BrowseResponse, error) {
	res := &ua.BrowseResponse{}
	for _, d := range req.NodesToBrowse {
		var refs []*ua.ReferenceDescription
		for _, c := range f[d.NodeID.String()] {
			refs = append(refs, &ua.ReferenceDescription{IsForward: true, NodeID: ua.NewExpandedNodeID(c.id, "", 0),
				BrowseName: &ua.QualifiedName{Name: c.name}, NodeClass: c.class})
		}
		res.Results = append(res.Results, &ua.BrowseResult{References: refs})
	}
	return res, nil
}

func (f fakeBrowser) BrowseNext(context.Context, *ua.BrowseNextRequest) (*ua.BrowseNextResponse, error) {
	return &ua.BrowseNextResponse{}, nil
}

func TestMatchPattern(t *testing.T) {
	obj := func(k, name string) child {
		return child{id: ua.NewStringNodeID(2, k), name: name, class: ua.NodeClassObject}
	}
	vr := func(k, name string) child {
		return child{id: ua.NewStringNodeID(2, k), name: name, class: ua.NodeClassVariable}
	}
	tree := fakeBrowser{
		"i=84":           {obj("Objects", "Objects")},
		"ns=2;s=Objects": {obj("L1", "Line1"), obj("L2", "Line2")},
		"ns=2;s=L1":      {obj("L1.M1", "Press1"), obj("L1.M2", "Press2"), vr("L1.Speed", "Speed")},
		"ns=2;s=L2":      {obj("L2.A", "Area"), vr("L2.State", "State")},
		"ns=2;s=L2.A":    {obj("L2.A.M9", "Press9")},
		"ns=2;s=L1.M1":   {vr("L1.M1.State", "State"), vr("L1.M1.Count", "Count")},
		"ns=2;s=L1.M2":   {vr("L1.M2.State", "State"), obj("L1.M2.Sub", "State")},
		"ns=2;s=L2.A.M9": {vr("L2.A.M9.State", "State")},
	}
	root := ua.NewNumericNodeID(0, 84)
	for _, c := range []struct {
		pattern string
		want    string
	}{
		{"Objects/Line1/*/State", "Objects/Line1/Press1/State[Press1] Objects/Line1/Press2/State[Press2]"},
		{"Objects/Line?/Press1/*", "Objects/Line1/Press1/State[Line1 State] Objects/Line1/Press1/Count[Line1 Count]"},
		{"Objects/**/State", "Objects/Line2/State[Line2] Objects/Line1/Press1/State[Line1/Press1] Objects/Line1/Press2/State[Line1/Press2] Objects/Line2/Area/Press9/State[Line2/Area/Press9]"},
		{"Objects/Line2/**/Press*/State", "Objects/Line2/Area/Press9/State[Area Press9]"},
		{"Objects/Line3/*", ""},
	} {
		segs, err := parsePattern(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		hits, err := matchPattern(context.Background(), tree, root, segs, 100, 10)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, h := range hits {
			parts = append(parts, h.path+"["+strings.Join(h.caps, " ")+"]")
		}
		if got := strings.Join(parts, " "); got != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.pattern, got, c.want)
		}
	}
	segs, _ := parsePattern("Objects/**/State")
	if _, err := matchPattern(context.Background(), tree, root, segs, 2, 10); !errors.Is(err, ErrTooManyNodes) {
		t.Fatalf("max_nodes not enforced: %v", err)
	}
}

// `plantsync-agent opcua browse` prints what a config needs.
func TestCLIBrowse(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 1)
	var out, errOut bytes.Buffer
	code := RunCLI([]string{"browse", "-endpoint", srv.Endpoint(), "-policy", "None", "-depth", "4"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"PATH", "NODEID", "DATATYPE", "Objects/Plant/L1/M1/Temp", "ns=2;s=L1.M1.Temp", "Double", "read"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("browse output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	code = RunCLI([]string{"browse", "-endpoint", srv.Endpoint(), "-node", "ns=2;s=L1", "-depth", "1", "-policy", "None"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "M1 ") || strings.Contains(out.String(), "Temp") {
		t.Fatalf("browse -node -depth 1: exit %d\n%s", code, out.String())
	}
	// Secure browse of an untrusted server says how to trust it.
	errOut.Reset()
	code = RunCLI([]string{"browse", "-endpoint", srv.Endpoint()}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), Fingerprint(serverIdentity(t).Cert)) {
		t.Fatalf("untrusted browse: exit %d: %s", code, errOut.String())
	}
	if code := RunCLI([]string{"nope"}, &out, &errOut); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if code := RunCLI([]string{"trust", "-endpoint", "http://x"}, &out, &errOut); code != 2 {
		t.Fatalf("bad endpoint exit %d", code)
	}
}

// Servers that send their certificate with its issuers are trusted by
// their own certificate's fingerprint.
func TestTrustChain(t *testing.T) {
	a, b := serverIdentity(t).Cert, newSelfSigned(t)
	chain := append(append([]byte(nil), a...), b...)
	if Fingerprint(chain) != Fingerprint(a) {
		t.Fatal("chain fingerprint is not the leaf's")
	}
	dir := t.TempDir()
	ts := newTrustStore(TrustConfig{Dir: dir}, "")
	if ts.trusted(chain) {
		t.Fatal("trusted before anything was stored")
	}
	if _, err := writeTrusted(dir, chain); err != nil {
		t.Fatal(err)
	}
	if !ts.trusted(chain) || !ts.trusted(a) || ts.trusted(b) {
		t.Fatal("stored chain not trusted by its leaf")
	}
	pinned := newTrustStore(TrustConfig{Fingerprints: []string{Fingerprint(a)}}, "")
	if !pinned.trusted(chain) {
		t.Fatal("pinned leaf does not trust its chain")
	}
}

func newSelfSigned(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.der"), filepath.Join(dir, "k.pem")
	if err := generateIdentity(cert, key, "urn:x"); err != nil {
		t.Fatal(err)
	}
	der, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Back-fill marks committed with the values survive an agent restart: a
// new source reads them from the buffer's state at Start.
func TestBackfillMarksRestoredAtStart(t *testing.T) {
	sink := &memSink{}
	ts := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	ctx := context.Background()
	must(t, sink.AppendWithState(ctx, nil, []buffer.StateWrite{{Source: "line1", Key: []byte("ns=2;s=A"), Value: encodeMark(lastValue{ts: ts, id: "id-1"})}}, func(uint64, uint64, error) {}))
	cfg := baseConfig("opc.tcp://127.0.0.1:1")
	cfg.Nodes = []NodeConfig{{NodeID: "ns=2;s=A"}, {NodeID: "ns=2;s=B"}}
	h := startSource(t, cfg, sink, "")
	items := *h.src.items.Load()
	if mk := items[0].mark.Load(); mk == nil || !mk.ts.Equal(ts) || mk.id != "id-1" {
		t.Fatalf("mark of A = %+v", mk)
	}
	if items[1].mark.Load() != nil {
		t.Fatal("B has a mark it never had")
	}
}

// While a node's back-fill is owed, its mark is not committed: an agent
// restarted before the back-fill succeeded reads the gap from where it
// began. Once the gap is closed, marks are committed again.
func TestMarkNotCommittedWhileGapOpen(t *testing.T) {
	sink := &memSink{}
	cfg := baseConfig("opc.tcp://127.0.0.1:1")
	cfg.Nodes = []NodeConfig{{NodeID: "ns=2;s=A"}}
	h := startSource(t, cfg, sink, "")
	it := (*h.src.items.Load())[0]
	it.historized.Store(true)
	it.gap.Store(h.src.gapSeq.Add(1))
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	deliver := func(sec int) {
		dv := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(uint32(sec)),
			SourceTimestamp: t0.Add(time.Duration(sec) * time.Second)}
		ev, lv := buildValueEvent(it, dv, "DE-01", cfg.Endpoint, t0)
		h.src.deliver(it, ev, lv)
	}
	committed := func() (lastValue, bool) {
		var mk lastValue
		found := false
		_ = sink.ReadState(cfg.Name, func(k, v []byte) error {
			if string(k) == "ns=2;s=A" {
				mk, found = decodeMark(v)
			}
			return nil
		})
		return mk, found
	}
	deliver(1)
	eventually(t, 5*time.Second, "the value delivered", func() bool { return len(sink.find("ns=2;s=A")) == 1 })
	if mk, ok := committed(); ok {
		t.Fatalf("mark %v committed while the gap is open", mk.ts)
	}
	if mk := it.mark.Load(); mk == nil || !mk.ts.Equal(t0.Add(time.Second)) {
		t.Fatalf("in-memory mark %+v, want the delivered value's", mk)
	}
	must(t, h.src.closeGap(context.Background(), it))
	eventually(t, 5*time.Second, "the processor closed the gap", func() bool { return it.gap.Load() == 0 })
	deliver(2)
	eventually(t, 5*time.Second, "the mark committed after the gap closed", func() bool {
		mk, ok := committed()
		return ok && mk.ts.Equal(t0.Add(2*time.Second))
	})
}

// A notification still queued when its session is lost reaches the
// processor tagged with that session's epoch, even once the next session
// has begun; closing the session hands on what was queued.
func TestForwardTagsNotificationsWithTheirSession(t *testing.T) {
	src := newTestSourceWithSink(t, &memSink{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := &session{epoch: src.epoch.Add(1), notifs: make(chan *opcua.PublishNotificationData, 4),
		closed: make(chan struct{}), forwarded: make(chan struct{})}
	first, second := &opcua.PublishNotificationData{SubscriptionID: 1}, &opcua.PublishNotificationData{SubscriptionID: 2}
	old.notifs <- first
	old.notifs <- second
	src.epoch.Add(1) // the next session begins before the processor reads
	go src.forward(ctx, old)
	for _, want := range []*opcua.PublishNotificationData{first, second} {
		select {
		case n := <-src.notifs:
			if n.data != want || n.epoch != old.epoch {
				t.Fatalf("got subscription %d of epoch %d, want %d of epoch %d", n.data.SubscriptionID, n.epoch, want.SubscriptionID, old.epoch)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("notification not forwarded")
		}
	}
	third := &opcua.PublishNotificationData{SubscriptionID: 3}
	old.notifs <- third
	close(old.closed)
	select {
	case n := <-src.notifs:
		if n.data != third || n.epoch != old.epoch {
			t.Fatalf("after close: got %+v", n)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("queued notification not handed on at close")
	}
	select {
	case <-old.forwarded:
	case <-time.After(2 * time.Second):
		t.Fatal("forward did not end after the session closed")
	}
}

// A value of an older session processed after the newer session's first
// live value neither moves where the newer back-fill stops nor makes it
// deliver the newer live values again.
func TestOlderSessionValueDoesNotMoveLiveStart(t *testing.T) {
	src, sink, it, at := historyFixture(t)
	got := cutAndBackfill(t, src, sink, it, at, 9, 5)
	// 5 comes twice (live late, then read back: the same event id, which
	// the hub drops); 7 and 8, live in session 2, only once.
	if fmt.Sprint(got) != "[1 2 3 7 8 5 4 5 6]" {
		t.Fatalf("delivered %v, want [1 2 3 7 8 5 4 5 6]", got)
	}
}

// Gap marks are settled once per session per node, before it is
// subscribed: at the session's start for the nodes known then, and later
// for nodes browse adds and nodes whose history attributes could only be
// read later, each from the mark it brought. A node live in the session
// before that (with no mark) gets none.
func TestGapMarksForNodesThatJoinMidSession(t *testing.T) {
	src := newTestSourceWithSink(t, &memSink{})
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	mark := func(sec int) lastValue {
		return lastValue{id: fmt.Sprint("v", sec), ts: t0.Add(time.Duration(sec) * time.Second)}
	}
	src.restored["A"], src.restored["B"], src.restored["C"] = mark(1), mark(2), mark(3)
	add := func(key string, checked, historized bool) *item {
		it := &item{key: key, kind: kindValue, rule: -1, opts: ItemOptions{Backfill: BackfillAuto}}
		src.addItem(it)
		it.historyChecked = checked
		it.historized.Store(historized)
		return it
	}
	a := add("A", true, true)
	b := add("B", false, false) // reading its history attributes failed
	d := add("D", true, true)   // historized, no mark yet
	pending := func() string {
		var out []string
		for _, it := range *src.items.Load() {
			if mk, ok := src.gapPending[it]; ok {
				out = append(out, fmt.Sprintf("%s:%s:%v", it.key, mk.id, it.gap.Load() != 0))
			}
		}
		return strings.Join(out, " ")
	}
	sess := &session{epoch: 1}
	src.takeGapMarks(sess)
	if got := pending(); got != "A:v1:true" {
		t.Fatalf("at the session's start: %q, want A:v1:true", got)
	}
	// Mid-session: A's and D's live values move their marks; B's history
	// attributes are read now; browse adds C.
	a.mark.Store(&lastValue{id: "v9", ts: t0.Add(9 * time.Second)})
	d.mark.Store(&lastValue{id: "v8", ts: t0.Add(8 * time.Second)})
	b.historyChecked = true
	b.historized.Store(true)
	add("C", true, true)
	src.takeGapMarks(sess)
	if got := pending(); got != "A:v1:true B:v2:true C:v3:true" {
		t.Fatalf("mid-session: %q, want A:v1:true B:v2:true C:v3:true", got)
	}
	if d.gap.Load() != 0 {
		t.Error("D, live before it had a mark, has an open gap")
	}
	// The next session: D now brings a mark; A keeps its older pending one.
	src.takeGapMarks(&session{epoch: 2})
	if got := pending(); got != "A:v1:true B:v2:true D:v8:true C:v3:true" {
		t.Fatalf("next session: %q", got)
	}
}

// Back-fill reads group nodes by the start of their gaps, oldest first, so
// a node with an old gap does not make the others read from its start.
func TestGapChunksGroupByStart(t *testing.T) {
	src := newTestSourceWithSink(t, &memSink{})
	src.gapPending = map[*item]lastValue{}
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var todo []*item
	for i, age := range []time.Duration{time.Minute, 72 * time.Hour, time.Minute, 48 * time.Hour, time.Minute} {
		it := &item{key: fmt.Sprint("N", i), handle: uint32(i)}
		src.gapPending[it] = lastValue{ts: t0.Add(-age)}
		todo = append(todo, it)
	}
	var got []string
	for _, chunk := range src.gapChunks(todo, 2) {
		var keys []string
		for _, it := range chunk {
			keys = append(keys, it.key)
		}
		got = append(got, strings.Join(keys, ","))
	}
	if strings.Join(got, " | ") != "N1,N3 | N0,N2 | N4" {
		t.Fatalf("chunks %v, want the two old gaps together, then the fresh ones by handle", got)
	}
}

// A gap closes on the processor, after the values its back-fill read
// (queued before the close on the same channel), never on the session
// goroutine: a live value handled in between would commit a mark past the
// gap. The close of an older gap does not close a newer one.
func TestGapClosesAfterItsValues(t *testing.T) {
	src := newTestSourceWithSink(t, &memSink{})
	src.gapPending = map[*item]lastValue{}
	it := &item{key: "A", kind: kindValue}
	first := src.gapSeq.Add(1)
	it.gap.Store(first)
	src.gapPending[it] = lastValue{}
	ctx := context.Background()
	must(t, src.closeGap(ctx, it))
	if it.gap.Load() != first {
		t.Fatal("the gap closed before the processor handled the values read back")
	}
	if _, pending := src.gapPending[it]; pending {
		t.Fatal("the node's back-fill is still pending after closeGap")
	}
	stale := <-src.history
	// The next session opens a new gap before the processor got to the
	// close of the first one.
	second := src.gapSeq.Add(1)
	it.gap.Store(second)
	src.handleHistory(stale)
	if it.gap.Load() != second {
		t.Fatalf("the close of gap %d ended gap %d", first, second)
	}
	must(t, src.closeGap(ctx, it))
	src.handleHistory(<-src.history)
	if it.gap.Load() != 0 {
		t.Fatal("the gap is still open after its close was handled")
	}
}
