package witness

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
)

// Server is a C2SP tlog-witness: it cosigns the checkpoints of the logs it
// trusts, each consistent with the last one it cosigned for that origin,
// and keeps that last one on disk (one file per origin, written and synced
// before it answers). It serves
//
//	POST /add-checkpoint             the submission API
//	GET  /<hex SHA-256 of origin>/checkpoint  the latest cosigned checkpoint
//
// rulelock's tests run it as the real witness a gateway talks to; it
// follows the specification's status codes exactly.
type Server struct {
	signer note.Signer
	logs   map[string][]note.Verifier // by origin
	dir    string

	mu     sync.Mutex // serialises add-checkpoint: check and update are atomic
	latest map[string]cosigned
}

// cosigned is the latest checkpoint a Server cosigned for a log.
type cosigned struct {
	audit.Checkpoint
	note []byte // with the log's and the witness's signatures
}

// NewServer returns a witness signing with signer, trusting the log keys
// in logs (a key's name is its log's origin) and keeping its state in dir.
func NewServer(signer note.Signer, logs []note.Verifier, dir string) (*Server, error) {
	s := &Server{signer: signer, logs: map[string][]note.Verifier{}, dir: dir, latest: map[string]cosigned{}}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("new witness: %w", err)
	}
	for _, v := range logs {
		s.logs[v.Name()] = append(s.logs[v.Name()], v)
		b, err := os.ReadFile(s.stateFile(v.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("new witness: %w", err)
		}
		n, err := note.Open(b, note.VerifierList(v))
		if err != nil {
			return nil, fmt.Errorf("new witness: state of %s: %w", v.Name(), err)
		}
		cp, err := audit.ParseCheckpoint([]byte(n.Text))
		if err != nil {
			return nil, fmt.Errorf("new witness: state of %s: %w", v.Name(), err)
		}
		s.latest[v.Name()] = cosigned{cp, b}
	}
	return s, nil
}

func (s *Server) stateFile(origin string) string {
	return filepath.Join(s.dir, originHash(origin))
}

func originHash(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(h[:])
}

// maxRequest bounds an add-checkpoint body: 63 proof lines and a note.
const maxRequest = 64 << 10

// ServeHTTP serves the witness's API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/add-checkpoint" {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		s.addCheckpoint(w, r)
		return
	}
	hash, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/checkpoint")
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	var found []byte
	for origin, c := range s.latest {
		if originHash(origin) == hash {
			found = c.note
		}
	}
	s.mu.Unlock()
	if found == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(found)
}

// request is a parsed add-checkpoint body.
type request struct {
	old   int64
	proof tlog.TreeProof
	note  []byte
}

func parseRequest(b []byte) (*request, error) {
	head, msg, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return nil, errors.New("no empty line before the checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	old, ok := strings.CutPrefix(lines[0], "old ")
	req := &request{note: msg}
	if req.old, ok = parseSizeOK(old, ok); !ok {
		return nil, fmt.Errorf("bad old size line %q", lines[0])
	}
	if len(lines)-1 > 63 {
		return nil, errors.New("more than 63 proof lines")
	}
	for _, l := range lines[1:] {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("bad proof line %q", l)
		}
		req.proof = append(req.proof, tlog.Hash(h))
	}
	return req, nil
}

func parseSizeOK(s string, ok bool) (int64, bool) {
	if !ok {
		return 0, false
	}
	return parseSize(s)
}

func (s *Server) addCheckpoint(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
	if err != nil {
		http.Error(w, "request too large", http.StatusBadRequest)
		return
	}
	req, err := parseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, err = note.Open(req.note, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		http.Error(w, "malformed checkpoint note", http.StatusBadRequest)
		return
	}
	cp, err := audit.ParseCheckpoint([]byte(uv.Note.Text))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	keys, ok := s.logs[cp.Origin]
	if !ok {
		http.Error(w, "unknown log origin", http.StatusNotFound)
		return
	}
	if _, err := note.Open(req.note, note.VerifierList(keys...)); err != nil {
		http.Error(w, "checkpoint not signed by the log: "+err.Error(), http.StatusForbidden)
		return
	}
	if cp.Size > 1<<62 {
		http.Error(w, "tree size beyond 2^62", http.StatusBadRequest)
		return
	}
	if req.old > cp.Size {
		http.Error(w, "old size beyond the checkpoint's size", http.StatusBadRequest)
		return
	}
	if cp.Size == 0 && cp.Root != emptyRoot {
		http.Error(w, "a checkpoint of size 0 must have the empty tree's hash", http.StatusUnprocessableEntity)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.latest[cp.Origin]
	if req.old != prev.Size {
		w.Header().Set("Content-Type", "text/x.tlog.size")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, "%s\n", formatSize(prev.Size))
		return
	}
	if err := checkConsistency(req, prev.Checkpoint, cp); err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	signed, err := note.Sign(&note.Note{Text: uv.Note.Text}, s.signer)
	if err != nil {
		http.Error(w, "cosign: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_, sig, _ := bytes.Cut(signed, []byte("\n\n"))
	state := append(bytes.Clone(req.note), sig...)
	if err := fsx.WriteFileAtomic(s.stateFile(cp.Origin), state, 0o600); err != nil {
		http.Error(w, "persist: "+err.Error(), http.StatusInternalServerError)
		return
	}
	s.latest[cp.Origin] = cosigned{cp, state}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(sig)
}

// emptyRoot is the RFC 6962 hash of the empty tree: SHA-256 of nothing.
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

// checkConsistency checks the request's proof from prev (the tree the
// witness cosigned last, of size req.old) to cp.
func checkConsistency(req *request, prev, cp audit.Checkpoint) error {
	switch {
	case req.old == 0:
		if len(req.proof) != 0 {
			return errors.New("a proof from the empty tree must be empty")
		}
	case req.old == cp.Size:
		if cp.Root != prev.Root {
			return fmt.Errorf("a checkpoint of size %d with another root than the one cosigned", cp.Size)
		}
	default:
		if err := tlog.CheckTree(req.proof, cp.Size, cp.Root, prev.Size, prev.Root); err != nil {
			return fmt.Errorf("consistency proof from %d: %v", prev.Size, err)
		}
	}
	return nil
}
