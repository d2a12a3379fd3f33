package sandboxerp

import (
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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrNotFound is returned for a document that does not exist.
var ErrNotFound = errors.New("document not found")

// Config of a sandbox ERP.
type Config struct {
	// Listen is host:port; port 0 picks a free one.
	Listen string
	// Dir holds the document store (sandboxerp.db).
	Dir string
	// HMACSecret, when set, is required to have signed every POST (the
	// webhook plugin's X-Plantsync-Signature: sha256=<hex HMAC-SHA256>).
	HMACSecret string
	// SignatureHeader defaults to X-Plantsync-Signature.
	SignatureHeader string
}

// Document is one document the sandbox holds.
type Document struct {
	ID             string          `json:"id"`
	IdempotencyKey string          `json:"idempotency_key"`
	Action         string          `json:"action"`
	OrderingKey    string          `json:"ordering_key,omitempty"`
	CorrelationID  string          `json:"correlation_id,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	Document       json.RawMessage `json:"document"`
	// Deliveries counts the POSTs that carried this idempotency key: more
	// than one means the sender retried, and the sandbox kept one document.
	Deliveries int `json:"deliveries"`
}

var (
	bucketDocs = []byte("documents") // id (8 bytes big-endian) → Document JSON
	bucketKeys = []byte("keys")      // idempotency key → id
)

// Server is a sandbox ERP.
type Server struct {
	cfg Config
	log *slog.Logger
	db  *bolt.DB
	srv *http.Server
	ln  net.Listener

	mu         sync.Mutex
	failNext   int
	failStatus int
	done       chan struct{}
	once       sync.Once
}

// New opens the document store; Start serves HTTP.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8090"
	}
	if cfg.SignatureHeader == "" {
		cfg.SignatureHeader = "X-Plantsync-Signature"
	}
	if cfg.Dir == "" {
		return nil, errors.New("sandboxerp: dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandboxerp: %w", err)
	}
	db, err := bolt.Open(filepath.Join(cfg.Dir, "sandboxerp.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("sandboxerp: open store: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDocs, bucketKeys} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sandboxerp: init store: %w", err)
	}
	s := &Server{cfg: cfg, log: log.With("component", "sandboxerp"), db: db, done: make(chan struct{})}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Start listens and serves; it returns once the listener is bound.
func (s *Server) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("sandboxerp: listen: %w", err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve failed", "error", err)
		}
	}()
	s.log.Info("sandbox ERP listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the bound address (after Start).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL (after Start).
func (s *Server) URL() string { return "http://" + s.Addr() }

// Shutdown stops serving and closes the store. It is idempotent and safe
// without Start.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		if s.ln != nil {
			err = s.srv.Shutdown(ctx)
			select {
			case <-s.done:
			case <-ctx.Done():
			}
		}
		if cerr := s.db.Close(); cerr != nil && err == nil {
			err = cerr
		}
	})
	return err
}

// FailNext makes the next n POSTs answer status (e.g. 503) without storing
// anything, to show retries.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	s.failNext, s.failStatus = n, status
	s.mu.Unlock()
}

// Handler serves the sandbox's HTTP API:
//
//	POST /webhook                     deliver (Idempotency-Key header, signed body)
//	GET  /documents                   list (?action=, ?since=RFC3339)
//	GET  /documents/{id}              one document
//	GET  /documents/by-key/{key}      lookup by idempotency key (404 if none)
//	POST /admin/fail-next?n=N&status=S  fail the next N POSTs
//	GET  /healthz
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", s.handleDeliver)
	mux.HandleFunc("GET /documents", s.handleList)
	mux.HandleFunc("GET /documents/by-key/{key}", s.handleByKey)
	mux.HandleFunc("GET /documents/{id}", s.handleGet)
	mux.HandleFunc("POST /admin/fail-next", s.handleFailNext)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func (s *Server) handleDeliver(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		problem(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	if s.cfg.HMACSecret != "" {
		m := hmac.New(sha256.New, []byte(s.cfg.HMACSecret))
		m.Write(body)
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		if !hmac.Equal([]byte(r.Header.Get(s.cfg.SignatureHeader)), []byte(want)) {
			problem(w, http.StatusUnauthorized, "%s header missing or wrong", s.cfg.SignatureHeader)
			return
		}
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		problem(w, http.StatusBadRequest, "Idempotency-Key header is required")
		return
	}
	s.mu.Lock()
	if s.failNext > 0 {
		s.failNext--
		code := s.failStatus
		s.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		problem(w, code, "sandbox told to fail this request")
		return
	}
	s.mu.Unlock()
	var env struct {
		IdempotencyKey string          `json:"idempotency_key"`
		Action         string          `json:"action"`
		OrderingKey    string          `json:"ordering_key"`
		CorrelationID  string          `json:"correlation_id"`
		Document       json.RawMessage `json:"document"`
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Document) == 0 {
		problem(w, http.StatusUnprocessableEntity, "body: want the webhook envelope {idempotency_key, action, document}")
		return
	}
	if env.IdempotencyKey != "" && env.IdempotencyKey != key {
		problem(w, http.StatusBadRequest, "idempotency_key %q in the body differs from the Idempotency-Key header %q", env.IdempotencyKey, key)
		return
	}
	action := env.Action
	if action == "" {
		action = r.Header.Get("X-Plantsync-Action")
	}
	doc := Document{IdempotencyKey: key, Action: action, OrderingKey: env.OrderingKey, CorrelationID: env.CorrelationID,
		CreatedAt: time.Now().UTC(), Document: env.Document, Deliveries: 1}
	created := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		docs, keys := tx.Bucket(bucketDocs), tx.Bucket(bucketKeys)
		if id := keys.Get([]byte(key)); id != nil {
			// The same key again: the first document stands.
			if err := json.Unmarshal(docs.Get(id), &doc); err != nil {
				return err
			}
			doc.Deliveries++
		} else {
			seq, err := docs.NextSequence()
			if err != nil {
				return err
			}
			doc.ID = fmt.Sprintf("SBX-%06d", seq)
			if err := keys.Put([]byte(key), boltkv.U64(seq)); err != nil {
				return err
			}
			created = true
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		return docs.Put(boltkv.U64(idSeq(doc.ID)), raw)
	})
	if err != nil {
		problem(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		s.log.Info("document created", "id", doc.ID, "action", doc.Action, "idempotency_key", key)
	} else {
		s.log.Info("document delivered again; kept the first", "id", doc.ID, "idempotency_key", key, "deliveries", doc.Deliveries)
	}
	w.Header().Set("Location", "/documents/"+doc.ID)
	writeJSON(w, code, map[string]any{"id": doc.ID, "created": created})
}

func idSeq(id string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimPrefix(id, "SBX-"), 10, 64)
	return n
}

// Documents returns every document, oldest first, optionally only those of
// action created at or after since.
func (s *Server) Documents(action string, since time.Time) ([]Document, error) {
	var out []Document
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDocs).ForEach(func(_, v []byte) error {
			var d Document
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			if (action == "" || d.Action == action) && !d.CreatedAt.Before(since) {
				out = append(out, d)
			}
			return nil
		})
	})
	return out, err
}

// ByKey returns the document with the idempotency key.
func (s *Server) ByKey(key string) (Document, error) {
	var d Document
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketKeys).Get([]byte(key))
		if id == nil {
			return ErrNotFound
		}
		return json.Unmarshal(tx.Bucket(bucketDocs).Get(id), &d)
	})
	return d, err
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			problem(w, http.StatusBadRequest, "since: %q is not RFC 3339, e.g. 2026-11-27T10:00:00Z", v)
			return
		}
		since = t
	}
	docs, err := s.Documents(r.URL.Query().Get("action"), since)
	if err != nil {
		problem(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if docs == nil {
		docs = []Document{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"documents": docs, "count": len(docs)})
}

func (s *Server) handleByKey(w http.ResponseWriter, r *http.Request) {
	d, err := s.ByKey(r.PathValue("key"))
	if errors.Is(err, ErrNotFound) {
		problem(w, http.StatusNotFound, "no document with idempotency key %q", r.PathValue("key"))
		return
	}
	if err != nil {
		problem(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var d Document
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDocs).Get(boltkv.U64(idSeq(id)))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &d)
	})
	if errors.Is(err, ErrNotFound) || (err == nil && d.ID != id) {
		problem(w, http.StatusNotFound, "no document %q", id)
		return
	}
	if err != nil {
		problem(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleFailNext(w http.ResponseWriter, r *http.Request) {
	n, err1 := strconv.Atoi(r.URL.Query().Get("n"))
	code, err2 := strconv.Atoi(r.URL.Query().Get("status"))
	if err1 != nil || err2 != nil || n < 0 || code < 400 || code > 599 {
		problem(w, http.StatusBadRequest, "want ?n=COUNT&status=4xx|5xx, e.g. ?n=3&status=503")
		return
	}
	s.FailNext(n, code)
	writeJSON(w, http.StatusOK, map[string]int{"fail_next": n, "status": code})
}
