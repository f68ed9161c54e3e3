package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrPosition is returned by OpenTail for a Position the log does not hold
// (another log's, or one past a rollback).
var ErrPosition = errors.New("position not in this log")

// Position is where an entry's frame is in the log: the segment file that
// holds it (named by the segment's first index) and the frame's offset.
// A reader that keeps a Position (an exporter's cursor, a search index)
// can open the rest of the log from it without reading what comes before.
type Position struct {
	Index   int64 // the entry
	Segment int64 // the first index of its segment
	Offset  int64 // where its frame starts in the segment file
}

// Position returns where entry i is.
func (s *Snapshot) Position(i int64) (Position, error) { return s.l.position(i) }

// Position returns where entry i is.
func (l *Log) Position(i int64) (Position, error) { return l.position(i) }

func (l *Log) position(i int64) (Position, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i < l.base || i-l.base >= int64(len(l.locs)) {
		return Position{}, fmt.Errorf("position of entry %d: out of range [%d, %d)", i, l.base, l.base+int64(len(l.locs)))
	}
	lc := l.locs[i-l.base]
	return Position{Index: i, Segment: l.segs[lc.seg].first, Offset: lc.off}, nil
}

// OpenTail is OpenSnapshot from pos on: it holds the entries from
// pos.Index to the end of the log, reads nothing before pos, and checks
// every frame from pos on (CRC, index, the hash chain continuing from the
// chain value pos's frame records). Reading an entry before pos.Index is
// an error. It costs what the tail costs, so a reader that follows a
// large log (export, search) can look again often.
//
// It vouches for less than OpenSnapshot: the frames before pos and the
// checkpoint's root are not checked (rulelock verify checks them). A pos
// whose frame is not entry pos.Index gives ErrPosition; a caller that kept
// the entry's leaf hash should also compare it (another log can have a
// frame of that index at that place).
func OpenTail(dir string, pos Position) (*Snapshot, error) {
	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", dir, err)
	}
	k := 0
	for k < len(firsts) && firsts[k] != pos.Segment {
		k++
	}
	if k == len(firsts) || pos.Index < pos.Segment {
		return nil, fmt.Errorf("open audit log %s: %w: no segment %d for entry %d", dir, ErrPosition, pos.Segment, pos.Index)
	}
	sc := &logScan{live: true}
	s, err := sc.tail(dir, firsts[k:], pos)
	if err != nil {
		sc.close()
		return nil, fmt.Errorf("open audit log %s: %w", dir, err)
	}
	return s, nil
}

func (sc *logScan) tail(dir string, firsts []int64, pos Position) (*Snapshot, error) {
	check := &rootCheck{} // no checkpoint below the tail: its leaves are only collected
	for i, first := range firsts {
		name := filepath.Join(segDir, segName(first))
		f, err := openOSFile(filepath.Join(dir, name), os.O_RDONLY, 0)
		if err != nil {
			return nil, err
		}
		seg := &segment{first: first, f: f}
		sc.segs = append(sc.segs, seg)
		if i == 0 {
			// The frame at pos: its own chain value starts the check.
			size, err := fileSize(f)
			if err != nil {
				return nil, err
			}
			fr, err := readFrame(f, pos.Offset, size)
			if err != nil || fr.index != pos.Index {
				return nil, fmt.Errorf("%w: no frame of entry %d at offset %d of %s", ErrPosition, pos.Index, pos.Offset, name)
			}
			sc.locs = append(sc.locs, loc{seg: 0, off: pos.Offset})
			sc.size, sc.chain = pos.Index+1, fr.chain
			seg.end = pos.Offset + frameHeader + int64(len(fr.payload))
		} else if first != sc.size {
			return nil, corrupt(name, -1, sc.size, "segment starts at entry %d, want %d (a segment is missing or out of sequence)", first, sc.size)
		}
		if err := sc.segment(seg, name, i == len(firsts)-1, check); err != nil {
			return nil, err
		}
	}
	return &Snapshot{l: &Log{dir: dir, segs: sc.segs, locs: sc.locs, size: sc.size, base: pos.Index}}, nil
}

// First returns the index of the first entry the snapshot holds: 0, or
// the position a tail was opened at.
func (s *Snapshot) First() int64 { return s.l.base }

// ReadAt reads entry pos.Index of the log in dir from where pos says its
// frame is, checking the frame (CRC, index), without opening the log: for
// a reader that recorded the entry's Position (a search index).
func ReadAt(dir string, pos Position) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, segDir, segName(pos.Segment)))
	if err != nil {
		return nil, fmt.Errorf("read entry %d: %w", pos.Index, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read entry %d: %w", pos.Index, err)
	}
	fr, err := readFrame(f, pos.Offset, st.Size())
	if err != nil || fr.index != pos.Index {
		return nil, fmt.Errorf("read entry %d: %w: no frame of it at offset %d of segment %d", pos.Index, ErrPosition, pos.Offset, pos.Segment)
	}
	return fr.payload, nil
}
