package console

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/review"
)

// The console remembers the newest checkpoint it has seen (signed by the
// log's key, Config.LogKey) and checks every checkpoint it is shown
// against it with a consistency proof (RFC 6962): an older one must be a
// prefix of it, a newer one must extend it (and becomes the newest seen),
// one of the same size must have the same root. A log rolled back,
// rewritten or forked after the console saw it fails the check, on the
// log page and on every entry page, whatever its signatures say. The
// newest checkpoint seen is kept in the console's data directory, so the
// check holds across restarts.

// seenFile is the newest checkpoint seen, as the signed note, in DataDir.
const seenFile = "newest-checkpoint"

// ConsistencyProver is what the console needs of a LogAPI to check
// consistency: a proof that the tree of the first m entries is a prefix of
// the tree of the first n (httpapi.AuditLog has it).
type ConsistencyProver interface {
	ConsistencyProof(m, n int64) (tlog.TreeProof, error)
}

// newestSeen is the newest checkpoint the console has seen.
type newestSeen struct {
	mu   sync.Mutex
	cp   audit.Checkpoint
	note []byte // nil: none yet
}

// A consistencyCheck is the verdict on a checkpoint's consistency with the
// newest checkpoint seen before it.
type consistencyCheck struct {
	Verdict string // "verified", "first seen" or "failed"
	OK      bool   // verified or first seen
	Failed  bool
	Detail  string // escaped
	Seen    int64  // the newest seen's size, when there was one
}

// loadSeen reads the newest checkpoint seen from the data directory. One
// that does not verify under the log's key (a key rotated, a file damaged)
// is set aside, not trusted: the next checkpoint shown is then a first.
func (s *Server) loadSeen() {
	if s.cfg.LogKey == nil || s.cfg.DataDir == "" {
		return
	}
	msg, err := os.ReadFile(filepath.Join(s.cfg.DataDir, seenFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			slog.Warn("console: the newest checkpoint seen cannot be read; starting without one", slog.Any("err", err))
		}
		return
	}
	cp, err := checkpointOf(msg, s.cfg.LogKey)
	if err != nil {
		slog.Warn("console: the newest checkpoint seen does not verify under the log's key; starting without one", slog.Any("err", err))
		return
	}
	s.seen.cp, s.seen.note = cp, msg
}

// checkConsistency checks cp, signed as msg and verified by the caller,
// against the newest checkpoint seen, and makes cp the newest seen when it
// extends it.
func (s *Server) checkConsistency(cp audit.Checkpoint, msg []byte) consistencyCheck {
	s.seen.mu.Lock()
	defer s.seen.mu.Unlock()
	if s.seen.note == nil {
		s.rememberSeen(cp, msg)
		return consistencyCheck{Verdict: "first seen", OK: true, Detail: fmt.Sprintf("the first checkpoint this console has seen (%d entries): later ones are checked against it", cp.Size)}
	}
	old := s.seen.cp
	c := consistencyCheck{Verdict: "failed", Failed: true, Seen: old.Size}
	err := s.proveConsistency(old, cp)
	switch {
	case err != nil:
		c.Detail = review.Escape(err.Error())
		slog.Error("console: a checkpoint is not consistent with the newest one seen", slog.Int64("size", cp.Size), slog.Int64("seen", old.Size), slog.Any("err", err))
		return c
	case cp.Size > old.Size:
		s.rememberSeen(cp, msg)
		c.Detail = fmt.Sprintf("extends the newest checkpoint seen before (%d entries): proved append-only", old.Size)
	case cp.Size < old.Size:
		c.Detail = fmt.Sprintf("a prefix of the newest checkpoint seen (%d entries)", old.Size)
	default:
		c.Detail = fmt.Sprintf("the same tree as the newest checkpoint seen (%d entries)", old.Size)
	}
	c.Verdict, c.OK, c.Failed = "verified", true, false
	return c
}

// proveConsistency checks that the smaller of a and b is a prefix of the
// larger, with a consistency proof from the log.
func (s *Server) proveConsistency(a, b audit.Checkpoint) error {
	small, large := a, b
	if small.Size > large.Size {
		small, large = b, a
	}
	switch {
	case small.Size == large.Size:
		if small.Root != large.Root {
			return fmt.Errorf("two checkpoints of %d entries with different roots: the log was rewritten or forked", small.Size)
		}
		return nil
	case small.Size == 0:
		return nil // the empty tree is a prefix of every tree
	}
	p, ok := s.cfg.Log.(ConsistencyProver)
	if !ok {
		return errors.New("this log serves no consistency proofs: not checked")
	}
	proof, err := p.ConsistencyProof(small.Size, large.Size)
	if err != nil {
		return fmt.Errorf("no consistency proof from %d to %d entries: %w", small.Size, large.Size, err)
	}
	if err := tlog.CheckTree(proof, large.Size, large.Root, small.Size, small.Root); err != nil {
		return fmt.Errorf("the tree of %d entries is not a prefix of the tree of %d: %w", small.Size, large.Size, err)
	}
	return nil
}

// rememberSeen makes cp the newest seen and stores it; s.seen.mu is held.
// A store that fails keeps it in memory and says so in the server's log.
func (s *Server) rememberSeen(cp audit.Checkpoint, msg []byte) {
	s.seen.cp, s.seen.note = cp, msg
	if s.cfg.DataDir == "" {
		return
	}
	err := os.MkdirAll(s.cfg.DataDir, 0o700)
	if err == nil {
		err = fsx.WriteFileAtomic(filepath.Join(s.cfg.DataDir, seenFile), msg, 0o600)
	}
	if err != nil {
		slog.Error("console: the newest checkpoint seen is not stored", slog.Any("err", err))
	}
}
