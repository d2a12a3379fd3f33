package plantsim

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
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/plantsync/plantsync/internal/buildinfo"
)

// NamespaceURI is the OPC UA namespace of the simulated machines. The server
// registers it at index 2 (index 1 is the server's own application URI), so
// NodeIds read ns=2;s=L1.M1.State.
const NamespaceURI = "urn:plantsync:plantsim:machines"

const namespaceIndex = 2

// How many times Start retries when the loopback port it reserved for
// gopcua was taken before gopcua bound it.
const listenAttempts = 5

// ErrOPCUA marks failures to build or start the in-process OPC UA server.
var ErrOPCUA = errors.New("plantsim opc ua server")

// serverIdentity is the certificate and key the OPC UA server presents on
// Basic256Sha256 endpoints. It is generated in memory at New and never
// written to disk.
type serverIdentity struct {
	appURI string
	cert   []byte // DER
	key    *rsa.PrivateKey
}

func newServerIdentity(plant string) (serverIdentity, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return serverIdentity{}, fmt.Errorf("%w: generate key: %w", ErrOPCUA, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return serverIdentity{}, fmt.Errorf("%w: certificate serial: %w", ErrOPCUA, err)
	}
	appURI := "urn:plantsync:plantsim:" + plant
	uri, err := url.Parse(appURI)
	if err != nil {
		return serverIdentity{}, fmt.Errorf("%w: application uri: %w", ErrOPCUA, err)
	}
	dns := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "plantsim " + plant, Organization: []string{"plantsync"}},
		NotBefore:    now.Add(-time.Hour), // tolerate clock skew between peers
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              dns,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return serverIdentity{}, fmt.Errorf("%w: create certificate: %w", ErrOPCUA, err)
	}
	return serverIdentity{appURI: appURI, cert: der, key: key}, nil
}

// uaServer is a running gopcua server behind its front door, and what
// Shutdown needs to stop both.
type uaServer struct {
	srv      *server.Server
	ns       *server.NodeNameSpace
	cancel   context.CancelFunc
	front    *frontDoor
	endpoint string // what clients dial: opc.tcp://host:port
}

// startOPCUA binds the configured address itself and runs gopcua on a
// private loopback port behind it (see frontDoor). gopcua advertises, and
// answers GetEndpoints for, exactly the URLs it is configured with, so it
// is told the public port as well as the private one it binds.
func startOPCUA(cfg Config, ident serverIdentity, p *plant, logger *slog.Logger) (*uaServer, error) {
	front, err := listenFrontDoor(cfg.OPCUAListen, logger.With("component", "plantsim.opcua"))
	if err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", ErrOPCUA, cfg.OPCUAListen, err)
	}
	host, _, _ := net.SplitHostPort(cfg.OPCUAListen)
	_, portStr, _ := net.SplitHostPort(front.ln.Addr().String())
	port, _ := strconv.Atoi(portStr)
	hosts := advertisedHosts(host)

	for attempt := 1; ; attempt++ {
		backend, err := reserveLoopbackPort()
		if err != nil {
			front.close()
			return nil, fmt.Errorf("%w: reserve loopback port: %w", ErrOPCUA, err)
		}
		u, err := startGopcua(cfg, backend, hosts, port, ident, p, logger)
		if err == nil {
			u.front = front
			u.endpoint = "opc.tcp://" + net.JoinHostPort(hosts[0], portStr)
			front.serve(net.JoinHostPort("127.0.0.1", strconv.Itoa(backend)))
			return u, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == listenAttempts {
			front.close()
			return nil, err
		}
		logger.Debug("reserved opc ua backend port was taken, retrying", "port", backend, "attempt", attempt)
	}
}

// advertisedHosts lists the host names clients may use in the endpoint URL;
// the first is the one OPCUAEndpoint reports.
func advertisedHosts(host string) []string {
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.IsUnspecified():
		hosts := []string{"127.0.0.1", "localhost"}
		if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
			hosts = append(hosts, h)
		}
		return hosts
	case ip != nil && ip.IsLoopback():
		return []string{host, "localhost"}
	case host == "localhost":
		return []string{host, "127.0.0.1"}
	default:
		return []string{host}
	}
}

// reserveLoopbackPort finds a free port for gopcua, which can neither take
// a listener nor report the port it bound.
func reserveLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

func startGopcua(cfg Config, backend int, hosts []string, port int, ident serverIdentity, p *plant, logger *slog.Logger) (*uaServer, error) {
	opts := []server.Option{
		// gopcua binds the first endpoint.
		server.EndPoint("127.0.0.1", backend),
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if strings.Contains(h, ":") {
			h = "[" + h + "]" // EndPoint formats host:port itself
		}
		if !seen[h] {
			seen[h] = true
			opts = append(opts, server.EndPoint(h, port))
		}
	}
	opts = append(opts,
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSign),
		server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.Certificate(ident.cert),
		server.PrivateKey(ident.key),
		server.ServerName("plantsim "+cfg.Plant),
		server.ManufacturerName("plantsync"),
		server.ProductName("plantsync plant simulator"),
		server.SoftwareVersion(buildinfo.Version),
		server.SetLogger(uaLogger{l: logger.With("component", "plantsim.opcua.gopcua")}),
	)
	srv := server.New(opts...)
	// Built before Start: gopcua does not lock a node's references, so they
	// must not change while a client can browse.
	ns, err := buildAddressSpace(srv, ident.appURI, p)
	if err != nil {
		return nil, err
	}

	// The server outlives Start's context; shutdown cancels this one.
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("%w: listen on 127.0.0.1:%d: %w", ErrOPCUA, backend, err)
	}
	return &uaServer{srv: srv, ns: ns, cancel: cancel}, nil
}

// buildAddressSpace adds Objects/<line>/<machine>/<variable> under ns=2. The
// nodes are built bottom-up so that each folder's references are complete
// before a client can browse it.
func buildAddressSpace(srv *server.Server, appURI string, p *plant) (*server.NodeNameSpace, error) {
	// Index 1 is conventionally the server's own namespace; registering it
	// first puts the machines at the documented index 2.
	server.NewNodeNameSpace(srv, appURI)
	ns := server.NewNodeNameSpace(srv, NamespaceURI)
	if ns.ID() != namespaceIndex {
		return nil, fmt.Errorf("%w: machine namespace got index %d, want %d", ErrOPCUA, ns.ID(), namespaceIndex)
	}
	root, err := srv.Namespace(0)
	if err != nil {
		return nil, fmt.Errorf("%w: namespace 0: %w", ErrOPCUA, err)
	}
	objects := root.Objects()
	if objects == nil {
		return nil, fmt.Errorf("%w: namespace 0 has no Objects folder", ErrOPCUA)
	}

	var (
		lineOrder []string
		lineRefs  = map[string][]*ua.ReferenceDescription{}
	)
	for _, m := range p.machines {
		if _, ok := lineRefs[m.line]; !ok {
			lineOrder = append(lineOrder, m.line)
			lineRefs[m.line] = nil
		}
		vars := []*server.Node{
			variableNode(m.key()+"."+VarState, VarState, id.String, m.stateValue),
			variableNode(m.key()+"."+VarGoodCount, VarGoodCount, id.UInt32, m.countValue),
			variableNode(m.key()+"."+VarTemperature, VarTemperature, id.Double, m.tempValue),
		}
		var refs []*ua.ReferenceDescription
		for _, v := range vars {
			ns.AddNode(v)
			refs = append(refs, reference(id.HasComponent, v, ua.NodeClassVariable, id.BaseDataVariableType))
		}
		name := "M" + strconv.Itoa(m.index)
		mf := ns.AddNode(folderNode(m.key(), name, "Press"+strconv.Itoa(m.index), refs))
		lineRefs[m.line] = append(lineRefs[m.line], reference(id.Organizes, mf, ua.NodeClassObject, id.FolderType))
	}
	for i, line := range lineOrder {
		lf := ns.AddNode(folderNode(line, line, "Line"+strconv.Itoa(i+1), lineRefs[line]))
		objects.AddRef(lf, id.Organizes, true)
	}
	return ns, nil
}

func variableNode(key, name string, dataType uint32, value server.ValueFunc) *server.Node {
	nid := ua.NewStringNodeID(namespaceIndex, key)
	return server.NewNode(nid, map[ua.AttributeID]*ua.DataValue{
		ua.AttributeIDNodeClass:       server.DataValueFromValue(uint32(ua.NodeClassVariable)),
		ua.AttributeIDBrowseName:      server.DataValueFromValue(&ua.QualifiedName{NamespaceIndex: namespaceIndex, Name: name}),
		ua.AttributeIDDisplayName:     server.DataValueFromValue(localized(name)),
		ua.AttributeIDDescription:     server.DataValueFromValue(localized("")),
		ua.AttributeIDDataType:        server.DataValueFromValue(ua.NewNumericExpandedNodeID(0, dataType)),
		ua.AttributeIDValueRank:       server.DataValueFromValue(int32(-1)), // scalar
		ua.AttributeIDAccessLevel:     server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead)),
		ua.AttributeIDUserAccessLevel: server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead)),
	}, []*ua.ReferenceDescription{
		typeDefinition(id.BaseDataVariableType),
	}, value)
}

func folderNode(key, browseName, displayName string, children []*ua.ReferenceDescription) *server.Node {
	nid := ua.NewStringNodeID(namespaceIndex, key)
	refs := append([]*ua.ReferenceDescription{typeDefinition(id.FolderType)}, children...)
	return server.NewNode(nid, map[ua.AttributeID]*ua.DataValue{
		ua.AttributeIDNodeClass:     server.DataValueFromValue(uint32(ua.NodeClassObject)),
		ua.AttributeIDBrowseName:    server.DataValueFromValue(&ua.QualifiedName{NamespaceIndex: namespaceIndex, Name: browseName}),
		ua.AttributeIDDisplayName:   server.DataValueFromValue(localized(displayName)),
		ua.AttributeIDDescription:   server.DataValueFromValue(localized("")),
		ua.AttributeIDEventNotifier: server.DataValueFromValue(byte(0)),
	}, refs, nil)
}

func reference(refType uint32, target *server.Node, class ua.NodeClass, typeDef uint32) *ua.ReferenceDescription {
	return &ua.ReferenceDescription{
		ReferenceTypeID: ua.NewNumericNodeID(0, refType),
		IsForward:       true,
		NodeID:          ua.NewExpandedNodeID(target.ID(), "", 0),
		BrowseName:      target.BrowseName(),
		DisplayName:     target.DisplayName(),
		NodeClass:       class,
		TypeDefinition:  ua.NewNumericExpandedNodeID(0, typeDef),
	}
}

func typeDefinition(typeDef uint32) *ua.ReferenceDescription {
	return &ua.ReferenceDescription{
		ReferenceTypeID: ua.NewNumericNodeID(0, id.HasTypeDefinition),
		IsForward:       true,
		NodeID:          ua.NewNumericExpandedNodeID(0, typeDef),
		BrowseName:      &ua.QualifiedName{},
		DisplayName:     localized(""),
		NodeClass:       ua.NodeClassObjectType,
		TypeDefinition:  ua.NewNumericExpandedNodeID(0, 0),
	}
}

func localized(text string) *ua.LocalizedText {
	lt := &ua.LocalizedText{Text: text}
	lt.UpdateMask()
	return lt
}

// Value functions: gopcua reads values through these on its own goroutines,
// so they only load atomics (setting node attributes would race).

func (m *machine) stateValue() *ua.DataValue {
	return dataValue(m.stateName(), m.stateAt.Load())
}

func (m *machine) countValue() *ua.DataValue {
	return dataValue(m.count(), m.countAt.Load())
}

func (m *machine) tempValue() *ua.DataValue {
	return dataValue(m.temp(), m.tempAt.Load())
}

func dataValue(v any, sourceNanos int64) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		SourceTimestamp: time.Unix(0, sourceNanos),
		ServerTimestamp: time.Now(),
	}
}

// shutdown hangs up on every client, then closes the server and the
// subscriptions it would leave running. The order matters: gopcua's Close
// waits for each client's connection to end, and a connection that still
// delivers a message after the server context is cancelled blocks forever.
func (u *uaServer) shutdown() error {
	u.front.close()
	err := u.srv.Close()
	u.cancel()
	// gopcua stops a subscription only when its client deletes it or its
	// lifetime runs out; Close does neither.
	if subs := u.srv.SubscriptionService; subs != nil {
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
	u.front.wait()
	if err != nil {
		return fmt.Errorf("%w: close: %w", ErrOPCUA, err)
	}
	return nil
}

// uaLogger adapts gopcua's printf-style logger to slog. gopcua reports
// routine events as errors (a client hanging up, duplicate reference types
// while importing its own node set), so everything it says is debug detail
// here; its original level is kept as an attribute.
type uaLogger struct{ l *slog.Logger }

func (u uaLogger) Debug(msg string, args ...any) { u.log("debug", msg, args) }
func (u uaLogger) Info(msg string, args ...any)  { u.log("info", msg, args) }
func (u uaLogger) Warn(msg string, args ...any)  { u.log("warn", msg, args) }
func (u uaLogger) Error(msg string, args ...any) { u.log("error", msg, args) }

func (u uaLogger) log(level, format string, args []any) {
	if !u.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	u.l.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "gopcua_level", level)
}
