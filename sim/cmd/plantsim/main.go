// Command plantsim runs a simulated plant: an OPC UA server with machines
// and an MQTT broker carrying MES messages, for `make run` and for trying
// the agent without hardware. See sim/plantsim/README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/plantsync/plantsync/internal/buildinfo"
	"github.com/plantsync/plantsync/sim/plantsim"
)

const shutdownTimeout = 15 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it returns the exit code and stops when
// ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plantsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: plantsim [flags]\n\nSimulates a plant: an OPC UA server with machines and an MQTT broker with MES messages.\nFlags override the config file.\n\n")
		fs.PrintDefaults()
	}
	def := plantsim.NewDefaultConfig()
	var (
		configFile  = fs.String("config", "", "YAML config `file` (optional; see sim/plantsim/README.md)")
		plant       = fs.String("plant", def.Plant, "plant id used in MQTT topics and message ids")
		opcuaListen = fs.String("opcua-listen", def.OPCUAListen, "OPC UA server `host:port` (port 0 picks a free one)")
		mqttListen  = fs.String("mqtt-listen", def.MQTTListen, "MQTT broker `host:port` (port 0 picks a free one)")
		mesInterval = fs.Duration("mes-interval", def.MESInterval, "time between MES messages (0 turns them off)")
		seed        = fs.Int64("seed", def.Seed, "seed for repeatable machine values and MES messages")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn or error")
		version     = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "plantsim: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.String("plantsim"))
		return 0
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "plantsim: -log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// gopcua's server prints to the standard logger; keep its chatter at
	// debug level with the rest of its output.
	log.SetFlags(0)
	log.SetOutput(debugWriter{logger.With("component", "plantsim.opcua.gopcua")})

	cfg := def
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			fmt.Fprintf(stderr, "plantsim: %v\n", err)
			return 1
		}
		if cfg, err = plantsim.ParseConfig(data); err != nil {
			fmt.Fprintf(stderr, "plantsim: %s: %v\n", *configFile, err)
			return 1
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "plant":
			cfg.Plant = *plant
		case "opcua-listen":
			cfg.OPCUAListen = *opcuaListen
		case "mqtt-listen":
			cfg.MQTTListen = *mqttListen
		case "mes-interval":
			cfg.MESInterval = *mesInterval
		case "seed":
			cfg.Seed = *seed
		}
	})

	sim, err := plantsim.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "plantsim: %v\n", err)
		return 1
	}
	if err := sim.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "plantsim: %v\n", err)
		return 1
	}
	// Scripts and the demo runner read these two lines to find the peers.
	fmt.Fprintf(stdout, "opcua: %s\nmqtt: tcp://%s\n", sim.OPCUAEndpoint(), sim.MQTTAddr())

	<-ctx.Done()
	logger.Info("shutting down", "reason", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := sim.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "plantsim: %v\n", err)
		return 1
	}
	return 0
}

// debugWriter turns standard-logger lines into slog debug records.
type debugWriter struct{ l *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			w.l.Debug(line)
		}
	}
	return len(p), nil
}
