package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// CorruptError is damage to a log that recovery must not repair: anything
// but a torn tail (see TornTail). It wraps ErrCorrupt. Open refuses such a
// log; CheckDir reports it.
type CorruptError struct {
	Segment string // the segment file, relative to the log directory ("" if none)
	Offset  int64  // the offset in Segment (-1 if none)
	Index   int64  // the first entry that cannot be read intact (-1 if none)
	Reason  string
}

func (e *CorruptError) Error() string {
	var b strings.Builder
	b.WriteString(ErrCorrupt.Error())
	if e.Index >= 0 {
		fmt.Fprintf(&b, " at entry %d", e.Index)
	}
	if e.Segment != "" {
		fmt.Fprintf(&b, " (%s", e.Segment)
		if e.Offset >= 0 {
			fmt.Fprintf(&b, " offset %d", e.Offset)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ": %s", e.Reason)
	return b.String()
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(seg string, off, index int64, format string, args ...any) *CorruptError {
	return &CorruptError{Segment: seg, Offset: off, Index: index, Reason: fmt.Sprintf(format, args...)}
}

// TornTail is an incomplete last frame that Open zeroed: the prefix of a
// write that a crash cut short, in the last segment, followed only by
// zeros. It was never acknowledged (every acknowledged frame was synced
// whole before its Append returned).
type TornTail struct {
	Segment string // the segment file, relative to the log directory
	Offset  int64  // where the incomplete frame starts
	Bytes   int64  // how many bytes were written of it (then zeroed)
	Index   int64  // the entry it would have been
	Saved   string // where Open kept a copy of the bytes, relative to the log directory
}

// logScan is what scanLog read of a log directory.
type logScan struct {
	segs   []*segment
	locs   []loc
	size   int64 // intact entries
	chain  tlog.Hash
	cp     checkpointFile // the last checkpoint issued
	leaves []tlog.Hash    // leaf hashes from cp.Size on
	torn   *TornTail      // an incomplete last frame, not yet repaired
	// live: the log's writer may be writing at the end of the last
	// segment (OpenSnapshot); what follows its intact frames there ends
	// the scan instead of being damage.
	live bool
}

func (s *logScan) close() {
	for _, seg := range s.segs {
		seg.f.Close()
	}
}

// scanLog reads every segment of the log in dir, in order, checking each
// frame's CRC, the index sequence and the hash chain, and tells a torn
// tail from corruption. It changes nothing. Damage is a *CorruptError; sc
// then holds what was read before it. The caller closes sc's files.
//
// A torn tail is the only damage a crash can leave: the writer appends
// frames at the end of the last segment, whose preallocated space is zeros,
// and syncs before it acknowledges, so a crash cuts short at most the
// unacknowledged write at the end. Its prefix may hold whole frames (they
// are kept) and at most one incomplete frame: a plausible header whose
// frame fits in the segment, its bytes written without a gap, its last byte
// (always '}' in a complete frame) and everything after it still zero, and
// what is there not a complete frame whose length field grew.
// Anything else is corruption: a bad frame followed by any non-zero byte, a
// gap of zeros followed by data, a bad frame in an earlier segment, a frame
// cut by the end of its file, a segment missing or out of sequence, fewer
// entries than the last checkpoint or the stored hashes vouch for, entries
// below the checkpoint that do not hash to its root.
func scanLog(dir string, open func(name string) (file, error)) (*logScan, error) {
	return scanLogLive(dir, open, false)
}

// scanLogLive is scanLog; with live, the end of the last segment after its
// intact frames is taken for a write in progress, not for damage. What the
// checkpoint and the stored hashes vouch for is still required.
func scanLogLive(dir string, open func(name string) (file, error), live bool) (*logScan, error) {
	// What vouches for acknowledged entries is read before the segments,
	// so that on a live log (CheckDir) it never runs ahead of them.
	sc := &logScan{live: live}
	cp, err := latestCheckpoint(filepath.Join(dir, checkpointDir))
	if err != nil {
		return sc, err
	}
	sc.cp = cp
	hashed, err := hashedEntries(filepath.Join(dir, hashesFile))
	if err != nil {
		return sc, err
	}
	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		return sc, err
	}
	check := &rootCheck{cp: cp}
	for i, first := range firsts {
		name := filepath.Join(segDir, segName(first))
		if first != sc.size {
			return sc, corrupt(name, -1, sc.size, "segment starts at entry %d, want %d (a segment is missing or out of sequence)", first, sc.size)
		}
		f, err := open(filepath.Join(dir, name))
		if err != nil {
			return sc, err
		}
		seg := &segment{first: first, f: f}
		sc.segs = append(sc.segs, seg)
		if err := sc.segment(seg, name, i == len(firsts)-1, check); err != nil {
			return sc, err
		}
	}
	if err := check.check(); err != nil {
		return sc, err
	}
	where := func() (string, int64) {
		if len(sc.segs) == 0 {
			return "", -1
		}
		return filepath.Join(segDir, segName(sc.segs[len(sc.segs)-1].first)), sc.segs[len(sc.segs)-1].end
	}
	if sc.size < cp.Size {
		seg, off := where()
		if sc.torn != nil {
			seg, off = sc.torn.Segment, sc.torn.Offset
		}
		return sc, corrupt(seg, off, sc.size, "checkpoint %d covers %d entries, the log has %d intact: acknowledged entries are missing or damaged", cp.Seq, cp.Size, sc.size)
	}
	if sc.size < hashed {
		seg, off := where()
		if sc.torn != nil {
			seg, off = sc.torn.Segment, sc.torn.Offset
		}
		return sc, corrupt(seg, off, sc.size, "the stored hashes cover %d entries, the log has %d intact: acknowledged entries are missing or damaged", hashed, sc.size)
	}
	return sc, nil
}

// hashedEntries returns how many entries the stored hashes file covers: the
// writer stores an entry's hashes only once the entry is durable, so the
// log must hold at least that many.
func hashedEntries(path string) (int64, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	have := st.Size() / tlog.HashSize
	// The largest n with StoredHashCount(n) <= have (StoredHashCount(n) >= n).
	lo, hi := int64(0), have
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if tlog.StoredHashCount(mid) <= have {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// segment scans one segment, appending its frames to sc.
func (sc *logScan) segment(seg *segment, name string, last bool, check *rootCheck) error {
	size, err := fileSize(seg.f)
	if err != nil {
		return err
	}
	seg.size = size
	r := &windowReader{r: seg.f, size: size, lend: true} // payloads are hashed, not kept
	// From 0; in a tail (OpenTail), from after its first frame.
	for off := seg.end; ; {
		fr, err := readFrame(r, off, size)
		var bad *badFrameError
		switch {
		case err == errEnd:
			seg.end = off
			if sc.live && last {
				return nil
			}
			if at, err := firstNonZero(seg.f, off, size); err != nil {
				return err
			} else if at >= 0 {
				return corrupt(name, off, sc.size, "zeros at offset %d followed by data at offset %d", off, at)
			}
			return nil
		case errors.As(err, &bad):
			seg.end = off
			if sc.live && last {
				return nil
			}
			t, err := tornFrame(seg.f, name, off, size, sc.size, bad.reason)
			if err != nil {
				return err
			}
			if !last {
				return corrupt(name, off, sc.size, "bad frame (%s) in a segment that is not the last", bad.reason)
			}
			sc.torn = t
			return nil
		case err != nil:
			return err
		}
		h := tlog.RecordHash(fr.payload)
		if fr.index != sc.size || nextChain(sc.chain, h) != fr.chain {
			seg.end = off
		}
		if fr.index != sc.size {
			return corrupt(name, off, sc.size, "frame holds entry %d, want %d", fr.index, sc.size)
		}
		if nextChain(sc.chain, h) != fr.chain {
			return corrupt(name, off, sc.size, "hash chain broken")
		}
		if sc.size >= check.cp.Size {
			sc.leaves = append(sc.leaves, h)
		} else {
			check.add(h)
		}
		sc.chain = fr.chain
		sc.locs = append(sc.locs, loc{seg: int32(len(sc.segs) - 1), off: off})
		sc.size++
		off += frameHeader + int64(len(fr.payload))
	}
}

// tornFrame tells whether the bad frame at off is a torn write (see
// scanLog) and returns it, or the *CorruptError it is.
func tornFrame(f io.ReaderAt, name string, off, size, index int64, reason string) (*TornTail, error) {
	bad := func(why string) error {
		return corrupt(name, off, index, "%s: %s", reason, why)
	}
	if off+frameHeader > size {
		return nil, bad("the segment file ends inside a frame header (it was truncated)")
	}
	var h [frameHeader]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return nil, fmt.Errorf("read %s at %d: %w", name, off, err)
	}
	n := int64(binary.BigEndian.Uint32(h[0:]))
	end := off + frameHeader + n
	switch {
	case n == 0 || n > MaxEntrySize:
		return nil, bad("not a frame header")
	case end > size:
		return nil, bad("the frame runs past the end of the segment file (it was truncated)")
	}
	at, err := lastNonZero(f, off, size)
	if err != nil {
		return nil, err
	}
	if at >= end-1 {
		// The frame's last byte, or a byte after the frame, was written:
		// not a write cut short, but a complete frame that changed, or
		// one followed by more.
		if at >= end {
			return nil, bad(fmt.Sprintf("data follows at offset %d", at))
		}
		return nil, bad("the frame is complete but does not check: changed after it was written")
	}
	if at >= off+16 {
		if i := int64(binary.BigEndian.Uint64(h[8:])); i != index {
			return nil, bad(fmt.Sprintf("the frame holds entry %d, want %d", i, index))
		}
	}
	if gap, err := firstZero(f, off+frameHeader, at+1); err != nil {
		return nil, err
	} else if gap >= 0 {
		return nil, bad(fmt.Sprintf("zeros at offset %d inside the frame, data after them", gap))
	}
	if at >= off+frameHeader {
		// The CRC does not cover the length: a complete frame whose length
		// grew would otherwise pass for a prefix of a longer one.
		b := make([]byte, at+1-off-8)
		if _, err := f.ReadAt(b, off+8); err != nil {
			return nil, fmt.Errorf("read %s at %d: %w", name, off, err)
		}
		if crc32.Checksum(b, castagnoli) == binary.BigEndian.Uint32(h[4:]) {
			return nil, bad(fmt.Sprintf("a complete frame of %d bytes whose length field says %d", len(b)-40, n))
		}
	}
	return &TornTail{Segment: name, Offset: off, Bytes: at + 1 - off, Index: index}, nil
}

func fileSize(f file) (int64, error) {
	st, err := os.Stat(f.Name())
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// scanChunks calls fn on successive chunks of [off, end) of f until it
// returns true.
func scanChunks(f io.ReaderAt, off, end int64, fn func(b []byte, at int64) bool) error {
	buf := make([]byte, min(1<<20, max(end-off, 0)))
	for o := off; o < end; {
		n := min(int64(len(buf)), end-o)
		if _, err := f.ReadAt(buf[:n], o); err != nil {
			return fmt.Errorf("scan segment: %w", err)
		}
		if fn(buf[:n], o) {
			return nil
		}
		o += n
	}
	return nil
}

// firstNonZero returns the offset of the first non-zero byte in [off,
// end) of f, or -1.
func firstNonZero(f io.ReaderAt, off, end int64) (int64, error) {
	at := int64(-1)
	err := scanChunks(f, off, end, func(b []byte, o int64) bool {
		for i, c := range b {
			if c != 0 {
				at = o + int64(i)
				return true
			}
		}
		return false
	})
	return at, err
}

// firstZero returns the offset of the first zero byte in [off, end) of f,
// or -1.
func firstZero(f io.ReaderAt, off, end int64) (int64, error) {
	at := int64(-1)
	err := scanChunks(f, off, end, func(b []byte, o int64) bool {
		if i := bytes.IndexByte(b, 0); i >= 0 {
			at = o + int64(i)
			return true
		}
		return false
	})
	return at, err
}

// lastNonZero returns the offset of the last non-zero byte in [off, end)
// of f, or -1.
func lastNonZero(f io.ReaderAt, off, end int64) (int64, error) {
	at := int64(-1)
	err := scanChunks(f, off, end, func(b []byte, o int64) bool {
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != 0 {
				at = o + int64(i)
				break
			}
		}
		return false
	})
	return at, err
}
