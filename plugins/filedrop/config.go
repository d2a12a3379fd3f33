package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// Config is the plugin's `config:` section (README.md lists every key).
type Config struct {
	// Dir is the watched folder.
	Dir string `json:"dir"`
	// DoneDir and FailedDir receive processed files (defaults: Dir/done,
	// Dir/failed).
	DoneDir   string `json:"done_dir"`
	FailedDir string `json:"failed_dir"`
	// PollInterval is how often Dir is scanned.
	PollInterval sdk.Duration `json:"poll_interval"`
	// Settle is how long a file must be unchanged before it is read, so a
	// file still being written is left alone.
	Settle sdk.Duration `json:"settle"`
	// BatchSize is the number of records per batch to the agent.
	BatchSize int `json:"batch_size"`
	// MaxFileBytes refuses larger files (to failed/).
	MaxFileBytes int64 `json:"max_file_bytes"`
	// Files maps file name patterns to events; the first match wins.
	Files []FileMapping `json:"files"`
}

// FileMapping says how the rows of matching files become events.
type FileMapping struct {
	// Pattern is a glob on the file name, e.g. "shortage_*.csv".
	Pattern string `json:"pattern"`
	// Format is csv, json (an array of objects, or one object per line) or
	// auto (by extension: .csv; .json, .jsonl, .ndjson).
	Format string `json:"format"`
	// Delimiter of CSV fields (default ",").
	Delimiter string `json:"delimiter"`
	// DecimalComma reads "8,5" as 8.5 in decimal fields.
	DecimalComma bool `json:"decimal_comma"`
	// EventType is the canonical event type, e.g. material.shortage.
	EventType string `json:"event_type"`
	// IDColumns form the row's id (joined with "/"), from which the event
	// id is derived. Empty: file name and line number.
	IDColumns []string `json:"id_columns"`
	// OccurredAtColumn holds when the fact happened; empty: when read.
	OccurredAtColumn string `json:"occurred_at_column"`
	// TimeZone applies to times written without a zone (default UTC).
	TimeZone string `json:"time_zone"`
	// Fields maps payload fields (dotted, e.g. quantity.value) to columns.
	Fields map[string]string `json:"fields"`
	// Attributes maps event attributes to columns.
	Attributes map[string]string `json:"attributes"`
}

// NewDefaultConfig is the one place defaults are set.
func NewDefaultConfig() Config {
	return Config{PollInterval: sdk.Duration(2 * time.Second), Settle: sdk.Duration(2 * time.Second), BatchSize: 500, MaxFileBytes: 64 << 20}
}

// compile checks the config and prepares the mappings; every problem is
// reported with its key.
func (c *Config) compile() ([]*mapping, error) {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir: required, e.g. /srv/plantsync/drop"))
	} else if !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("dir: %q is not absolute", c.Dir))
	}
	if c.DoneDir == "" && c.Dir != "" {
		c.DoneDir = filepath.Join(c.Dir, "done")
	}
	if c.FailedDir == "" && c.Dir != "" {
		c.FailedDir = filepath.Join(c.Dir, "failed")
	}
	if c.PollInterval.D() < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("poll_interval: %s; want at least 10ms, e.g. 2s", c.PollInterval.D()))
	}
	if c.Settle.D() < 0 {
		errs = append(errs, errors.New("settle: must not be negative"))
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("batch_size: %d; want 1 to 10000", c.BatchSize))
	}
	if c.MaxFileBytes < 1 {
		errs = append(errs, fmt.Errorf("max_file_bytes: %d; want a positive size", c.MaxFileBytes))
	}
	if len(c.Files) == 0 {
		errs = append(errs, errors.New("files: at least one mapping is required, e.g. {pattern: \"*.csv\", event_type: material.shortage, ...}"))
	}
	var out []*mapping
	for i, f := range c.Files {
		m, ferrs := compileMapping(fmt.Sprintf("files[%d]", i), f)
		errs = append(errs, ferrs...)
		out = append(out, m)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
