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

// recover loads the segments, truncates a torn tail and rebuilds the hashes
// the last checkpoint does not cover.
func (l *Log) recover() error {
	names, err := listSegments(filepath.Join(l.dir, segDir))
	if err != nil {
		return err
	}
	cp, err := latestCheckpoint(filepath.Join(l.dir, checkpointDir))
	if err != nil {
		return err
	}
	var leaves []tlog.Hash // leaf hashes from cp.Size on
	check := &rootCheck{cp: cp}
	for i, first := range names {
		last := i == len(names)-1
		if first != l.size {
			return fmt.Errorf("%w: segment %s starts at %d, want %d", ErrCorrupt, segName(first), first, l.size)
		}
		seg, err := l.loadSegment(first, last, func(h tlog.Hash) {
			if l.size >= cp.Size {
				leaves = append(leaves, h)
			} else {
				check.add(h)
			}
		})
		if err != nil {
			return err
		}
		l.segs = append(l.segs, seg)
	}
	if err := check.check(); err != nil {
		return err
	}
	if len(l.segs) == 0 {
		if err := l.newSegment(0); err != nil {
			return err
		}
	} else {
		l.prepareSpare()
	}
	if l.size < cp.Size {
		return fmt.Errorf("%w: %d entries, but checkpoint %d covers %d", ErrCorrupt, l.size, cp.Seq, cp.Size)
	}
	return l.rebuildHashes(cp, leaves)
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
		return fmt.Errorf("%w: the first %d entries do not match checkpoint %d", ErrCorrupt, c.cp.Size, c.cp.Seq)
	}
	return nil
}

// loadSegment scans one segment, appending its frames to l. In the last
// segment a bad frame is a torn write: it and everything after are zeroed.
func (l *Log) loadSegment(first int64, last bool, leaf func(tlog.Hash)) (*segment, error) {
	name := filepath.Join(l.dir, segDir, segName(first))
	f, err := l.opts.openFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(name)
	if err != nil {
		f.Close()
		return nil, err
	}
	size := st.Size()
	seg := &segment{first: first, f: f, size: size}
	r := &windowReader{r: f, size: size, lend: true} // payloads are hashed, not kept
	for off := int64(0); ; {
		fr, err := readFrame(r, off, size)
		if err == errEnd && last {
			// After a power loss a later frame of an unsynced batch may
			// have reached the disk while this one did not: zero it, so
			// that it can never reappear after new frames.
			dirty, err := nonZero(f, off, size)
			if err == nil && dirty {
				err = zeroTail(f, off, size)
			}
			if err != nil {
				f.Close()
				return nil, err
			}
		}
		if err == errEnd {
			seg.end = off
			return seg, nil
		}
		var bad *badFrameError
		if errors.As(err, &bad) && last {
			if err := zeroTail(f, off, size); err != nil {
				f.Close()
				return nil, err
			}
			seg.end = off
			return seg, nil
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
		}
		h := tlog.RecordHash(fr.payload)
		if fr.index != l.size || nextChain(l.chain, h) != fr.chain {
			f.Close()
			return nil, fmt.Errorf("%w: %s: frame at offset %d: index %d or chain does not follow entry %d", ErrCorrupt, name, off, fr.index, l.size-1)
		}
		leaf(h)
		l.chain = fr.chain
		l.locs = append(l.locs, loc{seg: int32(len(l.segs)), off: off})
		l.size++
		off += frameHeader + int64(len(fr.payload))
	}
}

// nonZero reports whether any byte in [off, size) of f is not zero.
func nonZero(f file, off, size int64) (bool, error) {
	buf := make([]byte, 1<<20)
	for o := off; o < size; {
		n := min(int64(len(buf)), size-o)
		if _, err := f.ReadAt(buf[:n], o); err != nil {
			return false, fmt.Errorf("scan segment tail: %w", err)
		}
		for _, c := range buf[:n] {
			if c != 0 {
				return true, nil
			}
		}
		o += n
	}
	return false, nil
}

// zeroTail overwrites a torn tail with zeros and syncs.
func zeroTail(f file, off, size int64) error {
	zeros := make([]byte, 64<<10)
	for o := off; o < size; {
		n := min(int64(len(zeros)), size-o)
		if _, err := f.WriteAt(zeros[:n], o); err != nil {
			return fmt.Errorf("truncate torn tail: %w", err)
		}
		o += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("truncate torn tail: %w", err)
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
