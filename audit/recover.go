package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/internal/fsx"
)

// recover loads the segments, repairs a torn tail and rebuilds the hashes
// the last checkpoint does not cover. Any other damage refuses the log with
// a *CorruptError: acknowledged entries are never discarded.
func (l *Log) recover() error {
	open := func(name string) (file, error) { return l.opts.openFile(name, os.O_RDWR, 0) }
	sc, err := scanLog(l.dir, open)
	if err != nil {
		sc.close()
		return err
	}
	l.segs, l.locs, l.size, l.chain = sc.segs, sc.locs, sc.size, sc.chain
	if sc.torn != nil {
		t, err := l.repairTornTail(sc.torn)
		if err != nil {
			return err
		}
		l.torn = &t
	}
	if len(l.segs) == 0 {
		if err := l.newSegment(0); err != nil {
			return err
		}
	} else {
		l.prepareSpare()
	}
	return l.rebuildHashes(sc.cp, sc.leaves)
}

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

// TornTail reports the torn tail Open repaired, if any: the caller should
// say so (serve prints it).
func (l *Log) TornTail() (TornTail, bool) {
	if l.torn == nil {
		return TornTail{}, false
	}
	return *l.torn, true
}

// tornDir keeps a copy of every torn tail recovery zeroed.
const tornDir = "torn"

// repairTornTail keeps a copy of the torn bytes, then zeroes them.
func (l *Log) repairTornTail(t *TornTail) (TornTail, error) {
	seg := l.segs[len(l.segs)-1]
	b := make([]byte, t.Bytes)
	if _, err := seg.f.ReadAt(b, t.Offset); err != nil {
		return TornTail{}, fmt.Errorf("repair torn tail: %w", err)
	}
	out := *t
	out.Saved = filepath.Join(tornDir, fmt.Sprintf("%s.%d", filepath.Base(t.Segment), t.Offset))
	if err := os.MkdirAll(filepath.Join(l.dir, tornDir), 0o700); err != nil {
		return TornTail{}, fmt.Errorf("repair torn tail: %w", err)
	}
	if err := fsx.WriteFileAtomic(filepath.Join(l.dir, out.Saved), b, 0o600); err != nil {
		return TornTail{}, fmt.Errorf("repair torn tail: %w", err)
	}
	if err := zeroTail(seg.f, t.Offset, t.Offset+t.Bytes); err != nil {
		return TornTail{}, err
	}
	return out, nil
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
// (always '}' in a complete frame) and everything after it still zero.
// Anything else is corruption: a bad frame followed by any non-zero byte, a
// gap of zeros followed by data, a bad frame in an earlier segment, a frame
// cut by the end of its file, a segment missing or out of sequence, fewer
// entries than the last checkpoint or the stored hashes vouch for, entries
// below the checkpoint that do not hash to its root.
func scanLog(dir string, open func(name string) (file, error)) (*logScan, error) {
	// What vouches for acknowledged entries is read before the segments,
	// so that on a live log (CheckDir) it never runs ahead of them.
	sc := &logScan{}
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
	for off := int64(0); ; {
		fr, err := readFrame(r, off, size)
		var bad *badFrameError
		switch {
		case err == errEnd:
			seg.end = off
			if at, err := firstNonZero(seg.f, off, size); err != nil {
				return err
			} else if at >= 0 {
				return corrupt(name, off, sc.size, "zeros at offset %d followed by data at offset %d", off, at)
			}
			return nil
		case errors.As(err, &bad):
			seg.end = off
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

// zeroTail overwrites [off, end) of f with zeros and syncs.
func zeroTail(f file, off, end int64) error {
	zeros := make([]byte, 64<<10)
	for o := off; o < end; {
		n := min(int64(len(zeros)), end-o)
		if _, err := f.WriteAt(zeros[:n], o); err != nil {
			return fmt.Errorf("zero torn tail: %w", err)
		}
		o += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("zero torn tail: %w", err)
	}
	return nil
}

func listSegments(dir string) ([]int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []int64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(name, 10, 64)
		if err != nil || segName(n) != e.Name() {
			return nil, fmt.Errorf("%w: unexpected segment file %s", ErrCorrupt, e.Name())
		}
		firsts = append(firsts, n)
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	return firsts, nil
}

// spareName is the preallocated segment made ready in the background for
// the next rollover, so that the writer never waits for preallocation.
const spareName = "spare.tmp"

type spare struct {
	done chan struct{}
	err  error
}

// prepareSpare starts preallocating the next segment.
func (l *Log) prepareSpare() {
	sp := &spare{done: make(chan struct{})}
	l.spare = sp
	path := filepath.Join(l.dir, segDir, spareName)
	go func() {
		defer close(sp.done)
		// A spare left by an earlier run is reused: it was created empty,
		// so it reads as zeros even if a crash cut its preallocation short.
		if st, err := os.Stat(path); err == nil && st.Size() == l.opts.SegmentSize {
			return
		}
		sp.err = preallocFile(path, l.opts.SegmentSize)
	}()
}

func preallocFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = fsx.Preallocate(f, 0, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// newSegment installs the spare (or a new preallocated file) as the segment
// starting at entry first, and starts preparing the next spare.
func (l *Log) newSegment(first int64) error {
	name := filepath.Join(l.dir, segDir, segName(first))
	tmp := filepath.Join(l.dir, segDir, spareName)
	err := errors.New("no spare")
	if l.spare != nil {
		<-l.spare.done
		err = l.spare.err
		l.spare = nil
	}
	if err != nil {
		err = preallocFile(tmp, l.opts.SegmentSize)
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err == nil {
		err = fsx.SyncDir(filepath.Dir(name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create segment: %w", err)
	}
	ff, err := l.opts.openFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	l.mu.Lock()
	l.segs = append(l.segs, &segment{first: first, f: ff, size: l.opts.SegmentSize})
	l.mu.Unlock()
	l.prepareSpare()
	return nil
}

// rebuildHashes trusts the stored hashes up to the last checkpoint (they
// were synced before it was signed, and its root is checked) and recomputes
// the rest from the entries.
func (l *Log) rebuildHashes(cp checkpointFile, leaves []tlog.Hash) error {
	f, err := l.opts.openFile(filepath.Join(l.dir, hashesFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open hashes: %w", err)
	}
	hs := &hashStore{f: f}
	l.hashes = hs
	trusted := tlog.StoredHashCount(cp.Size)
	if st, err := os.Stat(f.Name()); err != nil || st.Size() < trusted*tlog.HashSize {
		trusted = 0 // hashes lost: recompute them all
		leaves, err = l.leafHashes(0, cp.Size, leaves)
		if err != nil {
			return err
		}
	}
	if err := f.Truncate(trusted * tlog.HashSize); err != nil {
		return fmt.Errorf("truncate hashes: %w", err)
	}
	hs.n = trusted
	first := cp.Size
	if trusted == 0 {
		first = 0
	}
	for i, h := range leaves {
		if err := hs.add(first+int64(i), h); err != nil {
			return err
		}
	}
	if err := hs.flush(); err != nil {
		return err
	}
	if cp.Size > 0 {
		root, err := tlog.TreeHash(cp.Size, hs)
		if err != nil {
			return fmt.Errorf("tree hash: %w", err)
		}
		if root != cp.Root {
			return fmt.Errorf("%w: tree of size %d does not match checkpoint %d", ErrCorrupt, cp.Size, cp.Seq)
		}
	}
	return nil
}

// leafHashes returns the leaf hashes of entries [lo, hi) followed by rest.
func (l *Log) leafHashes(lo, hi int64, rest []tlog.Hash) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, 0, hi-lo+int64(len(rest)))
	for i := lo; i < hi; i++ {
		b, err := l.readEntry(i)
		if err != nil {
			return nil, err
		}
		out = append(out, tlog.RecordHash(b))
	}
	return append(out, rest...), nil
}

// rootCheck recomputes the root of the tree a checkpoint covers from the
// entries themselves, so that an entry changed on disk, with its frame's CRC
// and the hash chain redone, cannot pass Open: the stored hashes, which
// rebuildHashes trusts up to the checkpoint, are checked only against the
// root's few top nodes. One hash per entry, and log2(size) hashes of state.
type rootCheck struct {
	cp    checkpointFile
	n     int64
	stack []subtree
}

type subtree struct {
	h    tlog.Hash
	size int64
}

// add takes the leaf hash of the next entry below the checkpoint.
func (c *rootCheck) add(h tlog.Hash) {
	c.n++
	c.stack = append(c.stack, subtree{h, 1})
	for k := len(c.stack); k >= 2 && c.stack[k-2].size == c.stack[k-1].size; k-- {
		c.stack[k-2] = subtree{tlog.NodeHash(c.stack[k-2].h, c.stack[k-1].h), 2 * c.stack[k-1].size}
		c.stack = c.stack[:k-1]
	}
}

// check compares the root of the entries added with the checkpoint's.
func (c *rootCheck) check() error {
	if c.cp.Size == 0 || c.n != c.cp.Size {
		return nil // no checkpoint, or too few entries: recover says so
	}
	root := c.stack[len(c.stack)-1].h
	for k := len(c.stack) - 2; k >= 0; k-- {
		root = tlog.NodeHash(c.stack[k].h, root)
	}
	if root != c.cp.Root {
		return corrupt("", -1, -1, "the first %d entries do not hash to the root of checkpoint %d", c.cp.Size, c.cp.Seq)
	}
	return nil
}
