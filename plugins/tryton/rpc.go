package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of the JSON-RPC client.
var (
	// errSession: Tryton answered 401; the session expired (300 s idle by
	// default) or was never valid.
	errSession = errors.New("tryton session expired")
	// errLogin: the configured user and password were refused.
	errLogin = errors.New("tryton login refused")
)

// rpcError is an error Tryton answered with (HTTP 200 and "error").
type rpcError struct {
	Kind    string // e.g. UserError, UserWarning, AccessError, ConcurrencyException
	Message string
}

func (e *rpcError) Error() string {
	if e.Kind == "" {
		return "tryton: " + e.Message
	}
	return "tryton " + e.Kind + ": " + e.Message
}

// permanent reports whether retrying the same call cannot help: the
// business rules or the access rights refused it.
func (e *rpcError) permanent() bool {
	switch e.Kind {
	case "UserError", "UserWarning", "AccessError", "LoginException":
		return true
	}
	return false
}

// transportError is a failure to get an answer; sent says whether the
// request reached the wire (then Tryton may have executed it).
type transportError struct {
	err  error
	sent bool
}

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// client talks JSON-RPC to one Tryton database with a shared session.
type client struct {
	base, db, user, password, lang string
	http                           *http.Client
	ids                            atomic.Int64

	mu      sync.Mutex
	session string // the Authorization header value; "" before login
	gen     int    // bumped at each login, so concurrent 401s log in once
}

func newClient(cfg Config) *client {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}, //nolint:gosec // opt-in, documented as test-only
	}
	return &client{base: strings.TrimRight(cfg.URL, "/"), db: cfg.Database, user: cfg.User, password: cfg.Password, lang: cfg.Language,
		http: &http.Client{Transport: tr, Timeout: cfg.Timeout.D()}}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// post sends one JSON-RPC request to path with auth (may be empty).
func (c *client) post(ctx context.Context, path, auth, method string, params []any, out any) error {
	body, err := json.Marshal(map[string]any{"id": c.ids.Add(1), "method": method, "params": params})
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { sent.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &transportError{err: fmt.Errorf("%s: %w", method, err), sent: sent.Load()}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &transportError{err: fmt.Errorf("%s: read answer: %w", method, err), sent: true}
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return errSession
	case resp.StatusCode != http.StatusOK:
		return &transportError{err: fmt.Errorf("%s: HTTP %d: %s", method, resp.StatusCode, excerpt(raw)), sent: true}
	}
	var env struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return &transportError{err: fmt.Errorf("%s: answer is not JSON-RPC: %s", method, excerpt(raw)), sent: true}
	}
	if len(env.Error) > 0 && string(env.Error) != "null" {
		return parseRPCError(env.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(env.Result, out); err != nil {
		return fmt.Errorf("%s: decode result: %w", method, err)
	}
	return nil
}

// parseRPCError reads Tryton's ["UserError", ["message", "description",
// ...]] (or ["'text'", "traceback"] for an unexpected exception).
func parseRPCError(raw json.RawMessage) error {
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil || len(parts) == 0 {
		return &rpcError{Message: string(raw)}
	}
	var kind string
	_ = json.Unmarshal(parts[0], &kind)
	if len(parts) > 1 {
		var args []any
		if json.Unmarshal(parts[1], &args) == nil && len(args) > 0 {
			var msg []string
			for _, a := range args[:min(2, len(args))] {
				if s, ok := a.(string); ok && s != "" {
					msg = append(msg, s)
				}
			}
			return &rpcError{Kind: kind, Message: strings.Join(msg, " ")}
		}
	}
	// An unexpected server exception: the first element is its text.
	return &rpcError{Message: kind}
}

func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// login opens a session unless another caller did so since gen.
func (c *client) login(ctx context.Context, gen int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen && c.session != "" {
		return nil
	}
	var res []json.RawMessage
	err := c.post(ctx, "/"+c.db+"/", "", "common.db.login", []any{c.user, map[string]any{"password": c.password}, c.lang}, &res)
	var re *rpcError
	if errors.As(err, &re) || errors.Is(err, errSession) {
		return fmt.Errorf("%w: user %s on database %s: %v", errLogin, c.user, c.db, err)
	}
	if err != nil {
		return err
	}
	var uid int64
	var session string
	if len(res) != 2 || json.Unmarshal(res[0], &uid) != nil || json.Unmarshal(res[1], &session) != nil {
		return fmt.Errorf("%w: unexpected login answer", errLogin)
	}
	c.session = "Session " + base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%s:%d:%s", c.user, uid, session)))
	c.gen++
	return nil
}

// call runs a model method with the session, logging in first and again
// once after a 401 (an expired session).
func (c *client) call(ctx context.Context, method string, params []any, out any) error {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		auth, gen := c.session, c.gen
		c.mu.Unlock()
		if auth == "" {
			if err := c.login(ctx, gen); err != nil {
				return err
			}
			continue
		}
		err := c.post(ctx, "/"+c.db+"/", auth, method, params, out)
		if errors.Is(err, errSession) && attempt < 2 {
			if err := c.login(ctx, gen); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// version asks the server's version (no session needed).
func (c *client) version(ctx context.Context) (string, error) {
	var v string
	err := c.post(ctx, "/", "", "common.server.version", []any{}, &v)
	return v, err
}

// date is Tryton's JSON encoding of a date.
type date struct {
	Class string `json:"__class__"`
	Year  int    `json:"year"`
	Month int    `json:"month"`
	Day   int    `json:"day"`
}

func encodeDate(t time.Time) date {
	return date{Class: "date", Year: t.Year(), Month: int(t.Month()), Day: t.Day()}
}

func (d *date) time() time.Time {
	if d == nil {
		return time.Time{}
	}
	return time.Date(d.Year, time.Month(d.Month), d.Day, 0, 0, 0, 0, time.UTC)
}

// decimalValue is Tryton's JSON encoding of a Decimal.
type decimalValue struct {
	Class   string `json:"__class__"`
	Decimal string `json:"decimal"`
}

func encodeDecimal(s string) decimalValue { return decimalValue{Class: "Decimal", Decimal: s} }

// fitDecimal fits a decimal string to digits decimals: rounding "up" (away
// from zero), "half_up", or "refuse" (an error when digits would be lost).
func fitDecimal(s string, digits int, mode string) (string, error) {
	r, ok := new(big.Rat).SetString(strings.TrimSpace(s))
	if !ok {
		return "", fmt.Errorf("%q is not a decimal number", s)
	}
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil)
	scaled := new(big.Rat).Mul(r, new(big.Rat).SetInt(scale))
	q, rem := new(big.Int).QuoRem(scaled.Num(), scaled.Denom(), new(big.Int))
	if rem.Sign() != 0 {
		switch mode {
		case "refuse":
			return "", fmt.Errorf("%s has more than %d decimals", s, digits)
		case "half_up":
			twice := new(big.Int).Mul(new(big.Int).Abs(rem), big.NewInt(2))
			if twice.Cmp(scaled.Denom()) >= 0 {
				q.Add(q, big.NewInt(int64(rem.Sign())))
			}
		default: // up: away from zero
			q.Add(q, big.NewInt(int64(rem.Sign())))
		}
	}
	return new(big.Rat).SetFrac(q, scale).FloatString(digits), nil
}
