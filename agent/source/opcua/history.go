package opcua

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// detectHistory reads, once per item, whether the server historizes the
// node (back-fill auto) and the EURange a percent deadband needs.
func (s *Source) detectHistory(ctx context.Context, sess *session, items []*item) {
	var todo []*item
	for _, it := range items {
		if it.kind != kindValue || it.historyChecked || it.nodeID == nil || it.removed.Load() {
			continue
		}
		switch it.opts.Backfill {
		case BackfillOn:
			it.historized.Store(true)
		case BackfillOff:
		default:
			todo = append(todo, it)
		}
		if it.opts.Deadband.Type == DeadbandPercent && !it.euChecked {
			// Once answered, not again when only the history attributes
			// are read again (retry ticks).
			it.euChecked = s.readEURange(ctx, sess, it)
		}
		if it.opts.Backfill != BackfillAuto {
			it.historyChecked = true
		}
	}
	per := max(1, limit(500, sess.limits.nodesPerRead)/2)
	for len(todo) > 0 {
		n := min(per, len(todo))
		chunk := todo[:n]
		todo = todo[n:]
		req := &ua.ReadRequest{}
		for _, it := range chunk {
			req.NodesToRead = append(req.NodesToRead,
				&ua.ReadValueID{NodeID: it.nodeID, AttributeID: ua.AttributeIDAccessLevel},
				&ua.ReadValueID{NodeID: it.nodeID, AttributeID: ua.AttributeIDHistorizing})
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
		res, err := sess.c.Read(rctx, req)
		cancel()
		if err != nil || len(res.Results) != 2*n {
			s.log.Debug("reading history attributes failed", "error", err)
			return
		}
		for i, it := range chunk {
			it.historyChecked = true
			acc, hist := res.Results[2*i], res.Results[2*i+1]
			h := false
			if acc != nil && !isBad(acc.Status) && acc.Value != nil {
				if a, ok := numeric(acc.Value); ok && uint8(a)&uint8(ua.AccessLevelTypeHistoryRead) != 0 {
					h = true
				}
			}
			if hist != nil && !isBad(hist.Status) && hist.Value != nil {
				if b, ok := hist.Value.Value().(bool); ok && b {
					h = true
				}
			}
			it.historized.Store(h)
		}
	}
}

func (s *Source) readEURange(ctx context.Context, sess *session, it *item) (answered bool) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
	defer cancel()
	req := &ua.TranslateBrowsePathsToNodeIDsRequest{BrowsePaths: []*ua.BrowsePath{{
		StartingNode: it.nodeID,
		RelativePath: &ua.RelativePath{Elements: []*ua.RelativePathElement{{
			ReferenceTypeID: ua.NewNumericNodeID(0, id.HasProperty),
			TargetName:      &ua.QualifiedName{Name: "EURange"},
		}}},
	}}}
	var res *ua.TranslateBrowsePathsToNodeIDsResponse
	err := sess.c.Send(rctx, req, func(v ua.Response) error {
		r, ok := v.(*ua.TranslateBrowsePathsToNodeIDsResponse)
		if !ok {
			return fmt.Errorf("unexpected response %T", v)
		}
		res = r
		return nil
	})
	if err != nil {
		return false
	}
	if len(res.Results) == 0 || isBad(res.Results[0].StatusCode) || len(res.Results[0].Targets) == 0 {
		return true // the node has no EURange
	}
	target := ua.NewNodeIDFromExpandedNodeID(res.Results[0].Targets[0].TargetID)
	rr, err := sess.c.Read(rctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: target, AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return false
	}
	if len(rr.Results) == 0 || rr.Results[0].Value == nil {
		return true
	}
	if eo, ok := rr.Results[0].Value.Value().(*ua.ExtensionObject); ok {
		if r, ok := eo.Value.(*ua.Range); ok && r.High > r.Low {
			it.euRange.Store(&[2]float64{r.Low, r.High})
		}
	}
	return true
}

// takeGapMarks records, once per session and before the node is
// subscribed, where each historized value node's values stopped (its mark:
// the newest value delivered): the live subscription's first values move
// the marks past the gap, and a back-fill that read them then would read
// nothing of it. A gap not yet back-filled (a failed back-fill, a session
// lost during it) keeps its older mark. It runs when the session begins
// and again whenever nodes join mid-session: added by browse, or found
// historized only now because reading their history attributes failed
// before (their live values of this session are not read back twice,
// handleHistory). A node whose history attributes are still unknown waits
// for a later call. Session goroutine only.
func (s *Source) takeGapMarks(sess *session) {
	if s.gapPending == nil {
		s.gapPending = map[*item]lastValue{}
	}
	for _, it := range *s.items.Load() {
		if it.kind != kindValue || it.removed.Load() || it.gapEpoch == sess.epoch {
			continue
		}
		if !it.historyChecked && it.opts.Backfill == BackfillAuto {
			continue
		}
		it.gapEpoch = sess.epoch
		mk := it.mark.Load()
		if mk == nil || !it.historized.Load() {
			continue
		}
		if p, ok := s.gapPending[it]; !ok || mk.ts.Before(p.ts) {
			s.gapPending[it] = *mk
		}
		it.gap.Store(s.gapSeq.Add(1))
	}
}

// backfill reads back, for every historized node with a pending gap, the
// values between its gap mark and now, and hands them to the processor,
// which drops what the live subscription already delivered. The
// deterministic ids make any remaining overlap harmless at the hub. A node
// leaves the pending gaps once its read succeeded; the others are tried
// again (retry ticker, next session). Session goroutine only.
func (s *Source) backfill(ctx context.Context, sess *session) error {
	var todo []*item
	for it := range s.gapPending {
		if it.kind != kindValue || !it.historized.Load() || it.removed.Load() {
			if err := s.closeGap(ctx, it); err != nil {
				return err
			}
			continue
		}
		if it.sub != nil {
			todo = append(todo, it)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	end := s.now()
	floor := end.Add(-s.cfg.History.MaxAge)
	total := 0
	for _, chunk := range s.gapChunks(todo, limit(100, sess.limits.historyNodes)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := len(chunk)
		start := end
		marks := make([]lastValue, n)
		for i, it := range chunk {
			marks[i] = s.gapPending[it]
			if marks[i].ts.Before(start) {
				start = marks[i].ts
			}
		}
		if start.Before(floor) {
			start = floor
		}
		got, failed, err := s.historyRead(ctx, sess, chunk, marks, start, end)
		total += got
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.m.errors.WithLabelValues("history").Inc()
			s.log.Warn("history back-fill failed; it is tried again", "nodes", n, "error", err)
			// A read that ran out of time (a slow historian, a long gap)
			// is tried again on the next retry tick, not taken for a lost
			// session: reconnecting would only read the same range again.
			// The keep-alive notices a session that is really gone.
			if lostErr(err) && !timeoutErr(err) {
				return err
			}
			continue
		}
		for i, it := range chunk {
			if !failed[i] {
				if err := s.closeGap(ctx, it); err != nil {
					return err
				}
			}
		}
	}
	if total > 0 {
		s.log.Info("back-filled values missed while disconnected", "values", total)
	}
	return nil
}

// gapChunks splits the nodes to back-fill into HistoryReads of up to per
// nodes, grouped by the start of their gaps: a read starts at the oldest
// mark of its chunk, so a node whose gap began days ago (a back-fill that
// kept failing) shares a read only with others as old, and the nodes of a
// fresh gap do not read days of values they already delivered.
func (s *Source) gapChunks(todo []*item, per int) [][]*item {
	sort.Slice(todo, func(i, j int) bool {
		a, b := s.gapPending[todo[i]].ts, s.gapPending[todo[j]].ts
		if !a.Equal(b) {
			return a.Before(b)
		}
		return todo[i].handle < todo[j].handle
	})
	var out [][]*item
	for len(todo) > 0 {
		n := min(per, len(todo))
		out = append(out, todo[:n])
		todo = todo[n:]
	}
	return out
}

// closeGap ends a node's pending gap: its back-fill is done (or no longer
// possible). The processor commits the node's marks again once it has
// handled the values read back, which are queued before the closing batch:
// a live value handled before them must not commit a mark past the gap.
// When ctx ends first the gap stays pending, and an agent restart reads it
// again from its start.
func (s *Source) closeGap(ctx context.Context, it *item) error {
	select {
	case s.history <- historyBatch{it: it, closes: it.gap.Load()}:
		delete(s.gapPending, it)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// timeoutErr reports a request that ran out of time.
func timeoutErr(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ua.StatusBadTimeout)
}

// historyRead pages through HistoryRead for one chunk of nodes. failed
// marks the nodes whose read the server refused (other than "no history
// here"): their gap stays pending. Only values after a node's own mark
// count towards history.max_values_per_node.
func (s *Source) historyRead(ctx context.Context, sess *session, chunk []*item, marks []lastValue, start, end time.Time) (total int, failed []bool, err error) {
	failed = make([]bool, len(chunk))
	details := &ua.ReadRawModifiedDetails{StartTime: start, EndTime: end, NumValuesPerNode: uint32(min(1000, s.cfg.History.MaxValuesPerNode))}
	conts := make([][]byte, len(chunk))
	active := make([]bool, len(chunk))
	counts := make([]int, len(chunk))
	for i := range active {
		active[i] = true
	}
	for {
		var idx []int
		req := &ua.HistoryReadRequest{
			HistoryReadDetails: &ua.ExtensionObject{
				TypeID:       ua.NewFourByteExpandedNodeID(0, id.ReadRawModifiedDetails_Encoding_DefaultBinary),
				EncodingMask: ua.ExtensionObjectBinary,
				Value:        details,
			},
			TimestampsToReturn: ua.TimestampsToReturnBoth,
		}
		for i, it := range chunk {
			if active[i] {
				idx = append(idx, i)
				req.NodesToRead = append(req.NodesToRead, &ua.HistoryReadValueID{NodeID: it.nodeID, DataEncoding: &ua.QualifiedName{}, ContinuationPoint: conts[i]})
			}
		}
		if len(idx) == 0 {
			return total, failed, nil
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
		var res *ua.HistoryReadResponse
		err := sess.c.Send(rctx, req, func(v ua.Response) error {
			r, ok := v.(*ua.HistoryReadResponse)
			if !ok {
				return fmt.Errorf("unexpected response %T", v)
			}
			res = r
			return nil
		})
		cancel()
		if err == nil && res.ResponseHeader != nil && isBad(res.ResponseHeader.ServiceResult) {
			err = res.ResponseHeader.ServiceResult
		}
		if err != nil {
			return total, failed, err
		}
		if len(res.Results) != len(idx) {
			return total, failed, fmt.Errorf("server answered %d history results for %d nodes", len(res.Results), len(idx))
		}
		var release []*ua.HistoryReadValueID
		for j, r := range res.Results {
			i := idx[j]
			it := chunk[i]
			conts[i] = nil
			active[i] = false
			if r == nil || isBad(r.StatusCode) {
				st := ua.StatusBad
				if r != nil {
					st = r.StatusCode
				}
				if st == ua.StatusBadHistoryOperationUnsupported || st == ua.StatusBadHistoryOperationInvalid {
					it.historized.Store(false)
				} else {
					failed[i] = true
				}
				s.log.Warn("history read of a node failed", "node", it.key, "status", statusText(st))
				continue
			}
			var values []*ua.DataValue
			if r.HistoryData != nil {
				if hd, ok := r.HistoryData.Value.(*ua.HistoryData); ok {
					values = hd.DataValues
				}
			}
			for _, dv := range values {
				if dv == nil {
					continue
				}
				if valueTime(dv).After(marks[i].ts) {
					counts[i]++ // values before the mark are skipped, not the gap's
				}
			}
			total += len(values)
			if len(values) > 0 {
				select {
				case s.history <- historyBatch{it: it, values: values, since: marks[i], epoch: sess.epoch}:
				case <-ctx.Done():
					return total, failed, ctx.Err()
				}
			}
			if len(r.ContinuationPoint) > 0 {
				if counts[i] < s.cfg.History.MaxValuesPerNode {
					conts[i], active[i] = r.ContinuationPoint, true
				} else {
					s.log.Warn("history back-fill of a node stopped at history.max_values_per_node", "node", it.key, "values", counts[i])
					release = append(release, &ua.HistoryReadValueID{NodeID: it.nodeID, DataEncoding: &ua.QualifiedName{}, ContinuationPoint: r.ContinuationPoint})
				}
			}
		}
		if len(release) > 0 {
			s.releaseContinuationPoints(ctx, sess, details, release)
		}
	}
}

// releaseContinuationPoints frees what the server holds for an abandoned
// read; servers have few of them.
func (s *Source) releaseContinuationPoints(ctx context.Context, sess *session, details *ua.ReadRawModifiedDetails, nodes []*ua.HistoryReadValueID) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
	defer cancel()
	req := &ua.HistoryReadRequest{
		HistoryReadDetails: &ua.ExtensionObject{
			TypeID:       ua.NewFourByteExpandedNodeID(0, id.ReadRawModifiedDetails_Encoding_DefaultBinary),
			EncodingMask: ua.ExtensionObjectBinary,
			Value:        details,
		},
		TimestampsToReturn:        ua.TimestampsToReturnBoth,
		ReleaseContinuationPoints: true,
		NodesToRead:               nodes,
	}
	_ = sess.c.Send(rctx, req, func(ua.Response) error { return nil })
}
