package audit

import (
	"errors"
	"fmt"
	"os"
)

// Snapshot is a log directory read as it was when OpenSnapshot read it,
// without the lock and without changing anything, so that a log a running
// gateway holds can be read back (replay, verify --replay). It holds the
// entries that were intact then: a frame being written, or a torn tail
// (which Open would repair), ends it. It implements what readers of the
// log need (Size, ReadEntries, ReadEntry, Blob) and nothing that writes.
type Snapshot struct {
	l *Log // segments and locations only: no writer, no lock
}

// OpenSnapshot reads the log in dir as Open would recover it, checking
// every frame and the hash chain, without locking it or changing
// anything. Damage is a *CorruptError (ErrCorrupt), reported when two
// reads agree on it. When they do not, a writer is appending: the
// snapshot then ends at the last intact frame of the last segment (a
// frame being written is not damage), and still holds every entry the
// checkpoint and the stored hashes vouch for.
func OpenSnapshot(dir string) (*Snapshot, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", dir, err)
	}
	open := func(name string) (file, error) { return openOSFile(name, os.O_RDONLY, 0) }
	var prev *CorruptError
	for _, live := range []bool{false, false, true} {
		sc, err := scanLogLive(dir, open, live)
		var ce *CorruptError
		switch {
		case err == nil:
			return &Snapshot{l: &Log{dir: dir, segs: sc.segs, locs: sc.locs, size: sc.size}}, nil
		case !errors.As(err, &ce):
			sc.close()
			return nil, fmt.Errorf("open audit log %s: %w", dir, err)
		case live || prev != nil && *prev == *ce:
			sc.close()
			return nil, fmt.Errorf("open audit log %s: %w", dir, err)
		}
		sc.close()
		prev = ce
	}
	panic("unreachable")
}

// Size returns the number of entries the snapshot holds.
func (s *Snapshot) Size() int64 { return s.l.size }

// ReadEntry returns the encoded entry at index i.
func (s *Snapshot) ReadEntry(i int64) ([]byte, error) { return s.l.ReadEntry(i) }

// ReadEntries returns the payloads of entries [lo, hi), as Log.ReadEntries.
func (s *Snapshot) ReadEntries(lo, hi int64) ([][]byte, error) { return s.l.ReadEntries(lo, hi) }

// Blob returns the content of a field stored by digest.
func (s *Snapshot) Blob(d Digest) ([]byte, error) { return s.l.Blob(d) }

// Unseal opens a sensitive value with the log's salts, as Log.Unseal:
// replay re-evaluates sensitive members when the salts are there.
func (s *Snapshot) Unseal(c Commitment) ([]byte, error) { return s.l.Unseal(c) }

// Close closes the snapshot's files.
func (s *Snapshot) Close() error {
	var errs []error
	for _, seg := range s.l.segs {
		errs = append(errs, seg.f.Close())
	}
	return errors.Join(errs...)
}
