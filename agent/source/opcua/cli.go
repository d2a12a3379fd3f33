package opcua

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/plantsync/plantsync/agent/source"
)

const cliUsage = `usage: plantsync-agent opcua <command> [flags]

commands:
  trust   -endpoint URL [-state-dir DIR | -trust-dir DIR]
          fetch the server's certificate, show it and store it in the
          source's trust folder (DIR/pki/trusted), so the agent accepts it
  browse  -endpoint URL [-node ID] [-depth N] [-state-dir DIR] [-policy P] [-mode M]
          print the address space (NodeId, browse path, class, data type,
          access) to write nodes and browse rules of a source

-state-dir is the source's state folder: <agent.state_dir>/sources/<source name>.
`

// RunCLI runs `plantsync-agent opcua ...`; args start after "opcua". It
// returns the process exit code: 0 success, 1 failure, 2 usage.
func RunCLI(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, cliUsage)
		return 2
	}
	switch args[0] {
	case "trust":
		return runTrust(args[1:], stdout, stderr)
	case "browse":
		return runBrowse(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, cliUsage)
		return 0
	}
	fmt.Fprintf(stderr, "opcua: unknown command %q\n\n%s", args[0], cliUsage)
	return 2
}

func runTrust(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("opcua trust", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "", "server endpoint, e.g. opc.tcp://192.168.10.20:4840")
	stateDir := fs.String("state-dir", "", "the source's state folder; the certificate is stored in DIR/pki/trusted")
	trustDir := fs.String("trust-dir", "", "trust folder to store the certificate in (instead of -state-dir)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the server")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := checkEndpoint(*endpoint); err != nil {
		fmt.Fprintf(stderr, "opcua trust: -endpoint: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, *endpoint, opcua.DialTimeout(*timeout), opcua.RequestTimeout(*timeout))
	if err != nil {
		fmt.Fprintf(stderr, "opcua trust: get endpoints of %s: %v\n", *endpoint, err)
		return 1
	}
	var certs [][]byte
	seen := map[string]bool{}
	for _, ep := range eps {
		if len(ep.ServerCertificate) == 0 || seen[string(ep.ServerCertificate)] {
			continue
		}
		seen[string(ep.ServerCertificate)] = true
		certs = append(certs, ep.ServerCertificate)
	}
	if len(certs) == 0 {
		fmt.Fprintf(stderr, "opcua trust: %s presents no certificate (it offers security policy None only); nothing to trust\n", *endpoint)
		return 1
	}
	dir := *trustDir
	if dir == "" && *stateDir != "" {
		dir = filepath.Join(*stateDir, "pki", "trusted")
	}
	for _, der := range certs {
		subject, notAfter := certSubject(der)
		fp := Fingerprint(der)
		fmt.Fprintf(stdout, "server certificate of %s\n  subject:     %s\n  valid until: %s\n  sha256:      %s\n",
			*endpoint, subject, notAfter.UTC().Format(time.RFC3339), fp)
		if dir != "" {
			path, err := writeTrusted(dir, der)
			if err != nil {
				fmt.Fprintf(stderr, "opcua trust: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "  stored:      %s (the agent trusts it from its next connect attempt)\n", path)
		}
		fmt.Fprintf(stdout, "  or pin it in the source's config: trust: {fingerprints: [\"%s\"]}\n", fp)
	}
	if dir == "" {
		fmt.Fprintln(stdout, "not stored: give -state-dir (the source's state folder) to store it")
	}
	return 0
}

func runBrowse(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("opcua browse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "", "server endpoint, e.g. opc.tcp://192.168.10.20:4840")
	node := fs.String("node", "i=85", "node to start at (default the Objects folder)")
	depth := fs.Int("depth", 3, "levels to descend")
	stateDir := fs.String("state-dir", "", "the source's state folder: its client certificate and trusted server certificates are used")
	policy := fs.String("policy", PolicyAuto, "security policy: auto, None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss")
	mode := fs.String("mode", ModeAuto, "security mode: auto, None, Sign, SignAndEncrypt")
	username := fs.String("username", "", "user name (the password comes from -password-env or -password-file)")
	passwordEnv := fs.String("password-env", "", "environment variable holding the password")
	passwordFile := fs.String("password-file", "", "file holding the password")
	timeout := fs.Duration("timeout", 30*time.Second, "overall time limit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := NewDefaultConfig()
	cfg.Common = source.Common{Name: "cli", Type: "opcua"}
	cfg.Endpoint = *endpoint
	cfg.Security = SecurityConfig{Policy: *policy, Mode: *mode}
	if *username != "" {
		cfg.Auth = AuthConfig{Type: AuthUsername, Username: *username, PasswordEnv: *passwordEnv, PasswordFile: *passwordFile}
	}
	cfg.Session.ConnectTimeout = min(*timeout, cfg.Session.ConnectTimeout)
	cfg.Nodes = []NodeConfig{{NodeID: *node}}
	if *depth < 1 || *depth > 20 {
		fmt.Fprintln(stderr, "opcua browse: -depth: want 1 to 20")
		return 2
	}
	if errs := cfg.Validate("flags"); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "opcua browse: %s\n", strings.Replace(e.Error(), "flags.nodes[0].node_id", "-node", 1))
		}
		return 2
	}
	start, _ := parseNodeRef(*node)

	dir := *stateDir
	if dir == "" {
		// A throwaway certificate: enough for servers that accept any
		// client, and for policy None.
		tmp, err := os.MkdirTemp("", "plantsync-opcua-browse-*")
		if err != nil {
			fmt.Fprintf(stderr, "opcua browse: %v\n", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ident, _, err := loadIdentity(cfg.Certificate, dir, "urn:plantsync:agent:cli")
	if err != nil {
		fmt.Fprintf(stderr, "opcua browse: %v\n", err)
		return 1
	}
	s := &Source{cfg: cfg, env: source.Env{Name: "cli", StateDir: *stateDir}, log: slog.New(slog.DiscardHandler),
		m: newMetrics(nil), trust: newTrustStore(cfg.Trust, *stateDir), ident: ident, lost: make(chan error, 1), now: time.Now}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	sess, err := s.connect(ctx, nil)
	if err != nil {
		fmt.Fprintf(stderr, "opcua browse: %v\n", err)
		return 1
	}
	defer sess.c.Close(context.Background())
	s.readLimits(ctx, sess)
	startID, err := start.resolve(sess.c.Namespaces())
	if err != nil {
		fmt.Fprintf(stderr, "opcua browse: -node: %v\n", err)
		return 1
	}
	if err := printTree(ctx, sess, startID, *depth, stdout); err != nil {
		fmt.Fprintf(stderr, "opcua browse: %v\n", err)
		return 1
	}
	return 0
}

type row struct {
	path, node, class, dataType, access string
}

// printTree lists the address space under start breadth-first, with the
// browse path a browse rule would use.
func printTree(ctx context.Context, sess *session, start *ua.NodeID, depth int, w io.Writer) error {
	perCall := limit(100, sess.limits.nodesPerBrowse)
	prefix := ""
	if start.Namespace() == 0 && start.IntID() == id.ObjectsFolder {
		prefix = "Objects/"
	}
	type entry struct {
		id   *ua.NodeID
		path string
	}
	var rows []row
	var vars []int
	front := []entry{{id: start}}
	seen := map[string]bool{start.String(): true}
	for level := 0; level < depth && len(front) > 0; level++ {
		ids := make([]*ua.NodeID, len(front))
		for i, e := range front {
			ids[i] = e.id
		}
		children, err := browseChildren(ctx, sess.c, ids, perCall)
		if err != nil {
			return err
		}
		var next []entry
		for i, e := range front {
			for _, c := range children[i] {
				p := c.name
				if e.path != "" {
					p = e.path + "/" + c.name
				}
				class := "Object"
				if c.class == ua.NodeClassVariable {
					class = "Variable"
					vars = append(vars, len(rows))
				}
				rows = append(rows, row{path: prefix + p, node: c.id.String(), class: class})
				if k := c.id.String(); !seen[k] {
					seen[k] = true
					next = append(next, entry{id: c.id, path: p})
				}
			}
		}
		front = next
	}
	if err := describeVariables(ctx, sess, rows, vars); err != nil {
		return err
	}
	if prefix != "" {
		fmt.Fprintln(w, "# PATH works as browse[].path (with the default start, the Root folder)")
	} else {
		fmt.Fprintf(w, "# PATH is relative to %s: use it as browse[].path with browse[].start: %q\n", start, start.String())
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tNODEID\tCLASS\tDATATYPE\tACCESS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", sanitize(r.path), sanitize(r.node), r.class, r.dataType, r.access)
	}
	return tw.Flush()
}

func describeVariables(ctx context.Context, sess *session, rows []row, vars []int) error {
	per := max(1, limit(500, sess.limits.nodesPerRead)/2)
	for start := 0; start < len(vars); start += per {
		chunk := vars[start:min(start+per, len(vars))]
		req := &ua.ReadRequest{}
		for _, ri := range chunk {
			nid, err := ua.ParseNodeID(rows[ri].node)
			if err != nil {
				return err
			}
			req.NodesToRead = append(req.NodesToRead,
				&ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDDataType},
				&ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDAccessLevel})
		}
		res, err := sess.c.Read(ctx, req)
		if err != nil {
			return fmt.Errorf("read attributes: %w", err)
		}
		if len(res.Results) != 2*len(chunk) {
			return errors.New("read attributes: result count mismatch")
		}
		for i, ri := range chunk {
			rows[ri].dataType = dataTypeText(res.Results[2*i])
			rows[ri].access = accessText(res.Results[2*i+1])
		}
	}
	return nil
}

func dataTypeText(dv *ua.DataValue) string {
	if dv == nil || isBad(dv.Status) || dv.Value == nil {
		return "?"
	}
	switch x := dv.Value.Value().(type) {
	case *ua.NodeID:
		if x.Namespace() == 0 {
			if n := id.Name(x.IntID()); n != "" {
				return n
			}
		}
		return x.String()
	case *ua.ExpandedNodeID:
		if x.NodeID != nil && x.NodeID.Namespace() == 0 {
			if n := id.Name(x.NodeID.IntID()); n != "" {
				return n
			}
		}
		return x.String()
	}
	return valueText(dv.Value)
}

func accessText(dv *ua.DataValue) string {
	if dv == nil || isBad(dv.Status) || dv.Value == nil {
		return "?"
	}
	a, ok := numeric(dv.Value)
	if !ok {
		return "?"
	}
	bits := uint8(a)
	var out []string
	if bits&uint8(ua.AccessLevelTypeCurrentRead) != 0 {
		out = append(out, "read")
	}
	if bits&uint8(ua.AccessLevelTypeCurrentWrite) != 0 {
		out = append(out, "write")
	}
	if bits&uint8(ua.AccessLevelTypeHistoryRead) != 0 {
		out = append(out, "history")
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}
