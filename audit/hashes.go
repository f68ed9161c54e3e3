package audit

import (
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// hashStore is the file of tlog stored hashes, with the hashes of the batch
// being committed held in memory until flush.
type hashStore struct {
	mu      sync.RWMutex
	f       file
	n       int64 // stored hashes on file
	pending []tlog.Hash
}

// ReadHashes implements tlog.HashReader.
func (s *hashStore) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]tlog.Hash, len(indexes))
	lo, hi := int64(-1), int64(-1) // the span of the indexes on file
	for _, x := range indexes {
		switch {
		case x < 0:
			return nil, fmt.Errorf("read hash %d: negative index", x)
		case x >= s.n+int64(len(s.pending)):
			return nil, fmt.Errorf("read hash %d: not stored", x)
		case x < s.n:
			if lo < 0 || x < lo {
				lo = x
			}
			hi = max(hi, x)
		}
	}
	// A tile's hashes lie close together on file: read their span at once
	// when it is not much more than what is asked for.
	var span []byte
	if lo >= 0 && hi-lo < 4*int64(len(indexes))+64 {
		span = make([]byte, (hi-lo+1)*tlog.HashSize)
		if _, err := s.f.ReadAt(span, lo*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("read hashes %d to %d: %w", lo, hi, err)
		}
	}
	for i, x := range indexes {
		switch {
		case x >= s.n:
			out[i] = s.pending[x-s.n]
		case span != nil:
			copy(out[i][:], span[(x-lo)*tlog.HashSize:])
		default:
			if _, err := s.f.ReadAt(out[i][:], x*tlog.HashSize); err != nil {
				return nil, fmt.Errorf("read hash %d: %w", x, err)
			}
		}
	}
	return out, nil
}

// add computes the stored hashes for leaf i with hash h.
func (s *hashStore) add(i int64, h tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(i, h, s)
	if err != nil {
		return fmt.Errorf("store hashes for entry %d: %w", i, err)
	}
	s.mu.Lock()
	s.pending = append(s.pending, hs...)
	s.mu.Unlock()
	return nil
}

// flushAt is how many pending stored hashes the writer lets accumulate
// before writing them out (128 KiB). Writing them after every batch put a
// small write beside every fdatasync of the log and slowed it; they are
// rebuilt from the entries on open, and a checkpoint flushes and syncs them
// before it vouches for them.
const flushAt = 4096

// needsFlush reports whether the pending hashes have reached flushAt.
func (s *hashStore) needsFlush() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.pending) >= flushAt
}

// sync writes the pending hashes and syncs the file.
func (s *hashStore) sync() error {
	if err := s.flush(); err != nil {
		return err
	}
	return s.f.Sync()
}

// flush writes the pending hashes to the file (without sync).
func (s *hashStore) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	buf := make([]byte, 0, len(s.pending)*tlog.HashSize)
	for _, h := range s.pending {
		buf = append(buf, h[:]...)
	}
	if _, err := s.f.WriteAt(buf, s.n*tlog.HashSize); err != nil {
		return fmt.Errorf("write hashes: %w", err)
	}
	s.n += int64(len(s.pending))
	s.pending = s.pending[:0]
	return nil
}
