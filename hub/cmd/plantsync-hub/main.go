// Command plantsync-hub is the regional hub: it ingests agent streams,
// journals them and runs the pipeline to ERP, portals and planning.
//
//	plantsync-hub run -config FILE
//	plantsync-hub validate -config FILE
//	plantsync-hub pki init -dir DIR [-hosts h1,h2] [-name NAME]
//	plantsync-hub pki issue-agent -dir DIR -id ID -plant PLANT [-csr FILE] -out DIR
//	plantsync-hub pki renew-hub -dir DIR [-hosts h1,h2]
//	plantsync-hub token -subject WHO -role ROLE [-file TOKENS_FILE]
//	plantsync-hub version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/internal/buildinfo"
	"github.com/plantsync/plantsync/internal/cli"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
)

const usage = `usage:
  plantsync-hub run -config FILE          run the hub
  plantsync-hub validate -config FILE     check a config and exit (non-zero lists every problem)
  plantsync-hub pki init -dir DIR [-hosts h1,h2] [-name NAME]
                                          create the CA and the hub's server certificate
  plantsync-hub pki issue-agent -dir DIR -id ID -plant PLANT [-csr FILE] -out DIR
                                          issue an agent certificate (from the agent's CSR, or with a new key)
  plantsync-hub pki renew-hub -dir DIR [-hosts h1,h2]
                                          issue a new hub certificate from the existing CA
  plantsync-hub token -subject WHO -role viewer|approver|admin [-file TOKENS_FILE]
                                          make an API token and its tokens-file entry (printed, or added to the file)
  plantsync-hub version                   print version, commit and build date
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
		path := fs.String("config", "/etc/plantsync-hub/hub.yaml", "config file")
		profile := fs.String("cpuprofile", "", "run only: write a Go CPU profile of the whole run to this file (diagnostics; `go tool pprof` reads it)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := hub.LoadConfig(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if args[0] == "validate" {
			// Start each connector plugin once: its Configure answer says
			// which actions it performs, and every workflow must route
			// only those to it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if errs := hub.CheckPlugins(ctx, cfg, cli.Logger(stderr, "warn", cfg.Log.Format)); len(errs) > 0 {
				fmt.Fprintln(stderr, config.Join(*path, errs))
				return 1
			}
			fmt.Fprintf(stdout, "%s: ok\n", *path)
			return 0
		}
		log := cli.Logger(stderr, cfg.Log.Level, cfg.Log.Format).With("program", "plantsync-hub")
		h := hub.New(cfg, log)
		h.SetConfigFile(*path) // SIGHUP re-reads it
		stopProfile, err := cli.StartCPUProfile(*profile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer stopProfile()
		if err := cli.Run(h, log, 30*time.Second); err != nil {
			log.Error("hub failed", "error", err)
			return 1
		}
		return 0
	case "pki":
		return runPKI(args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, buildinfo.String("plantsync-hub"))
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
	return 2
}

func splitHosts(s string) []string {
	var out []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

func runPKI(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("pki "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "/var/lib/plantsync-hub/pki", "PKI folder (CA and hub certificate)")
	switch args[0] {
	case "init", "renew-hub":
		hosts := fs.String("hosts", "", "extra DNS names or IPs for the hub certificate, comma-separated")
		name := fs.String("name", "", "CA name (init only)")
		force := fs.Bool("force", false, "replace an existing CA (init only; every agent certificate must then be reissued)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		var p *pki.Paths
		var err error
		if args[0] == "init" {
			p, err = pki.Init(*dir, pki.InitOptions{Name: *name, Hosts: splitHosts(*hosts), Force: *force})
		} else {
			p, err = pki.RenewHub(*dir, splitHosts(*hosts))
		}
		if err != nil {
			fmt.Fprintf(stderr, "pki %s: %v\n", args[0], err)
			return 1
		}
		fmt.Fprintf(stdout, "CA: %s\nhub certificate: %s\nhub key: %s\n", p.CACert, p.HubCert, p.HubKey)
		return 0
	case "issue-agent":
		id := fs.String("id", "", "agent id (becomes the certificate's identity)")
		plant := fs.String("plant", "", "plant the agent may send for")
		csr := fs.String("csr", "", "CSR made on the plant server with `plantsync-agent pki csr` (recommended: the key never leaves the plant)")
		out := fs.String("out", ".", "folder to write ID.crt (and ID.key when no CSR is given) and ca.crt")
		validity := fs.Duration("validity", 365*24*time.Hour, "certificate lifetime")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		req := pki.AgentRequest{ID: *id, Plant: *plant, Validity: *validity}
		if *csr != "" {
			raw, err := os.ReadFile(*csr)
			if err != nil {
				fmt.Fprintf(stderr, "pki issue-agent: -csr: %v\n", err)
				return 1
			}
			req.CSRPEM = raw
		}
		certPEM, keyPEM, err := pki.IssueAgent(*dir, req)
		if err != nil {
			if *csr != "" {
				fmt.Fprintf(stderr, "pki issue-agent: %s: %v\n", *csr, err)
			} else {
				fmt.Fprintf(stderr, "pki issue-agent: %v\n", err)
			}
			return 1
		}
		certPath := filepath.Join(*out, *id+".crt")
		if err := pki.WriteCertFile(certPath, certPEM); err != nil {
			fmt.Fprintf(stderr, "pki issue-agent: %v\n", err)
			return 1
		}
		caPEM, err := os.ReadFile(pki.PathsIn(*dir).CACert)
		if err == nil {
			err = pki.WriteCertFile(filepath.Join(*out, "ca.crt"), caPEM)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pki issue-agent: copy CA: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "certificate: %s\nCA: %s\n", certPath, filepath.Join(*out, "ca.crt"))
		if keyPEM != nil {
			keyPath := filepath.Join(*out, *id+".key")
			if err := pki.WriteKeyFile(keyPath, keyPEM); err != nil {
				fmt.Fprintf(stderr, "pki issue-agent: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "key: %s (move it to the plant server over a secure channel, then delete it here)\n", keyPath)
		}
		return 0
	}
	fmt.Fprintf(stderr, "unknown pki command %q\n%s", args[0], usage)
	return 2
}

// runToken makes a random API token and prints it with the entry to add to
// the tokens file, which holds only the token's hash.
func runToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	subject := fs.String("subject", "", "who holds the token, e.g. alice@plant.example (recorded in audit trails)")
	role := fs.String("role", "viewer", "viewer, approver or admin")
	file := fs.String("file", "", "add the entry to this tokens file (created 0600 when missing; mode and owner kept, comments not) instead of printing it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var problems []string
	if strings.TrimSpace(*subject) == "" {
		problems = append(problems, "-subject: required; who holds the token, e.g. alice@plant.example")
	}
	r, err := auth.ParseRole(*role)
	if err != nil {
		problems = append(problems, "-role: "+err.Error())
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "token: %s\n", strings.Join(problems, "; "))
		return 2
	}
	token, hash, err := auth.NewToken()
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	shown := fmt.Sprintf("token (shown only now; hand it to %s over a secure channel):\n%s\n\n", *subject, token)
	if *file != "" {
		if err := auth.AppendToken(*file, *subject, r, hash); err != nil {
			fmt.Fprintf(stderr, "token: -file: %v (nothing written, no token made)\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%sadded to %s; the hub reads it within two seconds\n", shown, *file)
		return 0
	}
	entry, err := yaml.Marshal([]auth.Entry{{Subject: *subject, Role: *role, SHA256: hash}})
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, shown)
	fmt.Fprintf(stdout, "add this entry under tokens: in the tokens file (http.auth.tokens_file); the hub reads it within two seconds:\n")
	for _, line := range strings.Split(strings.TrimRight(string(entry), "\n"), "\n") {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
	return 0
}
