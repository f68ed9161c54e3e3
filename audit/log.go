package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/internal/fsx"
)

// Errors callers branch on.
var (
	// ErrFailed is returned by Append after a write, sync or space error: the
	// log refuses every further append until it is closed and reopened.
	ErrFailed = errors.New("audit log failed; reopen to recover")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("audit log closed")
	// ErrLocked is returned by Open when another process has the log open.
	ErrLocked = fsx.ErrLocked
	// ErrCorrupt is returned by Open when the log is damaged in a way that
	// recovery must not repair (anything but a torn last frame).
	ErrCorrupt = errors.New("audit log corrupt")
)

// Options configure a Log. The zero value works.
type Options struct {
	// SegmentSize is the size of each preallocated segment file
	// (default 64 MiB). It is fixed when a segment is created.
	SegmentSize int64
	// MaxInline is the longest field stored inline; longer fields are stored
	// by digest in the blob store (default 4096 bytes).
	MaxInline int
	// MaxBatch caps the entries written by one group commit (default 1024).
	MaxBatch int
	// Rand is the source of commitment salts (default crypto/rand).
	Rand io.Reader

	// openFile opens the log's files; tests replace it to inject faults.
	openFile func(name string, flag int, perm os.FileMode) (file, error)
}

// file is what the log needs of an open file. Sync is fdatasync.
type file interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Close() error
	Name() string
}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return fsx.Datasync(f.File) }

func openOSFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (o *Options) setDefaults() {
	if o.SegmentSize <= 0 {
		o.SegmentSize = 64 << 20
	}
	if o.SegmentSize < frameHeader+MaxEntrySize {
		o.SegmentSize = frameHeader + MaxEntrySize
	}
	if o.MaxInline <= 0 {
		o.MaxInline = 4096
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.openFile == nil {
		o.openFile = openOSFile
	}
}

// Receipt is what Append returns for a durable entry: its index in the log
// and its RFC 6962 leaf hash. An inclusion proof against a signed checkpoint
// can be fetched with Log.Prove once a checkpoint covers the entry.
type Receipt struct {
	Index    int64
	LeafHash tlog.Hash
}

// Log is an append-only, durable, tamper-evident audit log in a directory.
// It is safe for concurrent use. Only one Log (in any process) may have a
// directory open at a time.
type Log struct {
	dir  string
	opts Options
	lock *os.File

	appendMu sync.RWMutex // guards closed and sends on queue
	closed   bool
	queue    chan *request
	done     chan struct{}

	mu     sync.RWMutex // guards the fields below
	segs   []*segment
	locs   []loc
	size   int64
	chain  tlog.Hash
	failed error

	hashes *hashStore
	spare  *spare // next segment, being preallocated (writer only)
	side   file   // the sensitive side file, opened lazily
	sideN  int64
}

type segment struct {
	first int64
	f     file
	size  int64 // file size
	end   int64 // offset of the next frame
}

type loc struct {
	seg int32
	off int64
}

type request struct {
	payload []byte
	leaf    tlog.Hash
	side    []sideRecord
	done    chan result
}

type result struct {
	r   Receipt
	err error
}

// sideRecord is one line of the sensitive side file.
type sideRecord struct {
	Index int64  `json:"index"`
	Field string `json:"field"`
	HMAC  Digest `json:"hmac"`
	Salt  []byte `json:"salt"`
	Value string `json:"value"`
}

const (
	segDir        = "log"
	hashesFile    = "hashes"
	checkpointDir = "checkpoints"
	blobDir       = "blobs"
	sideFile      = "sensitive.jsonl"
	lockFile      = "LOCK"
)

func segName(first int64) string { return fmt.Sprintf("%020d.seg", first) }

// Open opens the log in dir, creating it if needed. It recovers from a crash:
// it verifies every frame and the hash chain, and truncates a torn last frame
// (never an acknowledged one: those were synced). A directory another process
// has open gives ErrLocked.
func Open(dir string, opts Options) (*Log, error) {
	opts.setDefaults()
	for _, d := range []string{dir, filepath.Join(dir, segDir), filepath.Join(dir, checkpointDir), filepath.Join(dir, blobDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open audit log: %w", err)
		}
	}
	lock, err := fsx.Lock(filepath.Join(dir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", dir, err)
	}
	l := &Log{dir: dir, opts: opts, lock: lock, queue: make(chan *request, opts.MaxBatch), done: make(chan struct{})}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("open audit log %s: %w", dir, err)
	}
	go l.run()
	return l, nil
}

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
	for i, first := range names {
		last := i == len(names)-1
		if first != l.size {
			return fmt.Errorf("%w: segment %s starts at %d, want %d", ErrCorrupt, segName(first), first, l.size)
		}
		seg, err := l.loadSegment(first, last, func(h tlog.Hash) {
			if l.size >= cp.Size {
				leaves = append(leaves, h)
			}
		})
		if err != nil {
			return err
		}
		l.segs = append(l.segs, seg)
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
	for off := int64(0); ; {
		fr, err := readFrame(f, off, size)
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
	for i, x := range indexes {
		switch {
		case x < 0:
			return nil, fmt.Errorf("read hash %d: negative index", x)
		case x >= s.n+int64(len(s.pending)):
			return nil, fmt.Errorf("read hash %d: not stored", x)
		case x >= s.n:
			out[i] = s.pending[x-s.n]
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

// Append writes e to the log and returns once it is on stable storage. The
// entry is copied; sensitive fields become commitments and long fields are
// stored by digest. An error means the entry was not acknowledged: it may or
// may not be in the log after a crash or a cancelled ctx, but the caller must
// act as if it were not. After a disk error every Append fails with ErrFailed.
func (l *Log) Append(ctx context.Context, e *Entry) (Receipt, error) {
	req, err := l.prepare(e)
	if err != nil {
		return Receipt{}, err
	}
	l.appendMu.RLock()
	if l.closed {
		l.appendMu.RUnlock()
		return Receipt{}, fmt.Errorf("append: %w", ErrClosed)
	}
	select {
	case l.queue <- req:
	case <-ctx.Done():
		l.appendMu.RUnlock()
		return Receipt{}, fmt.Errorf("append: %w", ctx.Err())
	}
	l.appendMu.RUnlock()
	select {
	case res := <-req.done:
		return res.r, res.err
	case <-ctx.Done():
		return Receipt{}, fmt.Errorf("append: %w", ctx.Err())
	}
}

// prepare turns e into the payload to write.
func (l *Log) prepare(e *Entry) (*request, error) {
	c := *e
	if c.Action.Text != "" && c.ActionSHA256.IsZero() {
		c.ActionSHA256 = sha256.Sum256([]byte(c.Action.Text))
	}
	req := &request{done: make(chan result, 1)}
	for _, p := range []struct {
		name string
		f    *Field
	}{{"action", &c.Action}, {"instruction", &c.Instruction}, {"reasoning", &c.Reasoning}, {"result", &c.Result}, {"state", &c.State}} {
		if p.f.Text == "" {
			p.f.Sensitive = false
			continue
		}
		switch {
		case p.f.Sensitive:
			salt := make([]byte, 32)
			if _, err := io.ReadFull(l.opts.Rand, salt); err != nil {
				return nil, fmt.Errorf("append: salt: %w", err)
			}
			mac := hmac.New(sha256.New, salt)
			mac.Write([]byte(p.f.Text))
			var d Digest
			copy(d[:], mac.Sum(nil))
			req.side = append(req.side, sideRecord{Field: p.name, HMAC: d, Salt: salt, Value: p.f.Text})
			*p.f = Field{Commitment: d}
		case len(p.f.Text) > l.opts.MaxInline:
			d, err := l.putBlob([]byte(p.f.Text))
			if err != nil {
				return nil, err
			}
			*p.f = Field{Digest: d, Size: int64(len(p.f.Text))}
		}
	}
	b, err := c.Encode()
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	req.payload = b
	req.leaf = tlog.RecordHash(b)
	return req, nil
}

// putBlob stores a large field durably under its SHA-256.
func (l *Log) putBlob(b []byte) (Digest, error) {
	d := Digest(sha256.Sum256(b))
	path := filepath.Join(l.dir, blobDir, d.String())
	if _, err := os.Stat(path); err == nil {
		return d, nil
	}
	if err := fsx.WriteFileAtomic(path, b, 0o600); err != nil {
		return Digest{}, fmt.Errorf("append: store blob: %w", err)
	}
	return d, nil
}

// Blob returns the content of a field stored by digest.
func (l *Log) Blob(d Digest) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, blobDir, d.String()))
	if err != nil {
		return nil, fmt.Errorf("read blob: %w", err)
	}
	if sha256.Sum256(b) != d {
		return nil, fmt.Errorf("read blob %v: content does not match digest", d)
	}
	return b, nil
}

// run is the writer: it takes what is queued, writes it, syncs once and
// acknowledges the whole batch (eager group commit, no timer).
func (l *Log) run() {
	defer close(l.done)
	for req := range l.queue {
		batch := []*request{req}
	drain:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r, ok := <-l.queue:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		l.commit(batch)
	}
}

// commit makes batch durable and acknowledges it.
func (l *Log) commit(batch []*request) {
	if l.failed != nil {
		ack(batch, Receipt{}, l.failed)
		return
	}
	if err := l.writeBatch(batch); err != nil {
		l.mu.Lock()
		l.failed = fmt.Errorf("append: %w: %w", ErrFailed, err)
		l.mu.Unlock()
		ack(batch, Receipt{}, l.failed)
		return
	}
}

func ack(batch []*request, r Receipt, err error) {
	for _, req := range batch {
		req.done <- result{r, err}
	}
}

// writeBatch writes, syncs and acknowledges batch, rolling to a new segment
// when the current one is full.
func (l *Log) writeBatch(batch []*request) error {
	if err := l.writeSide(batch); err != nil {
		return err
	}
	for len(batch) > 0 {
		seg := l.segs[len(l.segs)-1]
		var buf []byte
		chain := l.chain
		idx := l.size
		n := 0
		for _, req := range batch {
			if seg.end+int64(len(buf))+frameHeader+int64(len(req.payload)) > seg.size {
				break
			}
			chain = nextChain(chain, req.leaf)
			buf = appendFrame(buf, idx, chain, req.payload)
			idx++
			n++
		}
		if n == 0 {
			if err := l.newSegment(l.size); err != nil {
				return err
			}
			continue
		}
		if _, err := seg.f.WriteAt(buf, seg.end); err != nil {
			return fmt.Errorf("write %s: %w", seg.f.Name(), err)
		}
		if err := seg.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", seg.f.Name(), err)
		}
		if err := l.publish(batch[:n], seg, buf, chain); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// publish records the durable frames in memory and acknowledges them.
func (l *Log) publish(batch []*request, seg *segment, buf []byte, chain tlog.Hash) error {
	locs := make([]loc, len(batch))
	off := seg.end
	for i, req := range batch {
		locs[i] = loc{seg: int32(len(l.segs) - 1), off: off}
		off += frameHeader + int64(len(req.payload))
		if err := l.hashes.add(l.size+int64(i), req.leaf); err != nil {
			return err
		}
	}
	herr := l.hashes.flush()
	l.mu.Lock()
	first := l.size
	l.locs = append(l.locs, locs...)
	l.size += int64(len(batch))
	l.chain = chain
	seg.end = off
	l.mu.Unlock()
	for i, req := range batch {
		req.done <- result{Receipt{Index: first + int64(i), LeafHash: req.leaf}, nil}
	}
	// The entries are durable and acknowledged; a hashes error only stops
	// further appends (the hashes are rebuilt on reopen).
	return herr
}

// writeSide appends the batch's sensitive-field salts to the side file and
// syncs it, before the entries that commit to them are written.
func (l *Log) writeSide(batch []*request) error {
	var buf bytes.Buffer
	idx := l.size
	for _, req := range batch {
		for _, s := range req.side {
			s.Index = idx
			b, err := json.Marshal(s)
			if err != nil {
				return fmt.Errorf("side record: %w", err)
			}
			buf.Write(b)
			buf.WriteByte('\n')
		}
		idx++
	}
	if buf.Len() == 0 {
		return nil
	}
	if l.side == nil {
		f, err := l.opts.openFile(filepath.Join(l.dir, sideFile), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open side file: %w", err)
		}
		n, err := sideEnd(f)
		if err != nil {
			f.Close()
			return fmt.Errorf("open side file: %w", err)
		}
		l.side, l.sideN = f, n
	}
	if _, err := l.side.WriteAt(buf.Bytes(), l.sideN); err != nil {
		return fmt.Errorf("write side file: %w", err)
	}
	if err := l.side.Sync(); err != nil {
		return fmt.Errorf("sync side file: %w", err)
	}
	l.sideN += int64(buf.Len())
	return nil
}

// sideEnd returns where the next side record goes: after the last complete
// line (a line torn by a crash belongs to an unacknowledged batch).
func sideEnd(f file) (int64, error) {
	st, err := os.Stat(f.Name())
	if err != nil {
		return 0, err
	}
	end := st.Size()
	buf := make([]byte, 4096)
	for end > 0 {
		n := min(end, int64(len(buf)))
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	return end, f.Truncate(end)
}

// Size returns the number of durable entries.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size
}

// Err returns the error that stopped the log, or nil.
func (l *Log) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.failed
}

// ReadEntry returns the encoded entry at index i.
func (l *Log) ReadEntry(i int64) ([]byte, error) {
	b, err := l.readEntry(i)
	if err != nil {
		return nil, fmt.Errorf("read entry %d: %w", i, err)
	}
	return b, nil
}

func (l *Log) readEntry(i int64) ([]byte, error) {
	l.mu.RLock()
	if i < 0 || i >= int64(len(l.locs)) {
		l.mu.RUnlock()
		return nil, fmt.Errorf("index %d out of range [0, %d)", i, len(l.locs))
	}
	lc := l.locs[i]
	seg := l.segs[lc.seg]
	l.mu.RUnlock()
	fr, err := readFrame(seg.f, lc.off, seg.size)
	if err != nil {
		return nil, err
	}
	if fr.index != i {
		return nil, fmt.Errorf("%w: frame holds entry %d", ErrCorrupt, fr.index)
	}
	return fr.payload, nil
}

// HashReader returns a reader of the log's stored hashes (tlog numbering).
func (l *Log) HashReader() tlog.HashReader { return l.hashes }

// Close waits for queued appends, then closes the log's files and releases
// the directory lock.
func (l *Log) Close() error {
	l.appendMu.Lock()
	if l.closed {
		l.appendMu.Unlock()
		return fmt.Errorf("close audit log: %w", ErrClosed)
	}
	l.closed = true
	close(l.queue)
	l.appendMu.Unlock()
	<-l.done
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	if l.spare != nil {
		<-l.spare.done
	}
	var errs []error
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	if l.hashes != nil {
		errs = append(errs, l.hashes.f.Sync(), l.hashes.f.Close())
	}
	if l.side != nil {
		errs = append(errs, l.side.Close())
	}
	errs = append(errs, l.lock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}
