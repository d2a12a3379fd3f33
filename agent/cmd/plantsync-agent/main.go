// Command plantsync-agent collects plant events, buffers them durably and
// streams them to the regional hub.
//
//	plantsync-agent run -config FILE
//	plantsync-agent validate -config FILE
//	plantsync-agent pki csr -id ID -key FILE -out FILE
//	plantsync-agent version
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/agent/source/mqtt"
	"github.com/plantsync/plantsync/agent/source/opcua"
	"github.com/plantsync/plantsync/internal/buildinfo"
	"github.com/plantsync/plantsync/internal/cli"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
)

const usage = `usage:
  plantsync-agent run -config FILE        run the agent
  plantsync-agent validate -config FILE   check a config and exit (non-zero lists every problem)
  plantsync-agent pki csr -id ID -key FILE -out FILE
                                          make a key (if missing) and a certificate signing request for the hub
  plantsync-agent status [-config FILE | -addr HOST:PORT]
                                          show the running agent's status (buffer, uplink, sources)
  plantsync-agent opcua trust -endpoint URL [-state-dir DIR]
                                          fetch, show and trust an OPC UA server certificate
  plantsync-agent opcua browse -endpoint URL [-node ID] [-depth N]
                                          print an OPC UA address space to write the config from
  plantsync-agent mqtt quarantine list|replay [-source NAME] [-config FILE | -addr HOST:PORT]
                                          show or re-process quarantined MQTT messages (running agent)
  plantsync-agent version                 print version, commit and build date
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run", "validate":
		fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", "/etc/plantsync-agent/agent.yaml", "config file")
		profile := fs.String("cpuprofile", "", "run only: write a Go CPU profile of the whole run to this file (diagnostics; `go tool pprof` reads it)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := agent.LoadConfig(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if args[0] == "validate" {
			fmt.Fprintf(stdout, "%s: ok (%d sources)\n", *path, len(cfg.Sources))
			return 0
		}
		log := cli.Logger(stderr, cfg.Log.Level, cfg.Log.Format).With("program", "plantsync-agent")
		stopProfile, err := cli.StartCPUProfile(*profile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer stopProfile()
		a, err := agent.New(cfg, log)
		if err == nil {
			a.SetConfigFile(*path) // SIGHUP re-reads it
			err = cli.Run(a, log, 30*time.Second)
		}
		if err != nil {
			log.Error("agent failed", "error", err)
			return 1
		}
		return 0
	case "pki":
		if len(args) < 2 || args[1] != "csr" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		fs := flag.NewFlagSet("pki csr", flag.ContinueOnError)
		fs.SetOutput(stderr)
		id := fs.String("id", "", "agent id (the hub decides the identity it signs)")
		key := fs.String("key", "", "private key file (created 0600 if missing; it never leaves this server)")
		out := fs.String("out", "", "where to write the CSR (PEM)")
		if err := fs.Parse(args[2:]); err != nil {
			return 2
		}
		if *id == "" || *key == "" || *out == "" {
			fmt.Fprintln(stderr, "pki csr: -id, -key and -out are required")
			return 2
		}
		csr, err := pki.NewCSR(*key, *id)
		if err == nil {
			err = pki.WriteCertFile(*out, csr)
		}
		if err != nil {
			fmt.Fprintln(stderr, "pki csr:", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s; on the hub run: plantsync-hub pki issue-agent -id %s -plant PLANT -csr %s -out DIR\n", *out, *id, *out)
		return 0
	case "status":
		return status(args[1:], stdout, stderr)
	case "mqtt":
		return mqtt.RunCLI(args[1:], stdout, stderr)
	case "opcua":
		return opcua.RunCLI(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, buildinfo.String("plantsync-agent"))
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
	return 2
}

// status asks the running agent over its loopback admin API: the bbolt
// files are locked by the running agent, so the CLI never opens them.
func status(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/plantsync-agent/agent.yaml", "config file (to find metrics.listen)")
	addr := fs.String("addr", "", "admin address, overrides -config")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" {
		cfg := agent.NewDefaultConfig()
		if err := config.Load(*path, &cfg); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		*addr = cfg.Metrics.Listen
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + *addr + "/api/v1/status")
	if err != nil {
		fmt.Fprintf(stderr, "status: is the agent running? %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		fmt.Fprintln(stderr, "status:", err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
