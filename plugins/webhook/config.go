package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// Config is the plugin's `config:` section (README.md lists every key).
type Config struct {
	// URL receives the POSTs; "{action}" in it is replaced by the action.
	URL string `json:"url"`
	// LookupURL, when set, is fetched with GET to find a document by its
	// idempotency key; "{key}" in it is replaced by the key.
	LookupURL string `json:"lookup_url"`
	// HealthURL, when set, is fetched with GET by Health.
	HealthURL string `json:"health_url"`
	// Actions this destination accepts.
	Actions []string `json:"actions"`
	// HMACSecret signs each body (file:PATH or env:NAME; the host resolves
	// it). Empty: no signature header.
	HMACSecret      string `json:"hmac_secret"`
	SignatureHeader string `json:"signature_header"`
	// Headers are sent with every request (e.g. Authorization: env:TOKEN).
	Headers map[string]string `json:"headers"`
	// Timeout bounds one request, connection included.
	Timeout sdk.Duration `json:"timeout"`
	// Body is "envelope" (key, action, ... and the document) or "document"
	// (the document alone; the rest travels in headers).
	Body string `json:"body"`
	// ReferenceField names the field of a JSON answer that holds the
	// target's document id; without it the Location header is used.
	ReferenceField string `json:"reference_field"`
	// MaxConnections bounds the open connections to the target.
	MaxConnections int       `json:"max_connections"`
	TLS            TLSConfig `json:"tls"`
}

// TLSConfig is the `tls:` section for https targets.
type TLSConfig struct {
	// CAFile verifies the target's certificate instead of the system roots.
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile   string `json:"cert_file"`
	KeyFile    string `json:"key_file"`
	ServerName string `json:"server_name"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `json:"min_version"`
	// InsecureSkipVerify disables certificate checks: for a test target
	// only.
	InsecureSkipVerify bool `json:"insecure_skip_verify"`
}

// NewDefaultConfig is the one place defaults are set.
func NewDefaultConfig() Config {
	return Config{
		SignatureHeader: "X-Plantsync-Signature",
		Timeout:         sdk.Duration(10 * time.Second),
		Body:            "envelope",
		ReferenceField:  "id",
		MaxConnections:  16,
		TLS:             TLSConfig{MinVersion: "1.2"},
	}
}

// Validate checks the config without touching the network; every problem
// is reported with its key.
func (c *Config) Validate() error {
	var errs []error
	checkURL := func(key, v string, required bool) {
		if v == "" {
			if required {
				errs = append(errs, fmt.Errorf("%s: required, e.g. https://portal.example.com/api/plantsync", key))
			}
			return
		}
		u, err := url.Parse(strings.NewReplacer("{action}", "x", "{key}", "x").Replace(v))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: %q is not an http(s) URL", key, v))
		}
	}
	checkURL("url", c.URL, true)
	checkURL("lookup_url", c.LookupURL, false)
	checkURL("health_url", c.HealthURL, false)
	if c.LookupURL != "" && !strings.Contains(c.LookupURL, "{key}") {
		errs = append(errs, fmt.Errorf("lookup_url: %q has no {key}; want e.g. https://portal.example.com/api/plantsync/{key}", c.LookupURL))
	}
	if len(c.Actions) == 0 {
		errs = append(errs, errors.New("actions: list the actions this target accepts, e.g. [purchase_order.publish]"))
	}
	for i, a := range c.Actions {
		if a == "" || strings.ContainsAny(a, " /") {
			errs = append(errs, fmt.Errorf("actions[%d]: %q is not an action name", i, a))
		}
	}
	if c.HMACSecret != "" && c.SignatureHeader == "" {
		errs = append(errs, errors.New("signature_header: required with hmac_secret"))
	}
	if c.Timeout.D() <= 0 || c.Timeout.D() > 10*time.Minute {
		errs = append(errs, fmt.Errorf("timeout: %s; want 1ms to 10m, e.g. 10s", c.Timeout.D()))
	}
	if c.Body != "envelope" && c.Body != "document" {
		errs = append(errs, fmt.Errorf("body: %q; want envelope or document", c.Body))
	}
	if c.MaxConnections < 1 || c.MaxConnections > 1024 {
		errs = append(errs, fmt.Errorf("max_connections: %d; want 1 to 1024", c.MaxConnections))
	}
	if c.TLS.MinVersion != "1.2" && c.TLS.MinVersion != "1.3" {
		errs = append(errs, fmt.Errorf("tls.min_version: %q; want 1.2 or 1.3", c.TLS.MinVersion))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: set both cert_file and key_file, or neither"))
	}
	return errors.Join(errs...)
}

// tlsConfig builds the client TLS config from files.
func (c *TLSConfig) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented as test-only
	if c.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
