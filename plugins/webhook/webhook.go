package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// Version is the connector's version, reported by Configure.
const Version = "1.0.0"

// maxAnswer bounds how much of a target's answer is read.
const maxAnswer = 1 << 20

// Connector delivers to an HTTP target. It implements sdk.Destination.
type Connector struct {
	// List and Changes: a webhook can do neither.
	sdk.UnimplementedDestination

	log *slog.Logger

	mu     sync.RWMutex
	cfg    Config
	client *http.Client
}

// New returns an unconfigured connector logging to log.
func New(log *slog.Logger) *Connector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Connector{log: log}
}

// Configure implements sdk.Destination.
func (c *Connector) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	cfg := NewDefaultConfig()
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	if err := cfg.Validate(); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	tc, err := cfg.TLS.tlsConfig()
	if err != nil {
		return sdk.ConfigureResponse{}, err
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout.D(), KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: cfg.Timeout.D(),
		ForceAttemptHTTP2:   true,
		// The default of 2 idle connections per host would make every
		// delivery beyond the second parallel one open a new connection.
		MaxIdleConns:        cfg.MaxConnections,
		MaxIdleConnsPerHost: cfg.MaxConnections,
		MaxConnsPerHost:     cfg.MaxConnections,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout.D()}
	c.mu.Lock()
	old := c.client
	c.cfg, c.client = cfg, client
	c.mu.Unlock()
	if old != nil {
		old.CloseIdleConnections()
	}
	caps := []sdk.Capability{}
	if cfg.LookupURL != "" {
		caps = append(caps, sdk.CapabilityLookup)
	}
	c.log.Info("webhook configured", "name", req.Name, "url", cfg.URL, "lookup", cfg.LookupURL != "", "actions", cfg.Actions)
	return sdk.ConfigureResponse{Actions: slices.Clone(cfg.Actions), Capabilities: caps, Version: Version}, nil
}

func (c *Connector) current() (Config, *http.Client, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.client == nil {
		return Config{}, nil, errors.New("webhook: not configured")
	}
	return c.cfg, c.client, nil
}

// envelope is the POST body with body: envelope.
type envelope struct {
	IdempotencyKey string          `json:"idempotency_key"`
	Action         string          `json:"action"`
	OrderingKey    string          `json:"ordering_key,omitempty"`
	CorrelationID  string          `json:"correlation_id,omitempty"`
	Document       json.RawMessage `json:"document"`
}

// Sign is the signature header's value for body: "sha256=" and the hex
// HMAC-SHA256 of the body under secret (the scheme GitHub webhooks use).
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Deliver implements sdk.Destination.
func (c *Connector) Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	cfg, client, err := c.current()
	if err != nil {
		return sdk.DeliverResponse{}, err
	}
	if !slices.Contains(cfg.Actions, req.Action) {
		return sdk.Permanent("unsupported action %q; this webhook accepts %s", req.Action, strings.Join(cfg.Actions, ", ")), nil
	}
	if !json.Valid(req.Document) {
		return sdk.Permanent("document is not valid JSON"), nil
	}
	body := []byte(req.Document)
	if cfg.Body == "envelope" {
		body, err = json.Marshal(envelope{IdempotencyKey: req.IdempotencyKey, Action: req.Action, OrderingKey: req.OrderingKey,
			CorrelationID: req.CorrelationID, Document: req.Document})
		if err != nil {
			return sdk.Permanent("encode body: %v", err), nil
		}
	}
	target := strings.ReplaceAll(cfg.URL, "{action}", url.PathEscape(req.Action))
	// The request was written to the wire: from then on a failure leaves
	// the outcome unknown (the target may have applied it).
	var wrote bool
	var wroteMu sync.Mutex
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
		wroteMu.Lock()
		wrote = true
		wroteMu.Unlock()
	}}
	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return sdk.Permanent("request: %v", err), nil
	}
	c.headers(hreq, cfg)
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Idempotency-Key", req.IdempotencyKey)
	hreq.Header.Set("X-Plantsync-Action", req.Action)
	if req.CorrelationID != "" {
		hreq.Header.Set("X-Plantsync-Correlation-Id", req.CorrelationID)
	}
	if req.Attempt > 0 {
		hreq.Header.Set("X-Plantsync-Attempt", strconv.Itoa(req.Attempt))
	}
	if cfg.HMACSecret != "" {
		hreq.Header.Set(cfg.SignatureHeader, Sign(cfg.HMACSecret, body))
	}
	resp, err := client.Do(hreq)
	if err != nil {
		wroteMu.Lock()
		uncertain := wrote
		wroteMu.Unlock()
		res := sdk.Retryable(0, "POST %s: %v", target, err)
		res.Uncertain = uncertain
		return res, nil
	}
	defer func() { _ = resp.Body.Close() }()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_, _ = io.Copy(io.Discard, resp.Body)
	return classify(resp, answer, cfg.ReferenceField, time.Now()), nil
}

func (c *Connector) headers(r *http.Request, cfg Config) {
	r.Header.Set("User-Agent", "plantsync-webhook/"+Version)
	for k, v := range cfg.Headers {
		r.Header.Set(k, v)
	}
}

// classify maps an HTTP answer to an outcome: 2xx ok; 408, 429 and 5xx
// retryable (honouring Retry-After); every other status permanent.
func classify(resp *http.Response, answer []byte, refField string, now time.Time) sdk.DeliverResponse {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return sdk.OK(reference(resp, answer, refField))
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		res := sdk.Retryable(retryAfter(resp.Header.Get("Retry-After"), now), "HTTP %d: %s", code, excerpt(answer))
		// A 5xx or 408 may come after the target acted (e.g. a gateway
		// timeout in front of a slow but working backend).
		res.Uncertain = code != http.StatusTooManyRequests
		return res
	}
	return sdk.Permanent("HTTP %d: %s", code, excerpt(answer))
}

// reference is the target's id of the document: a field of a JSON answer,
// else the Location header.
func reference(resp *http.Response, answer []byte, field string) string {
	if field != "" && len(answer) > 0 {
		var obj map[string]any
		if json.Unmarshal(answer, &obj) == nil {
			switch v := obj[field].(type) {
			case string:
				return v
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
	}
	return resp.Header.Get("Location")
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	if s == "" {
		return "(empty answer)"
	}
	return s
}

// Lookup implements sdk.Destination: GET lookup_url; 200 found, 404 or 410
// not found, anything else unknown. Without lookup_url it answers unknown,
// and the target's own idempotency handling is relied on.
func (c *Connector) Lookup(ctx context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error) {
	cfg, client, err := c.current()
	if err != nil {
		return sdk.LookupResponse{}, err
	}
	if cfg.LookupURL == "" {
		return sdk.LookupResponse{Status: sdk.LookupUnknown, Message: "no lookup_url configured; the target's handling of the Idempotency-Key header is relied on"}, nil
	}
	target := strings.ReplaceAll(cfg.LookupURL, "{key}", url.PathEscape(req.IdempotencyKey))
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return sdk.LookupResponse{}, err
	}
	c.headers(hreq, cfg)
	hreq.Header.Set("Accept", "application/json")
	if req.Action != "" {
		hreq.Header.Set("X-Plantsync-Action", req.Action)
	}
	resp, err := client.Do(hreq)
	if err != nil {
		return sdk.LookupResponse{Status: sdk.LookupUnknown, Message: fmt.Sprintf("GET %s: %v", target, err)}, nil
	}
	defer func() { _ = resp.Body.Close() }()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_, _ = io.Copy(io.Discard, resp.Body)
	switch {
	case resp.StatusCode == http.StatusOK:
		return sdk.LookupResponse{Status: sdk.LookupFound, ExternalRef: reference(resp, answer, cfg.ReferenceField)}, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return sdk.LookupResponse{Status: sdk.LookupNotFound}, nil
	}
	return sdk.LookupResponse{Status: sdk.LookupUnknown, Message: fmt.Sprintf("GET %s: HTTP %d: %s", target, resp.StatusCode, excerpt(answer))}, nil
}

// Health implements sdk.Destination: GET health_url when configured.
func (c *Connector) Health(ctx context.Context, _ sdk.HealthRequest) (sdk.HealthResponse, error) {
	cfg, client, err := c.current()
	if err != nil {
		return sdk.HealthResponse{Message: err.Error()}, nil
	}
	if cfg.HealthURL == "" {
		return sdk.HealthResponse{Healthy: true, Message: "no health_url configured"}, nil
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.HealthURL, nil)
	if err != nil {
		return sdk.HealthResponse{Message: err.Error()}, nil
	}
	c.headers(hreq, cfg)
	resp, err := client.Do(hreq)
	if err != nil {
		return sdk.HealthResponse{Message: err.Error()}, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return sdk.HealthResponse{Message: fmt.Sprintf("GET %s: HTTP %d", cfg.HealthURL, resp.StatusCode)}, nil
	}
	return sdk.HealthResponse{Healthy: true}, nil
}
