package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/plantsync/plantsync/agent/source"
)

// ErrNoEndpoint means the server offers no endpoint matching the configured
// security policy, mode and authentication.
var ErrNoEndpoint = errors.New("no matching endpoint")

// session is one connected client with its subscriptions.
type session struct {
	c      *opcua.Client
	ep     *ua.EndpointDescription
	limits serverLimits
	subs   []*subscription
	epoch  uint64
	// notifs receives this session's notifications; forward hands them to
	// the processor tagged with epoch.
	notifs    chan *opcua.PublishNotificationData
	closed    chan struct{} // closed once the client is closed
	forwarded chan struct{} // closed once forward has handed on the rest
}

type subscription struct {
	sub     *opcua.Subscription
	n       int
	full    bool
	revised time.Duration
}

// serverLimits are the server's operation limits; 0 means none given.
type serverLimits struct {
	nodesPerRead, nodesPerBrowse, itemsPerCall, historyNodes, subsPerSession, itemsPerSub uint32
}

// backoff spaces reconnect attempts: exponential with jitter, and never
// closer than RefusedInterval after the server refused us, so a PLC that is
// out of sessions sees a few attempts a minute, not a storm.
type backoff struct {
	initial, max, refused time.Duration
	n                     int
}

func (b *backoff) next(refused bool) time.Duration {
	d := b.initial << min(b.n, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.n++
	d = jitter(d)
	if refused {
		d = max(d, b.refused+time.Duration(rand.Int64N(int64(b.refused)/5+1)))
	}
	return d
}

func (b *backoff) reset() { b.n = 0 }

// jitter spreads d by ±20% so agents that lost a server together do not
// return together.
func jitter(d time.Duration) time.Duration {
	return d*4/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

// refusedErr tells whether the server (or the network in front of it)
// turned the attempt away, as opposed to a timeout.
func refusedErr(err error) bool {
	for _, target := range []error{
		syscall.ECONNREFUSED, ua.StatusBadTooManySessions, ua.StatusBadCertificateUntrusted,
		ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateInvalid, ua.StatusBadIdentityTokenRejected,
		ua.StatusBadIdentityTokenInvalid, ua.StatusBadUserAccessDenied, ua.StatusBadServerHalted,
		ua.StatusBadTCPServerTooBusy, ua.StatusBadSecurityPolicyRejected, ErrUntrustedServer, ErrNoEndpoint,
		ua.StatusBadCertificateURIInvalid, ua.StatusBadCertificateUseNotAllowed, ua.StatusBadNoValidCertificates,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// run keeps a session until ctx ends.
func (s *Source) run(ctx context.Context) {
	defer s.wg.Done()
	bo := &backoff{initial: s.cfg.Reconnect.Initial, max: s.cfg.Reconnect.Max, refused: s.cfg.Reconnect.RefusedInterval}
	var orphan *opcua.Session
	connected := false
	for {
		s.m.connectAttempts.Inc()
		sess, err := s.connect(ctx, orphan)
		orphan = nil
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			kind := "connect"
			if errors.Is(err, ErrUntrustedServer) {
				kind = "trust"
			}
			s.fail(kind, err)
			if !sleepCtx(ctx, bo.next(refusedErr(err))) {
				return
			}
			continue
		}
		// On the processor's context, not the session's: at shutdown the
		// session ends first, and what it had queued is still handed on.
		go s.forward(s.pctx, sess)
		if connected {
			s.m.reconnects.Inc()
		}
		connected = true
		err = s.serve(ctx, sess, bo)
		orphan = s.closeSession(sess, ctx.Err() == nil)
		s.m.connected.Set(0)
		s.setSubscriptions(0)
		s.security.Store(nil)
		if ctx.Err() != nil {
			s.setHealth(source.StateStopped, false, nil)
			return
		}
		s.fail("session", fmt.Errorf("session lost: %w", err))
		if !sleepCtx(ctx, bo.next(false)) {
			return
		}
	}
}

func (s *Source) fail(kind string, err error) {
	s.m.errors.WithLabelValues(kind).Inc()
	s.setHealth(source.StateDegraded, false, err)
	s.log.Warn("opc ua "+kind+" failed; retrying", "endpoint", s.cfg.Endpoint, "error", err)
}

// closeSession ends a session. When it was lost (not shut down) the
// server-side session may still exist; it is detached and handed back so
// the next connect can close it on the server instead of letting it occupy
// one of a PLC's few session slots until it times out.
func (s *Source) closeSession(sess *session, lost bool) *opcua.Session {
	ctx, cancel := context.WithTimeout(context.Background(), min(s.cfg.Session.RequestTimeout, 2*time.Second))
	defer cancel()
	var orphan *opcua.Session
	if lost {
		orphan, _ = sess.c.DetachSession(ctx)
	}
	_ = sess.c.Close(ctx)
	// Let forward hand on what the session queued before the next
	// session's notifications begin. gopcua may still send one after Close
	// (it does not wait for its publish goroutine); forward has gone by
	// then and it is dropped: it belongs to the old session, whose gap the
	// back-fill reads.
	close(sess.closed)
	<-sess.forwarded
	return orphan
}

// selectEndpoint asks the server for its endpoints and picks the one the
// config wants: a named policy and mode, or with auto the strongest offered.
func (s *Source) selectEndpoint(ctx context.Context) (*ua.EndpointDescription, error) {
	eps, err := opcua.GetEndpoints(ctx, s.cfg.Endpoint, opcua.DialTimeout(s.cfg.Session.ConnectTimeout), opcua.RequestTimeout(s.cfg.Session.ConnectTimeout))
	if err != nil {
		return nil, fmt.Errorf("get endpoints of %s: %w", s.cfg.Endpoint, err)
	}
	return chooseEndpoint(eps, s.cfg.Security, s.cfg.Auth.Type)
}

var policyRank = map[string]int{
	ua.SecurityPolicyURINone:                0,
	ua.SecurityPolicyURIBasic256Sha256:      1,
	ua.SecurityPolicyURIAes128Sha256RsaOaep: 2,
	ua.SecurityPolicyURIAes256Sha256RsaPss:  3,
}

var policyURIs = map[string]string{
	PolicyNone:                ua.SecurityPolicyURINone,
	PolicyBasic256Sha256:      ua.SecurityPolicyURIBasic256Sha256,
	PolicyAes128Sha256RsaOaep: ua.SecurityPolicyURIAes128Sha256RsaOaep,
	PolicyAes256Sha256RsaPss:  ua.SecurityPolicyURIAes256Sha256RsaPss,
}

var modeRank = map[ua.MessageSecurityMode]int{
	ua.MessageSecurityModeNone: 0, ua.MessageSecurityModeSign: 1, ua.MessageSecurityModeSignAndEncrypt: 2,
}

func tokenType(auth string) ua.UserTokenType {
	switch auth {
	case AuthUsername:
		return ua.UserTokenTypeUserName
	case AuthCertificate:
		return ua.UserTokenTypeCertificate
	}
	return ua.UserTokenTypeAnonymous
}

func chooseEndpoint(eps []*ua.EndpointDescription, sec SecurityConfig, auth string) (*ua.EndpointDescription, error) {
	wantTok := tokenType(auth)
	var best *ua.EndpointDescription
	bestRank := -1
	var offered []string
	for _, ep := range eps {
		pr, ok := policyRank[ep.SecurityPolicyURI]
		mr, mok := modeRank[ep.SecurityMode]
		name := strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix) + "/" + modeName(ep.SecurityMode)
		if !slices.Contains(offered, name) {
			offered = append(offered, name)
		}
		if !ok || !mok {
			continue // deprecated (Basic128Rsa15, Basic256) or unknown
		}
		if sec.Policy != PolicyAuto && policyURIs[sec.Policy] != ep.SecurityPolicyURI {
			continue
		}
		if sec.Mode != ModeAuto && modeName(ep.SecurityMode) != sec.Mode {
			continue
		}
		if (pr == 0) != (mr == 0) {
			continue
		}
		hasTok := false
		for _, t := range ep.UserIdentityTokens {
			if t.TokenType == wantTok {
				hasTok = true
			}
		}
		if !hasTok {
			continue
		}
		if r := mr*10 + pr; r > bestRank {
			best, bestRank = ep, r
		}
	}
	if best == nil {
		sort.Strings(offered)
		return nil, fmt.Errorf("%w: want policy %s, mode %s, %s authentication; the server offers %s",
			ErrNoEndpoint, sec.Policy, sec.Mode, auth, strings.Join(offered, ", "))
	}
	return best, nil
}

func modeName(m ua.MessageSecurityMode) string {
	switch m {
	case ua.MessageSecurityModeNone:
		return ModeNone
	case ua.MessageSecurityModeSign:
		return ModeSign
	case ua.MessageSecurityModeSignAndEncrypt:
		return ModeSignAndEncrypt
	}
	return m.String()
}

// clientOptions builds the gopcua options for ep. gopcua's own reconnect
// is off: it gives up on a refused connect and restores items all or
// nothing, so the source rebuilds sessions itself.
func (s *Source) clientOptions(ep *ua.EndpointDescription, onLost func(opcua.ConnState)) ([]opcua.Option, error) {
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.SecurityPolicy(ep.SecurityPolicyURI),
		opcua.SecurityMode(ep.SecurityMode),
		opcua.ApplicationName("plantsync-agent " + s.env.Name),
		opcua.ProductURI("urn:plantsync:agent"),
		opcua.SessionName("plantsync-agent " + orDefault(s.env.AgentID, "agent") + " " + s.env.Name),
		opcua.SessionTimeout(s.cfg.Session.Timeout),
		opcua.RequestTimeout(s.cfg.Session.RequestTimeout),
		opcua.DialTimeout(s.cfg.Session.ConnectTimeout),
		opcua.Lifetime(time.Hour),
	}
	if ep.SecurityPolicyURI != ua.SecurityPolicyURINone {
		// Only secure channels carry the certificate: servers check any
		// certificate they are sent, also on policy None.
		opts = append(opts, opcua.Certificate(s.ident.cert), opcua.PrivateKey(s.ident.key))
	}
	if s.ident.appURI != "" {
		opts = append(opts, opcua.ApplicationURI(s.ident.appURI))
	}
	switch s.cfg.Auth.Type {
	case AuthUsername:
		pw, err := readSecret(s.cfg.Auth.PasswordFile, s.cfg.Auth.PasswordEnv)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opcua.AuthUsername(s.cfg.Auth.Username, pw))
	case AuthCertificate:
		uid, _, err := loadIdentity(CertificateConfig{CertFile: s.cfg.Auth.CertFile, KeyFile: s.cfg.Auth.KeyFile}, "", "")
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		opts = append(opts, opcua.AuthCertificate(uid.cert), opcua.AuthPrivateKey(uid.key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, tokenType(s.cfg.Auth.Type)))
	if onLost != nil {
		opts = append(opts, opcua.StateChangedFunc(onLost))
	}
	return opts, nil
}

// connect opens a channel and a session, after checking the server's
// certificate against the trust list.
func (s *Source) connect(ctx context.Context, orphan *opcua.Session) (*session, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Session.ConnectTimeout)
	defer cancel()
	ep, err := s.selectEndpoint(cctx)
	if err != nil {
		return nil, err
	}
	// A password is encrypted to the server's certificate even on a None
	// channel, so it is only sent to a trusted server.
	needTrust := ep.SecurityPolicyURI != ua.SecurityPolicyURINone || s.cfg.Auth.Type == AuthUsername
	if needTrust && !s.trust.trusted(ep.ServerCertificate) {
		subject, notAfter := certSubject(ep.ServerCertificate)
		return nil, &UntrustedError{Endpoint: s.cfg.Endpoint, Fingerprint: Fingerprint(ep.ServerCertificate),
			Subject: subject, NotAfter: notAfter, StateDir: s.env.StateDir}
	}
	// Drain a loss signal left over from the previous session.
	select {
	case <-s.lost:
	default:
	}
	opts, err := s.clientOptions(ep, func(st opcua.ConnState) {
		if st == opcua.Disconnected {
			s.signalLost(errors.New("secure channel closed"))
		}
	})
	if err != nil {
		return nil, err
	}
	if orphan != nil {
		s.closeOrphan(cctx, ep, orphan)
	}
	c, err := opcua.NewClient(s.cfg.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	if err := c.Connect(cctx); err != nil {
		_ = c.Close(context.Background())
		return nil, fmt.Errorf("connect to %s (%s, %s): %w", s.cfg.Endpoint,
			strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix), modeName(ep.SecurityMode), err)
	}
	sess := &session{c: c, ep: ep, epoch: s.epoch.Add(1), notifs: make(chan *opcua.PublishNotificationData, 256),
		closed: make(chan struct{}), forwarded: make(chan struct{})}
	return sess, nil
}

// forward hands the session's notifications to the processor tagged with
// the session's epoch: one still queued when the connection is lost and
// processed after the next session began counts as the old session's, so it
// cannot pass for the new session's first live value, which would make the
// back-fill skip the gap (handleValue, handleHistory). Once the client is
// closed it hands on what is left and ends.
func (s *Source) forward(ctx context.Context, sess *session) {
	defer close(sess.forwarded)
	send := func(n *opcua.PublishNotificationData) bool {
		select {
		case s.notifs <- notification{data: n, epoch: sess.epoch}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case n := <-sess.notifs:
			if !send(n) {
				return
			}
		case <-sess.closed:
			for {
				select {
				case n := <-sess.notifs:
					if !send(n) {
						return
					}
				default:
					return
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// closeOrphan closes the session a lost connection left on the server.
func (s *Source) closeOrphan(ctx context.Context, ep *ua.EndpointDescription, orphan *opcua.Session) {
	opts, err := s.clientOptions(ep, nil)
	if err != nil {
		return
	}
	c, err := opcua.NewClient(s.cfg.Endpoint, opts...)
	if err != nil {
		return
	}
	defer c.Close(ctx)
	if err := c.Dial(ctx); err != nil {
		return
	}
	if err := c.ActivateSession(ctx, orphan); err != nil {
		return // gone already
	}
	if err := c.CloseSession(ctx); err == nil {
		s.log.Debug("closed the session the lost connection left on the server")
	}
}

// serve restores every item on a fresh session and watches it until it is
// lost or ctx ends.
func (s *Source) serve(ctx context.Context, sess *session, bo *backoff) error {
	s.readLimits(ctx, sess)
	if err := s.resolve(sess); err != nil {
		s.log.Warn("some configured nodes cannot be resolved", "error", err)
	}
	if len(s.cfg.Browse) > 0 {
		if err := s.expandBrowse(ctx, sess); err != nil {
			if lostErr(err) {
				return err
			}
			s.m.errors.WithLabelValues("browse").Inc()
			s.log.Warn("browse rules could not be expanded; retrying at the next interval", "error", err)
		}
	}
	s.detectHistory(ctx, sess, *s.items.Load())
	s.takeGapMarks(sess)
	if err := s.createItems(ctx, sess, s.itemsToCreate()); err != nil && lostErr(err) {
		return err
	}
	s.refreshItemMetrics()
	s.m.connected.Set(1)
	sec := strings.TrimPrefix(sess.ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix) + "/" + modeName(sess.ep.SecurityMode)
	s.security.Store(&sec)
	bad := s.countState(itemBad)
	st, reason := source.StateRunning, error(nil)
	if bad > 0 {
		st, reason = source.StateDegraded, fmt.Errorf("%d monitored item(s) refused by the server; see GET /api/v1/sources/%s/items on the admin listener", bad, s.env.Name)
	}
	s.setHealth(st, true, reason)
	s.log.Info("opc ua session established", "endpoint", s.cfg.Endpoint,
		"policy", strings.TrimPrefix(sess.ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix), "mode", modeName(sess.ep.SecurityMode),
		"items", len(*s.items.Load()), "bad_items", bad, "subscriptions", len(sess.subs))
	bo.reset()
	if hook := s.beforeBackfill.Load(); hook != nil {
		(*hook)()
	}
	if err := s.backfill(ctx, sess); err != nil && lostErr(err) {
		return err
	}

	keepalive := time.NewTicker(s.cfg.Session.KeepaliveInterval)
	defer keepalive.Stop()
	browse := time.NewTicker(s.cfg.BrowseInterval)
	defer browse.Stop()
	// Some servers (node-opcua) restart a subscription's keep-alive count
	// on every CreateMonitoredItems; retrying faster than keep-alives are
	// due would starve the publish requests until they time out.
	retry := time.NewTicker(max(s.cfg.RetryBadItems, 2*s.cfg.Session.KeepaliveInterval))
	defer retry.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case err = <-s.lost:
			return err
		case <-keepalive.C:
			err = s.ping(ctx, sess)
			if err != nil {
				return fmt.Errorf("keepalive: %w", err)
			}
		case <-browse.C:
			if len(s.cfg.Browse) == 0 {
				continue
			}
			if err = s.expandBrowse(ctx, sess); err != nil && !lostErr(err) {
				s.m.errors.WithLabelValues("browse").Inc()
				s.log.Warn("browse rules could not be expanded", "error", err)
				err = nil
			}
			if err == nil {
				// Nodes browse added (and found historized) bring the gap
				// since their restored marks.
				s.takeGapMarks(sess)
				err = s.createItems(ctx, sess, s.itemsToCreate())
			}
		case <-s.recheck:
			s.takeOutUnknown(ctx, sess)
		case <-retry.C:
			// History attributes a failed read left unknown: a node found
			// historized now gets the gap of this session read back too.
			s.detectHistory(ctx, sess, *s.items.Load())
			s.takeGapMarks(sess)
			err = s.createItems(ctx, sess, s.itemsToRetry())
			if !lostErr(err) && len(s.gapPending) > 0 {
				// Items the server keeps refusing do not hold back the
				// gaps of the others.
				if berr := s.backfill(ctx, sess); berr != nil {
					err = berr
				}
			}
		}
		s.refreshItemMetrics()
		if err != nil && lostErr(err) {
			return err
		}
		if s.countState(itemBad) == 0 {
			s.setHealth(source.StateRunning, true, nil)
		} else {
			s.setHealth(source.StateDegraded, true, nil)
		}
	}
}

// lostErr tells a failed request that means the session or channel is gone
// from one that concerns only the nodes in it.
func lostErr(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{io.EOF, context.DeadlineExceeded, ua.StatusBadSessionIDInvalid, ua.StatusBadSessionClosed,
		ua.StatusBadSessionNotActivated, ua.StatusBadSecureChannelIDInvalid, ua.StatusBadSecureChannelClosed,
		ua.StatusBadServerNotConnected, ua.StatusBadConnectionClosed, ua.StatusBadTimeout, ua.StatusBadNotConnected,
		ua.StatusBadCommunicationError, ua.StatusBadShutdown, ua.StatusBadServerHalted, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func (s *Source) ping(ctx context.Context, sess *session) error {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
	defer cancel()
	res, err := sess.c.Read(rctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime), AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			return fmt.Errorf("no answer within %s: %w", s.cfg.Session.RequestTimeout, ua.StatusBadTimeout)
		}
		return err
	}
	if res.ResponseHeader != nil && isBad(res.ResponseHeader.ServiceResult) {
		return res.ResponseHeader.ServiceResult
	}
	return nil
}

// readLimits reads the server's operation limits; servers that do not
// publish them get the configured values.
func (s *Source) readLimits(ctx context.Context, sess *session) {
	ids := []uint32{
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
		id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadData,
		id.Server_ServerCapabilities_MaxSubscriptionsPerSession,
		id.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription,
	}
	req := &ua.ReadRequest{}
	for _, n := range ids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewNumericNodeID(0, n), AttributeID: ua.AttributeIDValue})
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
	defer cancel()
	res, err := sess.c.Read(rctx, req)
	if err != nil || len(res.Results) != len(ids) {
		return
	}
	vals := make([]uint32, len(ids))
	for i, r := range res.Results {
		if r == nil || isBad(r.Status) || r.Value == nil {
			continue
		}
		if n, ok := numeric(r.Value); ok && n > 0 && n < 1<<32 {
			vals[i] = uint32(n)
		}
	}
	sess.limits = serverLimits{nodesPerRead: vals[0], nodesPerBrowse: vals[1], itemsPerCall: vals[2],
		historyNodes: vals[3], subsPerSession: vals[4], itemsPerSub: vals[5]}
}

func limit(cfg int, server uint32) int {
	if server > 0 && int(server) < cfg {
		return int(server)
	}
	return cfg
}

// resolve resolves configured NodeIds for this session (nsu= forms may map
// to another index after a server change) and resets per-session state.
func (s *Source) resolve(sess *session) error {
	var errs []error
	ns := sess.c.Namespaces()
	for _, it := range *s.items.Load() {
		it.sub, it.monitoredID = nil, 0
		if it.removed.Load() {
			continue
		}
		it.setState(itemPending, "")
		it.recreate.Store(false)
		if it.fixed != nil {
			it.nodeID = it.fixed
			continue
		}
		nid, err := it.ref.resolve(ns)
		if err != nil {
			it.nodeID = nil
			it.setState(itemBad, err.Error())
			errs = append(errs, err)
			continue
		}
		it.nodeID = nid
	}
	return errors.Join(errs...)
}

func (s *Source) itemsToCreate() []*item {
	var out []*item
	for _, it := range *s.items.Load() {
		if it.sub == nil && it.nodeID != nil && !it.removed.Load() && it.state.Load() == itemPending {
			out = append(out, it)
		}
	}
	return out
}

func (s *Source) itemsToRetry() []*item {
	var out []*item
	for _, it := range *s.items.Load() {
		if it.sub == nil && !it.removed.Load() && it.state.Load() == itemBad {
			if it.nodeID == nil && it.fixed == nil {
				continue // an unresolved namespace waits for the next session
			}
			if it.nodeID == nil {
				it.nodeID = it.fixed
			}
			out = append(out, it)
		}
	}
	return out
}

func (s *Source) countState(st int32) int {
	n := 0
	for _, it := range *s.items.Load() {
		if !it.removed.Load() && it.state.Load() == st {
			n++
		}
	}
	return n
}

func (s *Source) refreshItemMetrics() {
	var good, bad, pending int
	for _, it := range *s.items.Load() {
		if it.removed.Load() {
			continue
		}
		switch it.state.Load() {
		case itemGood:
			good++
		case itemBad:
			bad++
		default:
			pending++
		}
	}
	s.m.items.WithLabelValues("good").Set(float64(good))
	s.m.items.WithLabelValues("bad").Set(float64(bad))
	s.m.items.WithLabelValues("pending").Set(float64(pending))
}

func (s *Source) setSubscriptions(n int) { s.m.subscriptions.Set(float64(n)) }

// subscriptionFor returns a subscription with room, creating one if needed.
func (s *Source) subscriptionFor(ctx context.Context, sess *session, perSub int) (*subscription, error) {
	for _, sub := range sess.subs {
		if !sub.full && sub.n < perSub {
			return sub, nil
		}
	}
	if max := sess.limits.subsPerSession; max > 0 && len(sess.subs) >= int(max) {
		return nil, ua.StatusBadTooManySubscriptions
	}
	pub := s.cfg.Subscription.PublishingInterval
	// Keep-alives at least every keepalive_interval; the lifetime outlasts
	// three of them, as Part 4 asks.
	keepAlive := uint32(max(1, int64(s.cfg.Session.KeepaliveInterval/pub)))
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
	defer cancel()
	sub, err := sess.c.Subscribe(rctx, &opcua.SubscriptionParameters{
		Interval:          pub,
		MaxKeepAliveCount: keepAlive,
		LifetimeCount:     keepAlive * 6,
	}, sess.notifs)
	if err != nil {
		return nil, err
	}
	h := &subscription{sub: sub, revised: sub.RevisedPublishingInterval}
	s.log.Debug("subscription created", "id", sub.SubscriptionID, "publishing_interval", sub.RevisedPublishingInterval,
		"max_keepalive_count", sub.RevisedMaxKeepAliveCount, "lifetime_count", sub.RevisedLifetimeCount)
	if h.revised != pub {
		s.log.Info("server revised the publishing interval", "requested", pub, "revised", h.revised)
	}
	sess.subs = append(sess.subs, h)
	s.setSubscriptions(len(sess.subs))
	return h, nil
}

func (s *Source) itemRequest(it *item) *ua.MonitoredItemCreateRequest {
	if it.kind == kindEvent {
		req := opcua.NewMonitoredItemCreateRequestWithDefaults(it.nodeID, ua.AttributeIDEventNotifier, it.handle)
		req.RequestedParameters.SamplingInterval = 0
		req.RequestedParameters.QueueSize = it.opts.QueueSize
		req.RequestedParameters.Filter = ua.NewExtensionObject(it.em.filter())
		return req
	}
	req := opcua.NewMonitoredItemCreateRequestWithDefaults(it.nodeID, ua.AttributeIDValue, it.handle)
	req.RequestedParameters.SamplingInterval = float64(it.opts.SamplingInterval) / float64(time.Millisecond)
	req.RequestedParameters.QueueSize = it.opts.QueueSize
	req.RequestedParameters.DiscardOldest = true
	if db := it.opts.Deadband; db.Type != "" && !it.filterRejected {
		t := ua.DeadbandTypeAbsolute
		if db.Type == DeadbandPercent {
			t = ua.DeadbandTypePercent
		}
		req.RequestedParameters.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{
			Trigger: ua.DataChangeTriggerStatusValue, DeadbandType: uint32(t), DeadbandValue: db.Value,
		})
	}
	return req
}

// createItems creates monitored items in chunks no larger than the
// server's and the config's per-call limit, over as many subscriptions as
// the per-subscription limit needs. A node the server refuses is marked
// bad with the reason and retried later; the others are not affected.
func (s *Source) createItems(ctx context.Context, sess *session, items []*item) error {
	if len(items) == 0 {
		return nil
	}
	perCall := limit(s.cfg.Subscription.MaxItemsPerCall, sess.limits.itemsPerCall)
	perSub := limit(s.cfg.Subscription.MaxItemsPerSubscription, sess.limits.itemsPerSub)
	var revisedSlower, filterFallback int
	queue := items
	for len(queue) > 0 {
		sub, err := s.subscriptionFor(ctx, sess, perSub)
		if err != nil {
			for _, it := range queue {
				it.setState(itemBad, "no subscription: "+err.Error())
			}
			s.m.errors.WithLabelValues("subscribe").Inc()
			return fmt.Errorf("create subscription: %w", err)
		}
		n := min(perCall, perSub-sub.n, len(queue))
		chunk := queue[:n]
		queue = queue[n:]
		reqs := make([]*ua.MonitoredItemCreateRequest, n)
		for i, it := range chunk {
			reqs[i] = s.itemRequest(it)
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
		res, err := sub.sub.Monitor(rctx, ua.TimestampsToReturnBoth, reqs...)
		cancel()
		if err == nil && res.ResponseHeader != nil && isBad(res.ResponseHeader.ServiceResult) {
			err = res.ResponseHeader.ServiceResult
		}
		if err == nil && len(res.Results) != n {
			err = fmt.Errorf("server answered %d results for %d items", len(res.Results), n)
		}
		if err != nil {
			if errors.Is(err, ua.StatusBadTooManyMonitoredItems) && sub.n > 0 {
				sub.full = true
				queue = append(chunk, queue...)
				continue
			}
			for _, it := range chunk {
				it.setState(itemBad, "create monitored item: "+err.Error())
			}
			s.m.errors.WithLabelValues("subscribe").Inc()
			return fmt.Errorf("create monitored items: %w", err)
		}
		var retry []*item
		for i, r := range res.Results {
			it := chunk[i]
			switch st := r.StatusCode; {
			case !isBad(st):
				it.sub, it.monitoredID = sub, r.MonitoredItemID
				sub.n++
				it.setState(itemGood, "")
				if it.kind == kindValue && r.RevisedSamplingInterval > reqs[i].RequestedParameters.SamplingInterval+0.5 {
					revisedSlower++
				}
			case (st == ua.StatusBadMonitoredItemFilterUnsupported || st == ua.StatusBadFilterNotAllowed ||
				st == ua.StatusBadDeadbandFilterInvalid) && it.kind == kindValue && !it.filterRejected:
				// Deadband then happens in the agent only.
				it.filterRejected = true
				filterFallback++
				retry = append(retry, it)
			case st == ua.StatusBadTooManyMonitoredItems:
				sub.full = true
				retry = append(retry, it)
			default:
				reason := statusText(st)
				again := false
				if r := it.reason.Load(); r != nil && *r == reason {
					again = true
				}
				it.setState(itemBad, reason)
				s.m.errors.WithLabelValues("item").Inc()
				if again {
					s.log.Debug("server still refuses a monitored item", "node", it.key, "status", reason)
				} else {
					s.log.Warn("server refused a monitored item; retrying it every retry_bad_items", "node", it.key, "status", reason)
				}
			}
		}
		queue = append(retry, queue...)
	}
	if revisedSlower > 0 {
		s.log.Info("server revised sampling intervals upwards", "items", revisedSlower)
	}
	if filterFallback > 0 {
		s.log.Info("server does not take the deadband filter; applying it in the agent only", "items", filterFallback)
	}
	return nil
}

// takeOutUnknown removes items whose node the server reported unknown
// from their subscription; the retry timer creates them again.
func (s *Source) takeOutUnknown(ctx context.Context, sess *session) {
	bySub := map[*subscription][]uint32{}
	for _, it := range *s.items.Load() {
		if !it.recreate.Swap(false) || it.sub == nil {
			continue
		}
		bySub[it.sub] = append(bySub[it.sub], it.monitoredID)
		it.sub.n--
		it.sub, it.monitoredID = nil, 0
		s.m.errors.WithLabelValues("item").Inc()
		s.log.Warn("server reports a monitored node unknown; retrying it later", "node", it.key)
	}
	s.unmonitor(ctx, bySub)
}

func (s *Source) unmonitor(ctx context.Context, bySub map[*subscription][]uint32) {
	for sub, ids := range bySub {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Session.RequestTimeout)
		if _, err := sub.sub.Unmonitor(rctx, ids...); err != nil {
			s.log.Debug("delete monitored items failed", "error", err)
		}
		cancel()
	}
}
