package sdk

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pluginv1 "github.com/plantsync/plantsync/proto/plantsync/plugin/v1"
)

// ProtocolVersion is the version of proto/plantsync/plugin/v1 this SDK
// speaks. A host refuses a plugin of another version with an error naming
// both, instead of failing on the first call.
const ProtocolVersion = 1

// Handshake is what host and plugin check before they talk. The magic
// cookie only keeps a plugin binary from being run by hand by mistake; it
// is not a security measure (checksum pinning and AutoMTLS are).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PLANTSYNC_PLUGIN",
	MagicCookieValue: "9b3f0c2e-plantsync-connector",
}

// The plugin kinds a binary can serve (go-plugin dispense names).
const (
	KindDestination = "destination"
	KindSource      = "source"
)

// Environment the host sets for the plugin process.
const (
	// EnvLogLevel is the lowest level the host logs (debug, info, warn,
	// error); NewLogger drops what is below it.
	EnvLogLevel = "PLANTSYNC_PLUGIN_LOG_LEVEL"
	// EnvName is the configured instance name.
	EnvName = "PLANTSYNC_PLUGIN_NAME"
)

type destinationPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Destination
}

func (p *destinationPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterDestinationServer(s, &destinationServer{impl: p.impl})
	return nil
}

func (p *destinationPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &destinationClient{c: pluginv1.NewDestinationClient(c)}, nil
}

type sourcePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Source
}

func (p *sourcePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterSourceServer(s, &sourceServer{impl: p.impl})
	return nil
}

func (p *sourcePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &sourceClient{c: pluginv1.NewSourceClient(c)}, nil
}

// hostPlugins is what a host can dispense, per protocol version.
func hostPlugins() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {KindDestination: &destinationPlugin{}, KindSource: &sourcePlugin{}},
	}
}

// ServeDestination runs a destination connector as a plugin process. It is
// called from the plugin's main and returns only when the host ends the
// plugin (go-plugin then exits the process).
func ServeDestination(impl Destination) {
	serve(plugin.PluginSet{KindDestination: &destinationPlugin{impl: impl}})
}

// ServeSource runs a source plugin process; see ServeDestination.
func ServeSource(impl Source) {
	serve(plugin.PluginSet{KindSource: &sourcePlugin{impl: impl}})
}

func serve(set plugin.PluginSet) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: set},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage))...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Level:      hclog.LevelFromString(levelName(pluginLevel())),
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
}

// NewLogger returns the logger a plugin logs with: JSON lines on the
// process's stderr in the form the host reads (hclog's), at the level the
// host asked for. The host logs each line under the plugin's name with
// secrets scrubbed. Call it before Serve*, which redirects os.Stderr.
func NewLogger() *slog.Logger {
	return newPluginLogger(os.Stderr, pluginLevel())
}

func newPluginLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				// The exact layout go-plugin parses; anything else makes it
				// log the whole line as a debug message.
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				lv, _ := a.Value.Any().(slog.Level)
				return slog.String("@level", levelName(lv))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

func pluginLevel() slog.Level {
	switch strings.ToLower(os.Getenv(EnvLogLevel)) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

// hostLevel is the lowest level logger emits, passed to the plugin so it
// does not format lines the host drops.
func hostLevel(l *slog.Logger) slog.Level {
	for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if l.Enabled(context.Background(), lv) {
			return lv
		}
	}
	return slog.LevelError
}

// startTimeoutDefault bounds a plugin's start (process up, handshake line).
const startTimeoutDefault = 10 * time.Second
