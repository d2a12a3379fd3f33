// Package sdktest is the test harness for connector plugins: it runs a
// connector in the test's own process behind the real plugin protocol (gRPC
// on 127.0.0.1), and lets a test binary serve as a plugin binary for tests
// of the host side (crash, restart, checksum, log scrubbing). Only tests
// import it.
package sdktest

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// serve starts a gRPC server on 127.0.0.1:0 with register and returns a
// client connection to it; both end with the test.
func serve(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sdktest: listen: %v", err)
	}
	s := grpc.NewServer()
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("sdktest: dial: %v", err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		s.Stop()
		<-done
	})
	return cc
}

// ServeDestination runs impl in-process and returns the host's view of it
// over the plugin protocol, not yet configured.
func ServeDestination(t testing.TB, impl sdk.Destination) sdk.Destination {
	t.Helper()
	return sdk.NewDestinationClient(serve(t, func(s *grpc.Server) { sdk.RegisterDestinationServer(s, impl) }))
}

// ServeSource runs impl in-process and returns the host's view of it over
// the plugin protocol, not yet configured.
func ServeSource(t testing.TB, impl sdk.Source) sdk.Source {
	t.Helper()
	return sdk.NewSourceClient(serve(t, func(s *grpc.Server) { sdk.RegisterSourceServer(s, impl) }))
}

// Configurer is a destination or a source.
type Configurer interface {
	Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error)
}

// Configure configures c with the config section cfg, failing the test on
// an error.
func Configure(t testing.TB, c Configurer, name string, cfg map[string]any) sdk.ConfigureResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Configure(ctx, sdk.ConfigureRequest{Name: name, Config: cfg})
	if err != nil {
		t.Fatalf("sdktest: configure %s: %v", name, err)
	}
	return res
}

// EnvRole tells a test binary started as a plugin which connector to
// serve.
const EnvRole = "PLANTSYNC_SDKTEST_ROLE"

// RunPluginRole is called first in TestMain. When the test binary was
// started as a plugin (SelfPlugin), it runs the role's serve function (which
// does not return) and reports true; otherwise it reports false and the
// tests run as usual.
//
//	func TestMain(m *testing.M) {
//		if sdktest.RunPluginRole(map[string]func(){"webhook": serveWebhook}) {
//			return
//		}
//		goleak.VerifyTestMain(m)
//	}
func RunPluginRole(roles map[string]func()) bool {
	role := os.Getenv(EnvRole)
	if role == "" {
		return false
	}
	if fn, ok := roles[role]; ok {
		fn()
	} else {
		// The host then fails the handshake, naming this line.
		_, _ = os.Stderr.WriteString("sdktest: unknown plugin role " + role + "\n")
	}
	return true
}

// SelfPlugin makes the running test binary usable as a plugin binary that
// serves role: it sets the role in the environment the plugin process
// inherits (for the rest of the test) and returns the binary's path and
// SHA-256.
func SelfPlugin(t testing.TB, role string) (path, sum string) {
	t.Helper()
	path, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sum, err = sdk.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvRole, role)
	return path, sum
}
