package main

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// Config is the plugin's `config:` section (README.md lists every key).
type Config struct {
	// URL of the Tryton server, e.g. http://erp.example.com:8000.
	URL string `json:"url"`
	// Database is the Tryton database name.
	Database string `json:"database"`
	User     string `json:"user"`
	// Password is a file:PATH or env:NAME reference (the host resolves it).
	Password string `json:"password"`
	// Company is the id of the company documents belong to.
	Company int `json:"company"`
	// Language of Tryton's messages.
	Language string `json:"language"`
	// Timeout bounds one JSON-RPC call.
	Timeout sdk.Duration `json:"timeout"`
	// DefaultWarehouse is the warehouse code used when a document names
	// none.
	DefaultWarehouse string `json:"default_warehouse"`
	// QuantityRounding is how a quantity with more decimals than its unit
	// allows is fitted: "up" (default: never order less than needed),
	// "half_up", or "refuse" (a permanent error).
	QuantityRounding string `json:"quantity_rounding"`
	// StatusMap maps plantsync production statuses to Tryton production
	// states (request, draft, waiting, assigned, running, done,
	// cancelled); entries add to or override the defaults.
	StatusMap map[string]string `json:"status_map"`
	// InsecureSkipVerify disables certificate checks for an https URL:
	// for a test server only.
	InsecureSkipVerify bool `json:"insecure_skip_verify"`
	// ChangesSettle is how far back change capture reads again after it
	// caught up: on PostgreSQL a record's write_date is its transaction's
	// start, so a long transaction can commit a record dated before ones
	// already read. Records already reported are not reported again. Keep
	// it above the longest transaction plus the capture's poll interval.
	ChangesSettle sdk.Duration `json:"changes_settle"`
}

// NewDefaultConfig is the one place defaults are set.
func NewDefaultConfig() Config {
	return Config{User: "admin", Company: 1, Language: "en", Timeout: sdk.Duration(30 * time.Second),
		DefaultWarehouse: "WH", QuantityRounding: "up", ChangesSettle: sdk.Duration(10 * time.Minute)}
}

// defaultStatusMap maps common MES status words to Tryton states.
var defaultStatusMap = map[string]string{
	"request": "request", "draft": "draft", "planned": "draft",
	"waiting": "waiting", "released": "waiting",
	"assigned": "assigned", "ready": "assigned",
	"running": "running", "started": "running", "in_progress": "running",
	"done": "done", "completed": "done", "finished": "done",
	"cancelled": "cancelled", "canceled": "cancelled",
}

var trytonStates = map[string]bool{"request": true, "draft": true, "waiting": true, "assigned": true, "running": true, "done": true, "cancelled": true}

// Validate checks the config without touching the network.
func (c *Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("url: %q; want the Tryton server's base URL, e.g. http://127.0.0.1:8000", c.URL))
	}
	if c.Database == "" {
		errs = append(errs, errors.New("database: required, the Tryton database name"))
	}
	if c.User == "" {
		errs = append(errs, errors.New("user: required, e.g. admin"))
	}
	if c.Password == "" {
		errs = append(errs, errors.New("password: required, as file:/path or env:NAME"))
	}
	if c.Company < 1 {
		errs = append(errs, fmt.Errorf("company: %d; want the company id, e.g. 1", c.Company))
	}
	if c.Timeout.D() <= 0 {
		errs = append(errs, errors.New("timeout: must be positive, e.g. 30s"))
	}
	if c.ChangesSettle.D() < 0 {
		errs = append(errs, errors.New("changes_settle: must not be negative; e.g. 10m, longer than the longest Tryton transaction (0: never read back)"))
	}
	switch c.QuantityRounding {
	case "up", "half_up", "refuse":
	default:
		errs = append(errs, fmt.Errorf("quantity_rounding: %q; want up, half_up or refuse", c.QuantityRounding))
	}
	for k, v := range c.StatusMap {
		if !trytonStates[v] {
			errs = append(errs, fmt.Errorf("status_map.%s: %q is not a Tryton production state; want request, draft, waiting, assigned, running, done or cancelled", k, v))
		}
	}
	return errors.Join(errs...)
}
