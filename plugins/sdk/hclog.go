package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter is the hclog.Logger go-plugin logs through on the host: it
// forwards to slog and scrubs secrets from the message and every value.
// go-plugin logs each JSON line of the plugin's stderr through it (under
// the name of the binary), so a plugin's logs appear as the host's own
// records, at the plugin's level, with the plugin's fields.
type hclogAdapter struct {
	l       *slog.Logger
	name    string
	implied []any
	scrub   func() *Scrubber
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclogAdapter(l *slog.Logger, scrub func() *Scrubber) *hclogAdapter {
	return &hclogAdapter{l: l, scrub: scrub}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lv := slogLevel(level)
	ctx := context.Background()
	if !a.l.Enabled(ctx, lv) {
		return
	}
	s := a.scrub()
	attrs := make([]slog.Attr, 0, len(args)/2+2)
	if a.name != "" {
		attrs = append(attrs, slog.String("logger", a.name))
	}
	add := func(kv []any) {
		for i := 0; i < len(kv); i++ {
			k, ok := kv[i].(string)
			if !ok || i+1 == len(kv) {
				// hclog's convention for a lone value.
				attrs = append(attrs, slog.Any("EXTRA_VALUE_AT_END", scrubValue(s, kv[i])))
				continue
			}
			i++
			switch k {
			case "timestamp":
				// go-plugin adds the plugin's own timestamp; the record
				// has the host's.
				continue
			case "plugin":
				// go-plugin's "plugin" is the binary's path; the host's
				// logger already says "plugin" (the configured name).
				k = "path"
			}
			attrs = append(attrs, slog.Any(s.Scrub(k), scrubValue(s, kv[i])))
		}
	}
	add(a.implied)
	add(args)
	a.l.LogAttrs(ctx, lv, s.Scrub(msg), attrs...)
}

// scrubValue scrubs a log value of any type. Values without a secret keep
// their type; a value that held one is logged as its scrubbed text.
func scrubValue(s *Scrubber, v any) any {
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, json.Number:
		return v
	case string:
		return s.Scrub(x)
	case []byte:
		return s.Scrub(string(x))
	case error:
		return s.Scrub(x.Error())
	case fmt.Stringer:
		return s.Scrub(x.String())
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return s.Scrub(fmt.Sprint(v))
	}
	if out := s.Scrub(string(raw)); out != string(raw) {
		return out
	}
	return v
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l hclog.Level) bool {
	return a.l.Enabled(context.Background(), slogLevel(l))
}

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.implied = append(append([]any(nil), a.implied...), args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

// SetLevel is ignored: the slog handler owns the level.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

func (a *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn} {
		if a.enabled(l) {
			return l
		}
	}
	return hclog.Error
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &lineWriter{log: func(line string) { a.Info(line) }}
}

// lineWriter logs each line written to it; go-plugin hands it the output a
// plugin writes to os.Stdout or os.Stderr after Serve redirected them.
type lineWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	log func(line string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			// A line longer than 64 KiB is logged in pieces rather than
			// held forever.
			if w.buf.Len() > 64<<10 {
				w.log(w.buf.String())
				w.buf.Reset()
			}
			return len(p), nil
		}
		line := string(bytes.TrimRight(w.buf.Next(i+1), "\r\n"))
		if line != "" {
			w.log(line)
		}
	}
}
