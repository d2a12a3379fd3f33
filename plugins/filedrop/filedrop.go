package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Version is the plugin's version, reported by Configure.
const Version = "1.0.0"

// maxInflightFiles bounds the files read but not yet acknowledged, so a
// folder of thousands of files does not sit in memory at once.
const maxInflightFiles = 32

// Filedrop is the source. It implements sdk.Source.
type Filedrop struct {
	log *slog.Logger
	now func() time.Time

	readMu sync.Mutex // one Read at a time

	mu       sync.Mutex
	cfg      Config
	mappings []*mapping
	read     *readState // nil between Reads
	lastErr  string
}

// readState is what one Read has sent and waits to have acknowledged.
type readState struct {
	seq      uint64
	inflight map[string]*fileState // by file name
	wake     chan struct{}
}

// fileState is one file read in the current Read.
type fileState struct {
	name    string
	lastSeq uint64
	bad     []rowError
	fileErr string
}

// New returns an unconfigured source logging to log.
func New(log *slog.Logger) *Filedrop {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Filedrop{log: log, now: time.Now}
}

// Configure implements sdk.Source.
func (f *Filedrop) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	cfg := NewDefaultConfig()
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	mappings, err := cfg.compile()
	if err != nil {
		return sdk.ConfigureResponse{}, err
	}
	if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
		return sdk.ConfigureResponse{}, fmt.Errorf("dir: %s is not a readable folder", cfg.Dir)
	}
	for _, d := range []string{cfg.DoneDir, cfg.FailedDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return sdk.ConfigureResponse{}, fmt.Errorf("done_dir/failed_dir: %w", err)
		}
	}
	f.mu.Lock()
	f.cfg, f.mappings = cfg, mappings
	f.mu.Unlock()
	f.log.Info("filedrop configured", "name", req.Name, "dir", cfg.Dir, "mappings", len(mappings))
	return sdk.ConfigureResponse{Version: Version}, nil
}

// Read implements sdk.Source: it scans the folder every poll_interval and
// sends the records of each settled file.
func (f *Filedrop) Read(ctx context.Context, _ sdk.ReadRequest, send func([]sdk.Record) error) error {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	st := &readState{inflight: map[string]*fileState{}, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	if f.mappings == nil {
		f.mu.Unlock()
		return errors.New("filedrop: not configured")
	}
	f.read = st
	cfg := f.cfg
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.read = nil
		f.mu.Unlock()
	}()
	t := time.NewTicker(cfg.PollInterval.D())
	defer t.Stop()
	for {
		if err := f.scan(ctx, st, cfg, send); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-st.wake:
		}
	}
}

// scan sends the files that are ready and not in flight, oldest first.
func (f *Filedrop) scan(ctx context.Context, st *readState, cfg Config, send func([]sdk.Record) error) error {
	entries, err := os.ReadDir(cfg.Dir)
	if err != nil {
		f.setErr(fmt.Sprintf("read %s: %v", cfg.Dir, err))
		return nil
	}
	type cand struct {
		name string
		mod  time.Time
	}
	var files []cand
	now := f.now()
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || ignored(name) {
			continue
		}
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < cfg.Settle.D() {
			continue
		}
		files = append(files, cand{name, info.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool {
		if !files[i].mod.Equal(files[j].mod) {
			return files[i].mod.Before(files[j].mod)
		}
		return files[i].name < files[j].name
	})
	for _, c := range files {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.mu.Lock()
		_, busy := st.inflight[c.name]
		full := len(st.inflight) >= maxInflightFiles
		f.mu.Unlock()
		if busy {
			continue
		}
		if full {
			return nil
		}
		if err := f.sendFile(st, cfg, c.name, send); err != nil {
			return err
		}
	}
	f.setErr("")
	return nil
}

// ignored are names that are hidden or still being written by convention.
func ignored(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "~") {
		return true
	}
	for _, s := range []string{".tmp", ".part", ".partial", ".reason", ".swp"} {
		if strings.HasSuffix(strings.ToLower(name), s) {
			return true
		}
	}
	return false
}

func (f *Filedrop) setErr(s string) {
	f.mu.Lock()
	f.lastErr = s
	f.mu.Unlock()
}

// sendFile maps one file and sends its records: events for good rows,
// source.error events for malformed ones.
func (f *Filedrop) sendFile(st *readState, cfg Config, name string, send func([]sdk.Record) error) error {
	fs := &fileState{name: name}
	var recs []sdk.Record
	now := f.now()
	f.mu.Lock()
	mappings := f.mappings
	f.mu.Unlock()
	m := matchMapping(mappings, name)
	data, err := readLimited(filepath.Join(cfg.Dir, name), cfg.MaxFileBytes)
	switch {
	case m == nil:
		fs.fileErr = fmt.Sprintf("no files[] pattern matches %q", name)
	case err != nil:
		fs.fileErr = err.Error()
	default:
		rows, bad, perr := m.parse(name, data)
		fs.bad = bad
		if perr != nil {
			fs.fileErr = perr.Error()
		}
		seen := map[string]int{}
		for _, r := range rows {
			id, ev, err := m.event(name, r, now)
			if err == nil {
				if first, dup := seen[id]; dup {
					err = fmt.Errorf("row id %q repeats line %d", strings.TrimPrefix(id, m.cfg.EventType+"|"), first)
				} else {
					seen[id] = r.line
				}
			}
			if err != nil {
				fs.bad = append(fs.bad, rowError{line: r.line, reason: err.Error(), raw: r.raw})
				continue
			}
			recs = append(recs, sdk.Record{ID: id, Event: ev})
		}
	}
	sort.Slice(fs.bad, func(i, j int) bool { return fs.bad[i].line < fs.bad[j].line })
	if fs.fileErr != "" {
		recs = append(recs, errorRecord(name, 0, fs.fileErr, ""))
	}
	for _, b := range fs.bad {
		recs = append(recs, errorRecord(name, b.line, b.reason, b.raw))
	}
	f.mu.Lock()
	for i := range recs {
		st.seq++
		recs[i].Seq = st.seq
	}
	fs.lastSeq = st.seq
	st.inflight[name] = fs
	f.mu.Unlock()
	if len(recs) == 0 {
		// Nothing to wait for (an empty file or just a header).
		f.finish(fs)
		f.mu.Lock()
		delete(st.inflight, name)
		f.mu.Unlock()
		return nil
	}
	f.log.Debug("file read", "file", name, "records", len(recs), "malformed", len(fs.bad))
	for len(recs) > 0 {
		n := min(len(recs), cfg.BatchSize)
		if err := send(recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

func matchMapping(ms []*mapping, name string) *mapping {
	for _, m := range ms {
		if ok, _ := filepath.Match(m.cfg.Pattern, name); ok {
			return m
		}
	}
	return nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = fh.Close() }()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file is larger than max_file_bytes (%d)", limit)
	}
	return data, nil
}

// errorRecord is the source.error event of a malformed row (line > 0) or
// file (line 0). Its id is fixed by file name and line, so a file read
// again yields the same event.
func errorRecord(file string, line int, reason, raw string) sdk.Record {
	loc := file
	if line > 0 {
		loc = fmt.Sprintf("%s line %d", file, line)
	}
	ev := &pb.Event{Type: "source.error", SchemaVersion: 1, Source: &pb.Source{Uri: fmt.Sprintf("file:%s#line=%d", file, line)},
		Attributes: map[string]string{"file": file}}
	ev.Payload = &pb.Event_SourceError{SourceError: &pb.SourceError{Reason: reason, Location: loc, Raw: []byte(raw)}}
	return sdk.Record{ID: fmt.Sprintf("source.error|%s|%d", file, line), Event: ev}
}

// Ack implements sdk.Source: a file whose records are all committed moves
// to done/ (or failed/ when it had malformed rows).
func (f *Filedrop) Ack(_ context.Context, req sdk.AckRequest) (sdk.AckResponse, error) {
	f.mu.Lock()
	st := f.read
	var ready []*fileState
	if st != nil {
		for name, fs := range st.inflight {
			if fs.lastSeq <= req.Through {
				ready = append(ready, fs)
				delete(st.inflight, name)
			}
		}
	}
	f.mu.Unlock()
	sort.Slice(ready, func(i, j int) bool { return ready[i].lastSeq < ready[j].lastSeq })
	for _, fs := range ready {
		f.finish(fs)
	}
	if st != nil && len(ready) > 0 {
		// Room for more files without waiting for the next poll.
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
	return sdk.AckResponse{}, nil
}

// finish moves a fully committed file.
func (f *Filedrop) finish(fs *fileState) {
	f.mu.Lock()
	cfg := f.cfg
	f.mu.Unlock()
	src := filepath.Join(cfg.Dir, fs.name)
	if fs.fileErr == "" && len(fs.bad) == 0 {
		if dst, err := move(src, cfg.DoneDir); err != nil {
			f.log.Error("cannot move file to done", "file", fs.name, "error", err)
			f.setErr(err.Error())
		} else {
			f.log.Info("file delivered", "file", fs.name, "to", dst)
		}
		return
	}
	var b strings.Builder
	if fs.fileErr != "" {
		fmt.Fprintf(&b, "file: %s\n", fs.fileErr)
	}
	for _, r := range fs.bad {
		fmt.Fprintf(&b, "line %d: %s\n", r.line, r.reason)
	}
	dst, err := move(src, cfg.FailedDir)
	if err != nil {
		f.log.Error("cannot move file to failed", "file", fs.name, "error", err)
		f.setErr(err.Error())
		return
	}
	if err := os.WriteFile(dst+".reason", []byte(b.String()), 0o640); err != nil {
		f.log.Error("cannot write reason file", "file", dst+".reason", "error", err)
	}
	f.log.Warn("file had malformed rows; good rows delivered, file moved to failed", "file", fs.name, "to", dst,
		"malformed", len(fs.bad), "reason", strings.SplitN(b.String(), "\n", 2)[0])
}

// move renames src into dir, keeping an existing file of the same name.
func move(src, dir string) (string, error) {
	base := filepath.Base(src)
	dst := filepath.Join(dir, base)
	if _, err := os.Lstat(dst); err == nil {
		ext := filepath.Ext(base)
		dst = filepath.Join(dir, fmt.Sprintf("%s.%d%s", strings.TrimSuffix(base, ext), time.Now().UnixNano(), ext))
	}
	err := os.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		err = copyFile(src, dst)
		if err == nil {
			err = os.Remove(src)
		}
	}
	return dst, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// Health implements sdk.Source.
func (f *Filedrop) Health(context.Context, sdk.HealthRequest) (sdk.HealthResponse, error) {
	f.mu.Lock()
	cfg, last := f.cfg, f.lastErr
	f.mu.Unlock()
	if cfg.Dir == "" {
		return sdk.HealthResponse{Message: "not configured"}, nil
	}
	if _, err := os.Stat(cfg.Dir); err != nil {
		return sdk.HealthResponse{Message: err.Error()}, nil
	}
	if last != "" {
		return sdk.HealthResponse{Message: last}, nil
	}
	return sdk.HealthResponse{Healthy: true}, nil
}
