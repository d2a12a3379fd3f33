package mqtt

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// cliUsage is printed for `plantsync-agent mqtt` without a valid command.
const cliUsage = `usage:
  plantsync-agent mqtt quarantine list   [-source NAME] [-config FILE | -addr HOST:PORT] [-json]
  plantsync-agent mqtt quarantine replay [-source NAME] [-config FILE | -addr HOST:PORT] [-id ID]... [-json]

The commands talk to the running agent's admin API (metrics.listen in the
agent config): the agent holds the quarantine file open. -source may be left
out when the agent has one MQTT source. replay maps the messages again with
the agent's current configuration; what maps now is committed and leaves the
quarantine, the rest stays with its new reason.
`

// defaultAgentConfig and defaultAdminAddr mirror the agent's defaults
// (the agent package imports this one, so it cannot be asked).
const (
	defaultAgentConfig = "/etc/plantsync-agent/agent.yaml"
	defaultAdminAddr   = "127.0.0.1:9464"
)

// RunCLI runs `plantsync-agent mqtt ARGS...` and returns the exit code:
// 0 success, 1 failure (or a replay that left entries failing), 2 usage.
func RunCLI(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "quarantine" || (args[1] != "list" && args[1] != "replay") {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, cliUsage)
			return 0
		}
		fmt.Fprint(stderr, cliUsage)
		return 2
	}
	cmd := args[1]
	fs := flag.NewFlagSet("mqtt quarantine "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultAgentConfig, "agent config (to find metrics.listen and the MQTT sources)")
	addr := fs.String("addr", "", "admin address of the running agent, host:port; overrides -config")
	src := fs.String("source", "", "MQTT source name; may be left out when the agent has one")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	var ids []string
	if cmd == "replay" {
		fs.Func("id", "replay only this quarantine id (repeatable); default every entry", func(v string) error {
			if _, err := parseQuarantineID(v); err != nil {
				return err
			}
			ids = append(ids, v)
			return nil
		})
	}
	if err := fs.Parse(args[2:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mqtt quarantine %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	c := &cliClient{http: &http.Client{Timeout: 3 * time.Minute}}
	var err error
	c.addr, c.source, err = resolveTarget(c, *cfgPath, *addr, *src)
	if err != nil {
		fmt.Fprintf(stderr, "mqtt quarantine %s: %v\n", cmd, err)
		return 1
	}
	if cmd == "list" {
		return c.list(stdout, stderr, *asJSON)
	}
	return c.replay(ids, stdout, stderr, *asJSON)
}

type cliClient struct {
	http   *http.Client
	addr   string
	source string
}

func (c *cliClient) url(path string) string {
	return "http://" + c.addr + "/api/v1/sources/" + url.PathEscape(c.source) + "/" + path
}

// do sends a request and decodes a 200 answer into out.
func (c *cliClient) do(method, u string, out any) error {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("is the agent running? %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, e.Error)
		}
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%s %s: %s: is %q an MQTT source of this agent?", method, u, resp.Status, c.source)
		}
		return fmt.Errorf("%s %s: %s", method, u, resp.Status)
	}
	return json.Unmarshal(raw, out)
}

func (c *cliClient) list(stdout, stderr io.Writer, asJSON bool) int {
	var all QuarantineList
	var after uint64
	for {
		var page QuarantineList
		if err := c.do(http.MethodGet, c.url(fmt.Sprintf("quarantine?after=%d&limit=1000", after)), &page); err != nil {
			fmt.Fprintln(stderr, "mqtt quarantine list:", err)
			return 1
		}
		all.Source, all.Total = page.Source, page.Total
		all.Entries = append(all.Entries, page.Entries...)
		if len(page.Entries) == 0 {
			break
		}
		after = page.NextAfter
	}
	if asJSON {
		if all.Entries == nil {
			all.Entries = []QuarantineEntry{}
		}
		return printJSON(stdout, stderr, all)
	}
	if len(all.Entries) == 0 {
		fmt.Fprintf(stdout, "source %s: the quarantine is empty\n", c.source)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCOUNT\tLAST SEEN\tTOPIC\tREASON\tPAYLOAD")
	for _, e := range all.Entries {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", e.ID, e.Count, e.LastSeen.Local().Format(time.DateTime), e.Topic, e.Reason, preview(e.Payload))
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "%d quarantined message(s) in source %s; after fixing the mapping: plantsync-agent mqtt quarantine replay -source %s\n", len(all.Entries), c.source, c.source)
	return 0
}

func (c *cliClient) replay(ids []string, stdout, stderr io.Writer, asJSON bool) int {
	q := url.Values{}
	for _, id := range ids {
		q.Add("id", id)
	}
	u := c.url("quarantine/replay")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rep ReplayReport
	if err := c.do(http.MethodPost, u, &rep); err != nil {
		fmt.Fprintln(stderr, "mqtt quarantine replay:", err)
		return 1
	}
	if asJSON {
		if code := printJSON(stdout, stderr, rep); code != 0 {
			return code
		}
	} else {
		for _, r := range rep.Results {
			line := fmt.Sprintf("%d\t%s\t%s", r.ID, r.Result, r.Topic)
			if r.Reason != "" {
				line += "\t" + r.Reason
			}
			fmt.Fprintln(stdout, line)
		}
		fmt.Fprintf(stdout, "source %s: %d replayed, %d still failing\n", rep.Source, rep.Replayed, rep.Failed)
	}
	if rep.Failed > 0 {
		return 1
	}
	return 0
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// preview shows a payload on one line: text as it is (shortened), binary
// (Sparkplug) as a byte count.
func preview(p []byte) string {
	const max = 60
	if !utf8.Valid(p) || strings.ContainsFunc(string(p), func(r rune) bool { return r < 0x20 && r != '\t' }) {
		return fmt.Sprintf("(%d bytes, binary)", len(p))
	}
	s := strings.Join(strings.Fields(string(p)), " ")
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// agentFile is the part of an agent config the CLI reads (loosely: the
// agent validates the file, the CLI only looks things up in it).
type agentFile struct {
	Metrics struct {
		Listen string `yaml:"listen"`
	} `yaml:"metrics"`
	Sources []struct {
		Name string `yaml:"name"`
		Type string `yaml:"type"`
	} `yaml:"sources"`
}

// resolveTarget finds the admin address and the source to talk to.
func resolveTarget(c *cliClient, cfgPath, addr, src string) (string, string, error) {
	var mqttSources []string
	if addr == "" {
		raw, err := os.ReadFile(cfgPath)
		if err != nil {
			return "", "", fmt.Errorf("read agent config (or give -addr HOST:PORT): %w", err)
		}
		var f agentFile
		if err := yaml.Unmarshal(raw, &f); err != nil {
			return "", "", fmt.Errorf("%s: %w", cfgPath, err)
		}
		addr = f.Metrics.Listen
		if addr == "" {
			addr = defaultAdminAddr
		}
		for _, s := range f.Sources {
			if s.Type == "mqtt" {
				mqttSources = append(mqttSources, s.Name)
			}
		}
		if src == "" && len(mqttSources) == 0 {
			return "", "", fmt.Errorf("%s has no source of type mqtt", cfgPath)
		}
	}
	if src != "" {
		return addr, src, nil
	}
	if mqttSources == nil {
		// Only an address: ask the agent which sources answer.
		c.addr = addr
		var st struct {
			Sources map[string]json.RawMessage `json:"sources"`
		}
		resp, err := c.http.Get("http://" + addr + "/api/v1/status")
		if err != nil {
			return "", "", fmt.Errorf("is the agent running? %w", err)
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			return "", "", fmt.Errorf("agent status: %w", err)
		}
		for _, name := range sortedKeys(st.Sources) {
			c.source = name
			var l QuarantineList
			if c.do(http.MethodGet, c.url("quarantine?limit=1"), &l) == nil {
				mqttSources = append(mqttSources, name)
			}
		}
		if len(mqttSources) == 0 {
			return "", "", errors.New("the agent at " + addr + " has no MQTT source with a quarantine")
		}
	}
	if len(mqttSources) > 1 {
		return "", "", fmt.Errorf("the agent has several MQTT sources (%s); choose one with -source", strings.Join(mqttSources, ", "))
	}
	return addr, mqttSources[0], nil
}
