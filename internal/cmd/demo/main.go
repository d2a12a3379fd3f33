// Command demo is what `make run` starts: dev certificates under a
// git-ignored state folder, runtime configs generated from configs/, then
// plantsim, the sandbox ERP, the hub (delivering to the sandbox ERP
// through the webhook plugin) and an agent as child processes. Ctrl-C
// stops them in drain order (agent, hub, sandbox ERP, simulator).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/hub/auth"
)

func main() {
	bin := flag.String("bin", "bin", "folder with the built binaries")
	state := flag.String("state", ".state", "git-ignored folder for certificates, configs and data")
	configs := flag.String("configs", "configs", "folder with the example configs")
	flag.Parse()
	if err := run(*bin, *state, *configs); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// ports picks the usual port when it is free and another free one when not,
// so the demo starts next to whatever else runs on the machine.
func port(preferred string) string {
	if l, err := net.Listen("tcp", preferred); err == nil {
		_ = l.Close()
		return preferred
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return preferred
	}
	defer l.Close()
	return l.Addr().String()
}

func run(bin, state, configs string) error {
	state, _ = filepath.Abs(state)
	bin, _ = filepath.Abs(bin)
	pkiDir := filepath.Join(state, "pki")
	if _, err := os.Stat(filepath.Join(pkiDir, "ca.crt")); err != nil {
		if err := runCmd(filepath.Join(bin, "plantsync-hub"), "pki", "init", "-dir", pkiDir, "-name", "demo"); err != nil {
			return err
		}
	}
	agentDir := filepath.Join(pkiDir, "agents")
	if _, err := os.Stat(filepath.Join(agentDir, "demo-agent.crt")); err != nil {
		if err := os.MkdirAll(agentDir, 0o700); err != nil {
			return err
		}
		keyPath := filepath.Join(agentDir, "demo-agent.key")
		csrPath := filepath.Join(agentDir, "demo-agent.csr")
		if err := runCmd(filepath.Join(bin, "plantsync-agent"), "pki", "csr", "-id", "demo-agent", "-key", keyPath, "-out", csrPath); err != nil {
			return err
		}
		if err := runCmd(filepath.Join(bin, "plantsync-hub"), "pki", "issue-agent", "-dir", pkiDir, "-id", "demo-agent", "-plant", "DE-01", "-csr", csrPath, "-out", agentDir); err != nil {
			return err
		}
	}

	grpcAddr, httpAddr := port("127.0.0.1:7443"), port("127.0.0.1:8080")
	adminAddr, mqttAddr, opcuaAddr := port("127.0.0.1:9464"), port("127.0.0.1:1883"), port("127.0.0.1:4840")
	erpAddr := port("127.0.0.1:8090")

	tokensFile, adminToken, err := demoToken(state)
	if err != nil {
		return err
	}
	hubCfg := filepath.Join(state, "hub.yaml")
	hubSet := map[string]any{
		"grpc.listen":           grpcAddr,
		"grpc.tls.cert":         filepath.Join(pkiDir, "hub.crt"),
		"grpc.tls.key":          filepath.Join(pkiDir, "hub.key"),
		"grpc.tls.client_ca":    filepath.Join(pkiDir, "ca.crt"),
		"http.listen":           httpAddr,
		"http.auth.tokens_file": tokensFile,
		"storage.dir":           filepath.Join(state, "hub"),
		"pki.dir":               pkiDir,
	}
	// The crosswalk CSVs of configs/crosswalks, by absolute path.
	cwDir, _ := filepath.Abs(filepath.Join(configs, "crosswalks"))
	inbound, erp := map[string]string{}, map[string]string{}
	for _, kind := range []string{"plant", "item", "unit", "supplier", "work_center"} {
		inbound[kind] = filepath.Join(cwDir, kind+".csv")
	}
	for _, kind := range []string{"item", "unit", "warehouse", "supplier"} {
		erp[kind] = filepath.Join(cwDir, "erp-"+kind+".csv")
	}
	hubSet["pipeline.crosswalks.inbound"] = inbound
	hubSet["pipeline.crosswalks.outbound"] = map[string]map[string]string{"erp": erp}
	// The ERP destination: the sandbox ERP through the webhook plugin,
	// pinned by the checksum of the binary just built.
	webhookBin := filepath.Join(bin, "plugins", "webhook")
	webhookSum, err := fileSHA256(webhookBin)
	if err != nil {
		return fmt.Errorf("webhook plugin: %w (make build puts it in %s)", err, filepath.Dir(webhookBin))
	}
	if _, err := os.Stat(filepath.Join(bin, "sandboxerp")); err != nil {
		return fmt.Errorf("sandbox ERP: %w (make build puts it in %s)", err, bin)
	}
	erpSecret, err := demoSecret(filepath.Join(state, "erp-webhook.secret"))
	if err != nil {
		return err
	}
	hubSet["plugins"] = []map[string]any{{"name": "webhook", "path": webhookBin, "sha256": webhookSum}}
	hubSet["destinations.0"] = map[string]any{
		"name": "erp", "type": "plugin", "plugin": "webhook",
		"config": map[string]any{
			"url":         "http://" + erpAddr + "/webhook",
			"lookup_url":  "http://" + erpAddr + "/documents/by-key/{key}",
			"health_url":  "http://" + erpAddr + "/healthz",
			"hmac_secret": "file:" + erpSecret,
			"actions": []string{"purchase_requisition.create", "production_order.confirm", "production_order.update_status",
				"production_order.reschedule", "purchase_order.update_promise", "inventory.block"},
		},
	}
	if err := rewrite(filepath.Join(configs, "hub.example.yaml"), hubCfg, hubSet); err != nil {
		return err
	}
	agentCfg := filepath.Join(state, "agent.yaml")
	if err := rewrite(filepath.Join(configs, "agent.example.yaml"), agentCfg, map[string]any{
		"agent.id":               "demo-agent",
		"agent.plant":            "DE-01",
		"agent.state_dir":        filepath.Join(state, "agent"),
		"uplink.hub":             grpcAddr,
		"uplink.tls.ca":          filepath.Join(agentDir, "ca.crt"),
		"uplink.tls.cert":        filepath.Join(agentDir, "demo-agent.crt"),
		"uplink.tls.key":         filepath.Join(agentDir, "demo-agent.key"),
		"uplink.tls.server_name": "localhost",
		"sources.0.brokers":      []string{"tcp://" + mqttAddr},
		"sources.0.client_id":    "plantsync-demo-agent",
		"sources.1.endpoint":     "opc.tcp://" + opcuaAddr,
		// plantsim makes a new server certificate at every start, so the
		// demo reads it without security; the example shows the real thing.
		"sources.1.security.policy": "None",
		"sources.1.security.mode":   "None",
		"sources.1.trust.dir":       filepath.Join(state, "agent", "sources", "machines", "pki", "trusted"),
		"metrics.listen":            adminAddr,
	}); err != nil {
		return err
	}
	for _, v := range [][2]string{{"plantsync-hub", hubCfg}, {"plantsync-agent", agentCfg}} {
		if err := runCmd(filepath.Join(bin, v[0]), "validate", "-config", v[1]); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	start := func(name string, args ...string) error {
		p, err := startProc(name, filepath.Join(bin, args[0]), args[1:]...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	if err := start("plantsim", "plantsim", "-plant", "DE-01", "-mqtt-listen", mqttAddr, "-opcua-listen", opcuaAddr); err != nil {
		return err
	}
	if err := start("erp", "sandboxerp", "-listen", erpAddr, "-data", filepath.Join(state, "sandboxerp"), "-hmac-secret", "file:"+erpSecret); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+erpAddr+"/healthz", 15*time.Second); err != nil {
		return fmt.Errorf("sandbox ERP did not start: %w", err)
	}
	if err := start("hub", "plantsync-hub", "run", "-config", hubCfg); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+httpAddr+"/healthz", 15*time.Second); err != nil {
		return fmt.Errorf("hub did not become healthy: %w", err)
	}
	if err := start("agent", "plantsync-agent", "run", "-config", agentCfg); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+adminAddr+"/api/v1/status", 15*time.Second); err != nil {
		return fmt.Errorf("agent did not start: %w", err)
	}
	fmt.Printf(`
plantsync demo is running (state in %s)

  hub API        http://%s/api/v1/events?after=0&limit=20
                 http://%s/api/v1/agents
                 http://%s/api/v1/exceptions   /api/v1/approvals   /api/v1/alerts
                 http://%s/api/v1/outbox/erp   /api/v1/crosswalks/item
  API token      %s  (admin; also in %s)
                 curl -H "Authorization: Bearer $(cat %s)" http://%s/api/v1/exceptions
  hub metrics    http://%s/metrics      health: http://%s/healthz
  hub gRPC       %s (mTLS)
  agent status   http://%s/api/v1/status
  agent metrics  http://%s/metrics
  OPC UA         opc.tcp://%s
  MQTT (MES)     tcp://%s   (topics mes/DE-01/+/+)
  sandbox ERP    http://%s/documents   (a SANDBOX, not a real ERP: requisitions and confirmations land here)

Press Ctrl-C to stop.
`, state, httpAddr, httpAddr, httpAddr, httpAddr, adminToken, tokenPath(state), tokenPath(state), httpAddr, httpAddr, httpAddr, grpcAddr, adminAddr, adminAddr, opcuaAddr, mqttAddr, erpAddr)

	exited := make(chan string, len(procs))
	for _, p := range procs {
		go func() { <-p.done; exited <- p.name }()
	}
	select {
	case <-ctx.Done():
		fmt.Println("\nstopping: agent, hub, sandbox ERP, simulator")
		return nil
	case name := <-exited:
		return fmt.Errorf("%s exited unexpectedly; see its log lines above", name)
	}
}

func tokenPath(state string) string { return filepath.Join(state, "demo-admin.token") }

// fileSHA256 is the hex SHA-256 of a file, as `sha256sum` prints it.
func fileSHA256(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// demoSecret returns the path of a file holding the sandbox ERP's webhook
// signing secret, making a random one on the first run.
func demoSecret(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(hex.EncodeToString(b[:])+"\n"), 0o600)
}

// demoToken returns the demo's tokens file and admin token, making both on
// the first run (the token stays the same across runs of the same state).
func demoToken(state string) (tokensFile, token string, err error) {
	tokensFile = filepath.Join(state, "tokens.yaml")
	if raw, err := os.ReadFile(tokenPath(state)); err == nil {
		if _, err := os.Stat(tokensFile); err == nil {
			return tokensFile, strings.TrimSpace(string(raw)), nil
		}
	}
	token, hash, err := auth.NewToken()
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return "", "", err
	}
	_ = os.Remove(tokensFile)
	if err := auth.AppendToken(tokensFile, "demo-admin", auth.Admin, hash); err != nil {
		return "", "", err
	}
	return tokensFile, token, os.WriteFile(tokenPath(state), []byte(token+"\n"), 0o600)
}

// rewrite loads a YAML file, sets dotted paths (list indexes as numbers)
// and writes it back with comments kept.
func rewrite(src, dst string, set map[string]any) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	for path, v := range set {
		var val yaml.Node
		if err := val.Encode(v); err != nil {
			return err
		}
		if err := setPath(doc.Content[0], strings.Split(path, "."), &val); err != nil {
			return fmt.Errorf("%s: %s: %w", src, path, err)
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	header := fmt.Sprintf("# Generated by `make run` from %s; edit that file, not this one.\n", src)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.WriteFile(dst, append([]byte(header), out...), 0o600)
}

func setPath(n *yaml.Node, path []string, val *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == path[0] {
				if len(path) == 1 {
					n.Content[i+1] = val
					return nil
				}
				return setPath(n.Content[i+1], path[1:], val)
			}
		}
		if len(path) == 1 {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: path[0]}, val)
			return nil
		}
		return fmt.Errorf("key %q not found", path[0])
	case yaml.SequenceNode:
		var i int
		if _, err := fmt.Sscanf(path[0], "%d", &i); err != nil || i >= len(n.Content) {
			return fmt.Errorf("index %q out of range", path[0])
		}
		if len(path) == 1 {
			n.Content[i] = val
			return nil
		}
		return setPath(n.Content[i], path[1:], val)
	}
	return fmt.Errorf("cannot descend into %q", path[0])
}

func runCmd(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return nil
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

func startProc(name, path string, args ...string) (*proc, error) {
	cmd := exec.Command(path, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	// Own process group: the terminal's Ctrl-C reaches only the demo,
	// which then stops the children in drain order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go prefix(name, out)
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func prefix(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Printf("%-8s | %s\n", name, sc.Text())
	}
}

func (p *proc) stop() {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(35 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

func waitHTTP(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
