// Package uatest runs an in-process gopcua server for the OPC UA source's
// tests and benchmark: loopback only, security None and Basic256Sha256
// (Sign, SignAndEncrypt), and an address space that tests change while
// clients are subscribed (machines added and removed, values set).
//
// gopcua's own node namespace does not lock a node's references, so
// changing them while a client browses is a data race; Namespace here is a
// small namespace of its own with proper locking. A fault proxy from
// internal/faultproxy fronts the server: gopcua cannot take a listener or
// hang up on clients itself, and the proxy lets tests cut the link.
package uatest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/plantsync/plantsync/internal/faultproxy"
)

// NamespaceURI is the test machines' namespace; it gets index 2.
const NamespaceURI = "urn:plantsync:uatest:machines"

// Root is the key of the folder every test node hangs under; it appears as
// Objects/Plant.
const Root = "Plant"

// NodeID is the NodeId text of a node key.
func NodeID(key string) string { return "ns=2;s=" + key }

// Identity is a server's certificate and key. Reuse one across restarts of
// a server, as a real server keeps its certificate.
type Identity struct {
	Cert   []byte // DER
	Key    *rsa.PrivateKey
	AppURI string
}

// NewIdentity makes a self-signed server certificate for 127.0.0.1.
func NewIdentity() (Identity, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Identity{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	if err != nil {
		return Identity{}, err
	}
	appURI := "urn:plantsync:uatest:server"
	u, _ := url.Parse(appURI)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "uatest server", Organization: []string{"plantsync tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Cert: der, Key: key, AppURI: appURI}, nil
}

// Options configure Start.
type Options struct {
	// Listen is the address clients dial; default 127.0.0.1:0. Give the
	// address of a stopped server to restart it on the same port.
	Listen   string
	Identity Identity
	// Namespace keeps the address space across a restart; nil makes a new
	// one with just the Plant folder.
	Namespace *Namespace
	Logger    *slog.Logger
}

// Server is a running test server.
type Server struct {
	srv      *server.Server
	ns       *Namespace
	proxy    *faultproxy.Proxy
	cancel   context.CancelFunc
	endpoint string
	once     sync.Once
	closeErr error
}

// Start runs a server. It retries when the loopback port reserved for
// gopcua is taken before gopcua binds it.
func Start(opts Options) (*Server, error) {
	if opts.Identity.Key == nil {
		return nil, errors.New("uatest: Options.Identity is required")
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ns := opts.Namespace
	if ns == nil {
		ns = NewNamespace()
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		backend, err := freePort()
		if err != nil {
			return nil, err
		}
		proxy, err := faultproxy.NewOn(opts.Listen, "127.0.0.1:"+strconv.Itoa(backend), opts.Logger)
		if err != nil {
			return nil, fmt.Errorf("uatest: listen %s: %w", opts.Listen, err)
		}
		_, portStr, _ := net.SplitHostPort(proxy.Addr())
		public, _ := strconv.Atoi(portStr)
		s, err := startGopcua(backend, public, opts, ns)
		if err != nil {
			_ = proxy.Close()
			lastErr = err
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, err
		}
		s.proxy = proxy
		s.endpoint = "opc.tcp://127.0.0.1:" + portStr
		return s, nil
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startGopcua(backend, public int, opts Options, ns *Namespace) (*Server, error) {
	srv := server.New(
		server.EndPoint("127.0.0.1", backend),
		server.EndPoint("127.0.0.1", public),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSign),
		server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.Certificate(opts.Identity.Cert),
		server.PrivateKey(opts.Identity.Key),
		server.ServerName("uatest"),
		server.SetLogger(printfLogger{opts.Logger}),
	)
	server.NewNodeNameSpace(srv, opts.Identity.AppURI)
	srv.AddNamespace(ns)
	if ns.ID() != 2 {
		return nil, fmt.Errorf("uatest: machine namespace got index %d, want 2", ns.ID())
	}
	ns.attach(srv)
	root, err := srv.Namespace(0)
	if err != nil {
		return nil, err
	}
	root.Objects().AddRef(ns.Node(ua.MustParseNodeID(NodeID(Root))), id.Organizes, true)
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	return &Server{srv: srv, ns: ns, cancel: cancel}, nil
}

// Endpoint is the URL clients dial.
func (s *Server) Endpoint() string { return s.endpoint }

// Addr is the host:port clients dial; pass it as Options.Listen to restart
// the server on the same port.
func (s *Server) Addr() string { return strings.TrimPrefix(s.endpoint, "opc.tcp://") }

// Namespace is the address space of the test machines.
func (s *Server) Namespace() *Namespace { return s.ns }

// Proxy is the fault proxy in front of the server (Cut, Stall, ...).
func (s *Server) Proxy() *faultproxy.Proxy { return s.proxy }

// Close hangs up on every client, then stops gopcua and the subscriptions
// it would leave running. It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.ns.detach(s.srv)
		_ = s.proxy.Close()
		err := s.srv.Close()
		s.cancel()
		if subs := s.srv.SubscriptionService; subs != nil {
			subs.Mu.Lock()
			ids := make([]uint32, 0, len(subs.Subs))
			for id := range subs.Subs {
				ids = append(ids, id)
			}
			subs.Mu.Unlock()
			for _, id := range ids {
				subs.DeleteSubscription(id)
			}
		}
		s.closeErr = err
	})
	return s.closeErr
}

// Namespace is a locked, changeable address space at index 2.
type Namespace struct {
	mu    sync.RWMutex
	nodes map[string]*entry
	id    uint16
	srv   atomic.Pointer[server.Server]
}

type entry struct {
	key      string
	name     string
	class    ua.NodeClass
	parent   string
	children []string
	value    atomic.Pointer[ua.DataValue]
	node     *server.Node
}

// NewNamespace makes an address space holding the Plant folder.
func NewNamespace() *Namespace {
	n := &Namespace{nodes: map[string]*entry{}}
	n.nodes[Root] = n.newEntry(Root, Root, "", ua.NodeClassObject)
	return n
}

func (n *Namespace) attach(srv *server.Server) { n.srv.Store(srv) }

func (n *Namespace) detach(srv *server.Server) { n.srv.CompareAndSwap(srv, nil) }

func (n *Namespace) newEntry(key, name, parent string, class ua.NodeClass) *entry {
	e := &entry{key: key, name: name, class: class, parent: parent}
	nid := ua.NewStringNodeID(2, key)
	attrs := map[ua.AttributeID]*ua.DataValue{
		ua.AttributeIDNodeClass:   server.DataValueFromValue(uint32(class)),
		ua.AttributeIDBrowseName:  server.DataValueFromValue(&ua.QualifiedName{NamespaceIndex: 2, Name: name}),
		ua.AttributeIDDisplayName: server.DataValueFromValue(&ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: name}),
	}
	e.node = server.NewNode(nid, attrs, nil, nil)
	return e
}

// AddFolder adds an object under parent (a key; Root for the top).
func (n *Namespace) AddFolder(parent, key, name string) error {
	return n.add(parent, key, name, ua.NodeClassObject, nil)
}

// AddVariable adds a variable with an initial value.
func (n *Namespace) AddVariable(parent, key, name string, v any) error {
	return n.add(parent, key, name, ua.NodeClassVariable, v)
}

func (n *Namespace) add(parent, key, name string, class ua.NodeClass, v any) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.nodes[parent]
	if p == nil {
		return fmt.Errorf("uatest: parent %q does not exist", parent)
	}
	if n.nodes[key] != nil {
		return fmt.Errorf("uatest: node %q exists", key)
	}
	e := n.newEntry(key, name, parent, class)
	if class == ua.NodeClassVariable {
		e.value.Store(dataValue(v, time.Now()))
	}
	n.nodes[key] = e
	p.children = append(p.children, key)
	return nil
}

// Set gives a variable a new value with source and server timestamps of
// now and notifies subscribers.
func (n *Namespace) Set(key string, v any) error {
	return n.SetAt(key, v, time.Now())
}

// SetAt is Set with a given source timestamp.
func (n *Namespace) SetAt(key string, v any, ts time.Time) error {
	n.mu.RLock()
	e := n.nodes[key]
	n.mu.RUnlock()
	if e == nil || e.class != ua.NodeClassVariable {
		return fmt.Errorf("uatest: no variable %q", key)
	}
	e.value.Store(dataValue(v, ts))
	if srv := n.srv.Load(); srv != nil {
		srv.ChangeNotification(ua.NewStringNodeID(2, key))
	}
	return nil
}

// Remove deletes a node and everything under it; subscribers of removed
// variables get BadNodeIdUnknown.
func (n *Namespace) Remove(key string) {
	n.mu.Lock()
	e := n.nodes[key]
	if e == nil {
		n.mu.Unlock()
		return
	}
	var gone []string
	var walk func(k string)
	walk = func(k string) {
		x := n.nodes[k]
		if x == nil {
			return
		}
		for _, c := range x.children {
			walk(c)
		}
		delete(n.nodes, k)
		gone = append(gone, k)
	}
	walk(key)
	if p := n.nodes[e.parent]; p != nil {
		kids := p.children[:0:0]
		for _, c := range p.children {
			if c != key {
				kids = append(kids, c)
			}
		}
		p.children = kids
	}
	n.mu.Unlock()
	if srv := n.srv.Load(); srv != nil {
		for _, k := range gone {
			srv.ChangeNotification(ua.NewStringNodeID(2, k))
		}
	}
}

func dataValue(v any, ts time.Time) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		SourceTimestamp: ts,
		ServerTimestamp: time.Now(),
	}
}

func (n *Namespace) lookup(nid *ua.NodeID) *entry {
	if nid == nil || nid.Namespace() != n.id || nid.Type() != ua.NodeIDTypeString {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.nodes[nid.StringID()]
}

// --- server.NameSpace ------------------------------------------------------

// Name implements server.NameSpace.
func (n *Namespace) Name() string { return NamespaceURI }

// AddNode implements server.NameSpace; nodes are added with AddFolder and
// AddVariable instead.
func (n *Namespace) AddNode(nd *server.Node) *server.Node { return nd }

// Node implements server.NameSpace.
func (n *Namespace) Node(nid *ua.NodeID) *server.Node {
	if e := n.lookup(nid); e != nil {
		return e.node
	}
	return nil
}

// Objects implements server.NameSpace.
func (n *Namespace) Objects() *server.Node { return nil }

// Root implements server.NameSpace.
func (n *Namespace) Root() *server.Node { return nil }

// ID implements server.NameSpace.
func (n *Namespace) ID() uint16 { return n.id }

// SetID implements server.NameSpace.
func (n *Namespace) SetID(id uint16) { n.id = id }

// Browse implements server.NameSpace: forward hierarchical references.
func (n *Namespace) Browse(bd *ua.BrowseDescription) *ua.BrowseResult {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if bd.NodeID == nil || bd.NodeID.Type() != ua.NodeIDTypeString {
		return &ua.BrowseResult{StatusCode: ua.StatusBadNodeIDUnknown}
	}
	e := n.nodes[bd.NodeID.StringID()]
	if e == nil {
		return &ua.BrowseResult{StatusCode: ua.StatusBadNodeIDUnknown}
	}
	refs := []*ua.ReferenceDescription{}
	if bd.BrowseDirection != ua.BrowseDirectionInverse {
		for _, k := range e.children {
			c := n.nodes[k]
			if c == nil || bd.NodeClassMask != 0 && bd.NodeClassMask&uint32(c.class) == 0 {
				continue
			}
			refType, typeDef := uint32(id.Organizes), uint32(id.FolderType)
			if c.class == ua.NodeClassVariable {
				refType, typeDef = id.HasComponent, id.BaseDataVariableType
			}
			refs = append(refs, &ua.ReferenceDescription{
				ReferenceTypeID: ua.NewNumericNodeID(0, refType),
				IsForward:       true,
				NodeID:          ua.NewExpandedNodeID(ua.NewStringNodeID(2, c.key), "", 0),
				BrowseName:      &ua.QualifiedName{NamespaceIndex: 2, Name: c.name},
				DisplayName:     &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: c.name},
				NodeClass:       c.class,
				TypeDefinition:  ua.NewNumericExpandedNodeID(0, typeDef),
			})
		}
	}
	return &ua.BrowseResult{StatusCode: ua.StatusGood, References: refs}
}

// Attribute implements server.NameSpace.
func (n *Namespace) Attribute(nid *ua.NodeID, attr ua.AttributeID) *ua.DataValue {
	e := n.lookup(nid)
	if e == nil {
		return &ua.DataValue{EncodingMask: ua.DataValueServerTimestamp | ua.DataValueStatusCode, ServerTimestamp: time.Now(), Status: ua.StatusBadNodeIDUnknown}
	}
	var v any
	switch attr {
	case ua.AttributeIDValue:
		if e.class != ua.NodeClassVariable {
			return badAttr()
		}
		return e.value.Load()
	case ua.AttributeIDNodeID:
		v = ua.NewStringNodeID(2, e.key)
	case ua.AttributeIDNodeClass:
		v = int32(e.class)
	case ua.AttributeIDBrowseName:
		v = &ua.QualifiedName{NamespaceIndex: 2, Name: e.name}
	case ua.AttributeIDDisplayName:
		v = &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: e.name}
	case ua.AttributeIDDataType:
		if e.class != ua.NodeClassVariable {
			return badAttr()
		}
		v = ua.NewNumericNodeID(0, uint32(e.value.Load().Value.Type()))
	case ua.AttributeIDAccessLevel, ua.AttributeIDUserAccessLevel:
		if e.class != ua.NodeClassVariable {
			return badAttr()
		}
		v = byte(ua.AccessLevelTypeCurrentRead)
	case ua.AttributeIDHistorizing:
		v = false
	case ua.AttributeIDValueRank:
		v = int32(-1)
	case ua.AttributeIDEventNotifier:
		v = byte(0)
	default:
		return badAttr()
	}
	return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueServerTimestamp, Value: ua.MustVariant(v), ServerTimestamp: time.Now()}
}

func badAttr() *ua.DataValue {
	return &ua.DataValue{EncodingMask: ua.DataValueServerTimestamp | ua.DataValueStatusCode, ServerTimestamp: time.Now(), Status: ua.StatusBadAttributeIDInvalid}
}

// SetAttribute implements server.NameSpace: tests change values with Set.
func (n *Namespace) SetAttribute(*ua.NodeID, ua.AttributeID, *ua.DataValue) ua.StatusCode {
	return ua.StatusBadNotWritable
}

// printfLogger adapts gopcua's printf-style logger to slog at debug level:
// gopcua reports routine events (a client hanging up) as errors.
type printfLogger struct{ l *slog.Logger }

func (p printfLogger) Debug(msg string, args ...any) { p.log(msg, args) }
func (p printfLogger) Info(msg string, args ...any)  { p.log(msg, args) }
func (p printfLogger) Warn(msg string, args ...any)  { p.log(msg, args) }
func (p printfLogger) Error(msg string, args ...any) { p.log(msg, args) }

func (p printfLogger) log(format string, args []any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "gopcua-server")
	}
}
