package search

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// OpenLog opens the log in logDir (read-only, beside a running gateway)
// for searching with the index, at the cost of what the index does not
// cover: the entries from the index's last one on come from a tail of the
// log (audit.OpenTail, every frame of it checked), the entries before it
// are read where the index recorded them (audit.ReadAt: each frame's CRC
// and index checked). Without a usable index (none yet, another log's, an
// older layout) it opens the whole log (audit.OpenSnapshot). Close the
// returned Source with its Close method.
func (ix *Index) OpenLog(logDir string) (*Log, error) {
	if s, err := ix.openTail(logDir); err == nil && s != nil {
		return s, nil
	}
	snap, err := audit.OpenSnapshot(logDir)
	if err != nil {
		return nil, err
	}
	return &Log{tail: snap}, nil
}

// openTail returns the log from the index's last entry, or nil when the
// index cannot place it.
func (ix *Index) openTail(logDir string) (*Log, error) {
	m, err := ix.readMeta()
	if err != nil || m.V != version || m.Size == 0 {
		return nil, err
	}
	f, err := os.Open(filepath.Join(ix.dir, locsFile))
	if err != nil {
		return nil, err
	}
	s := &Log{dir: logDir, locs: f}
	pos, err := s.recorded(m.Size - 1)
	if err != nil {
		f.Close()
		return nil, err
	}
	if s.tail, err = audit.OpenTail(logDir, pos); err != nil {
		f.Close()
		return nil, err
	}
	// The entry there must be the one the index recorded: the same log.
	e, err := s.tail.ReadEntries(m.Size-1, m.Size)
	if err != nil || tlog.RecordHash(e[0]).String() != m.LastLeaf {
		s.Close()
		return nil, errors.New("search index: another log")
	}
	return s, nil
}

// Log is a log opened for searching (OpenLog).
type Log struct {
	tail *audit.Snapshot // from tail.First() on
	dir  string
	locs *os.File // the index's positions, for the entries before the tail
}

// Size returns the number of entries in the log.
func (s *Log) Size() int64 { return s.tail.Size() }

// Blob returns a field stored by digest.
func (s *Log) Blob(d audit.Digest) ([]byte, error) { return s.tail.Blob(d) }

// Position returns where entry i is.
func (s *Log) Position(i int64) (audit.Position, error) {
	if i >= s.tail.First() {
		return s.tail.Position(i)
	}
	return s.recorded(i)
}

// recorded reads entry i's position from the index.
func (s *Log) recorded(i int64) (audit.Position, error) {
	if s.locs == nil {
		return audit.Position{}, fmt.Errorf("position of entry %d: not in the index", i)
	}
	var b [16]byte
	if _, err := s.locs.ReadAt(b[:], i*16); err != nil {
		return audit.Position{}, fmt.Errorf("position of entry %d: %w", i, err)
	}
	return audit.Position{Index: i, Segment: int64(binary.LittleEndian.Uint64(b[:])), Offset: int64(binary.LittleEndian.Uint64(b[8:]))}, nil
}

// ReadEntries returns the entries [lo, hi).
func (s *Log) ReadEntries(lo, hi int64) ([][]byte, error) {
	first := s.tail.First()
	if lo >= first {
		return s.tail.ReadEntries(lo, hi)
	}
	var out [][]byte
	for i := lo; i < min(hi, first); i++ {
		pos, err := s.recorded(i)
		if err != nil {
			return nil, err
		}
		b, err := audit.ReadAt(s.dir, pos)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if hi > first {
		rest, err := s.tail.ReadEntries(first, hi)
		if err != nil {
			return nil, err
		}
		out = append(out, rest...)
	}
	return out, nil
}

// Close closes the log's files.
func (s *Log) Close() error {
	err := s.tail.Close()
	if s.locs != nil {
		err = errors.Join(err, s.locs.Close())
	}
	return err
}
