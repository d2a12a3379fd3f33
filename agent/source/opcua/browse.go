package opcua

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// ErrTooManyNodes is wrapped when a browse rule matches more than its
// max_nodes.
var ErrTooManyNodes = errors.New("browse rule matches too many nodes")

// maxBrowseDepth stops a ** pattern in a server with reference cycles.
const maxBrowseDepth = 32

// browser is the part of the gopcua client browsing needs.
type browser interface {
	Browse(ctx context.Context, req *ua.BrowseRequest) (*ua.BrowseResponse, error)
	BrowseNext(ctx context.Context, req *ua.BrowseNextRequest) (*ua.BrowseNextResponse, error)
}

// child is one reference found by browsing.
type child struct {
	id       *ua.NodeID
	name     string
	class    ua.NodeClass
	typeDef  *ua.ExpandedNodeID
	refType  *ua.NodeID
	external bool
}

// browseChildren returns the hierarchical children of each node, asking
// for at most perCall nodes per Browse and following continuation points.
func browseChildren(ctx context.Context, b browser, nodes []*ua.NodeID, perCall int) ([][]child, error) {
	out := make([][]child, len(nodes))
	for start := 0; start < len(nodes); start += perCall {
		end := min(start+perCall, len(nodes))
		req := &ua.BrowseRequest{RequestedMaxReferencesPerNode: 1000}
		for _, n := range nodes[start:end] {
			req.NodesToBrowse = append(req.NodesToBrowse, &ua.BrowseDescription{
				NodeID:          n,
				BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
				IncludeSubtypes: true,
				NodeClassMask:   uint32(ua.NodeClassObject | ua.NodeClassVariable),
				ResultMask:      uint32(ua.BrowseResultMaskAll),
			})
		}
		res, err := b.Browse(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("browse: %w", err)
		}
		if res.ResponseHeader != nil && isBad(res.ResponseHeader.ServiceResult) {
			return nil, fmt.Errorf("browse: %w", res.ResponseHeader.ServiceResult)
		}
		if len(res.Results) != end-start {
			return nil, fmt.Errorf("browse: server answered %d results for %d nodes", len(res.Results), end-start)
		}
		for i, r := range res.Results {
			if r == nil || isBad(r.StatusCode) {
				continue // e.g. a node deleted between two steps
			}
			refs := r.References
			cont := r.ContinuationPoint
			for len(cont) > 0 {
				nr, err := b.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cont}})
				if err != nil {
					return nil, fmt.Errorf("browse next: %w", err)
				}
				if len(nr.Results) == 0 || nr.Results[0] == nil || isBad(nr.Results[0].StatusCode) {
					break
				}
				refs = append(refs, nr.Results[0].References...)
				cont = nr.Results[0].ContinuationPoint
			}
			for _, ref := range refs {
				if ref == nil || ref.NodeID == nil || !ref.IsForward {
					continue
				}
				c := child{id: ua.NewNodeIDFromExpandedNodeID(ref.NodeID), class: ref.NodeClass, typeDef: ref.TypeDefinition,
					refType: ref.ReferenceTypeID, external: ref.NodeID.ServerIndex != 0}
				if ref.BrowseName != nil {
					c.name = ref.BrowseName.Name
				}
				if c.external || c.id == nil {
					continue
				}
				out[start+i] = append(out[start+i], c)
			}
		}
	}
	return out, nil
}

// browseHit is a variable a browse rule matched.
type browseHit struct {
	id   *ua.NodeID
	name string
	path string
	caps []string
}

type frontier struct {
	id    *ua.NodeID
	seg   int
	names []string
	caps  []string
	acc   []string // names consumed by the current **
	depth int
}

// matchPattern walks the address space from start along segs.
func matchPattern(ctx context.Context, b browser, start *ua.NodeID, segs []segment, maxNodes, perCall int) ([]browseHit, error) {
	var hits []browseHit
	seen := map[string]bool{}
	front := zeroDepth([]frontier{{id: start}}, segs)
	for len(front) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ids := make([]*ua.NodeID, 0, len(front))
		index := map[string]int{}
		for _, f := range front {
			k := f.id.String()
			if _, ok := index[k]; !ok {
				index[k] = len(ids)
				ids = append(ids, f.id)
			}
		}
		children, err := browseChildren(ctx, b, ids, perCall)
		if err != nil {
			return nil, err
		}
		var next []frontier
		for _, f := range front {
			if f.depth >= maxBrowseDepth {
				continue
			}
			sg := segs[f.seg]
			for _, c := range children[index[f.id.String()]] {
				names := append(append([]string(nil), f.names...), c.name)
				if sg.anyDepth {
					if c.class == ua.NodeClassObject {
						next = append(next, frontier{id: c.id, seg: f.seg, names: names, caps: f.caps,
							acc: append(append([]string(nil), f.acc...), c.name), depth: f.depth + 1})
					}
					continue
				}
				if ok, _ := path.Match(sg.glob, c.name); !ok {
					continue
				}
				caps := f.caps
				if sg.capture {
					caps = append(append([]string(nil), f.caps...), c.name)
				}
				if f.seg+1 == len(segs) {
					k := c.id.String()
					if c.class == ua.NodeClassVariable && !seen[k] {
						seen[k] = true
						hits = append(hits, browseHit{id: c.id, name: c.name, path: strings.Join(names, "/"), caps: caps})
						if maxNodes > 0 && len(hits) > maxNodes {
							return hits[:maxNodes], fmt.Errorf("%w: more than %d; narrow the path or raise max_nodes", ErrTooManyNodes, maxNodes)
						}
					}
					continue
				}
				next = append(next, frontier{id: c.id, seg: f.seg + 1, names: names, caps: caps, depth: f.depth + 1})
			}
		}
		front = dedupe(zeroDepth(next, segs))
	}
	return hits, nil
}

// zeroDepth adds, for every entry sitting at a ** segment, the entry that
// ends the ** here (the ** capture being what it consumed so far).
func zeroDepth(front []frontier, segs []segment) []frontier {
	out := front
	for i := 0; i < len(out); i++ {
		f := out[i]
		if f.seg < len(segs) && segs[f.seg].anyDepth {
			out = append(out, frontier{id: f.id, seg: f.seg + 1, names: f.names,
				caps: append(append([]string(nil), f.caps...), strings.Join(f.acc, "/")), depth: f.depth})
		}
	}
	return out
}

func dedupe(front []frontier) []frontier {
	out := front[:0]
	local := map[string]bool{}
	for _, f := range front {
		k := fmt.Sprintf("%s|%d|%s", f.id.String(), f.seg, strings.Join(f.acc, "/"))
		if local[k] {
			continue
		}
		local[k] = true
		out = append(out, f)
	}
	return out
}

// expandBrowse re-runs every browse rule: new matches become items (with
// their captures), items of a rule that no longer match are removed.
func (s *Source) expandBrowse(ctx context.Context, sess *session) error {
	perCall := limit(100, sess.limits.nodesPerBrowse)
	var errs []error
	matched := map[string]bool{}
	failedRules := map[int]bool{}
	var added int
	for ri, rule := range s.cfg.Browse {
		start := ua.NewNumericNodeID(0, id.RootFolder)
		if rule.Start != "" {
			ref, _ := parseNodeRef(rule.Start)
			nid, err := ref.resolve(sess.c.Namespaces())
			if err != nil {
				errs = append(errs, fmt.Errorf("browse[%d].start: %w", ri, err))
				failedRules[ri] = true
				continue
			}
			start = nid
		}
		maxNodes := rule.MaxNodes
		if maxNodes == 0 {
			maxNodes = 10000
		}
		bctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Session.RequestTimeout)
		hits, err := matchPattern(bctx, sess.c, start, s.rulePaths[ri], maxNodes, perCall)
		cancel()
		if err != nil {
			if lostErr(err) && !errors.Is(err, ErrTooManyNodes) {
				return err
			}
			errs = append(errs, fmt.Errorf("browse[%d] %q: %w", ri, rule.Path, err))
			if !errors.Is(err, ErrTooManyNodes) {
				failedRules[ri] = true
				continue
			}
		}
		for _, h := range hits {
			key := h.id.String()
			matched[key] = true
			if it := s.byKey[key]; it != nil {
				if it.removed.Swap(false) {
					it.setState(itemPending, "")
					it.nodeID = it.fixed
				}
				continue
			}
			s.addItem(&item{key: key, kind: kindValue, fixed: h.id, nodeID: h.id, m: s.ruleMaps[ri],
				opts: s.itemOptions(rule.ItemOptions), rule: ri, name: h.name, path: h.path, caps: h.caps})
			added++
		}
	}
	bySub := map[*subscription][]uint32{}
	var removed int
	for _, it := range *s.items.Load() {
		if it.rule < 0 || failedRules[it.rule] || matched[it.key] || it.removed.Load() {
			continue
		}
		it.removed.Store(true)
		removed++
		if it.sub != nil {
			bySub[it.sub] = append(bySub[it.sub], it.monitoredID)
			it.sub.n--
			it.sub, it.monitoredID = nil, 0
		}
	}
	s.unmonitor(ctx, bySub)
	if added > 0 || removed > 0 {
		s.log.Info("browse rules re-expanded", "added", added, "removed", removed)
	}
	if added > 0 {
		s.detectHistory(ctx, sess, *s.items.Load())
	}
	return errors.Join(errs...)
}
