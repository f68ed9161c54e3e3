package audit

import (
	"errors"
	"fmt"
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
