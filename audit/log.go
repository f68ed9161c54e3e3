package audit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	// recovery must not repair (anything but a torn last frame); the error
	// is a *CorruptError that says where.
	ErrCorrupt = errors.New("audit log corrupt")
)

// Options configure a Log. The zero value works.
type Options struct {
	// SegmentSize is the size of each preallocated segment file
	// (default 16 MiB). It is fixed when a segment is created.
	SegmentSize int64
	// MaxInline is the longest field stored inline; longer fields are stored
	// by digest in the blob store (default 4096 bytes).
	MaxInline int
	// MaxRaw is the longest raw request body (Entry.Raw) whose bytes are
	// kept in the blob store; a longer one is recorded by digest and size
	// only (default 1 MiB).
	MaxRaw int64
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
		o.SegmentSize = 16 << 20
	}
	if o.SegmentSize < frameHeader+MaxEntrySize {
		o.SegmentSize = frameHeader + MaxEntrySize
	}
	if o.MaxInline <= 0 {
		o.MaxInline = 4096
	}
	if o.MaxRaw <= 0 {
		o.MaxRaw = 1 << 20
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
// and its RFC 6962 leaf hash. A receipt with an inclusion proof against a
// signed checkpoint comes from Checkpointer.Receipt once a checkpoint covers
// the entry.
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
	durable  chan durable // from run to acker
	done     chan struct{}

	mu     sync.RWMutex // guards the fields below
	segs   []*segment
	locs   []loc // of entries base, base+1, ...
	base   int64 // 0; the first entry of a tail snapshot (OpenTail)
	size   int64 // durable entries
	failed error

	hashes *hashStore
	// Owned by the writer (run): the next index, chain and frame buffer of
	// what is durable, which is ahead of size until acker publishes it.
	next     int64
	chain    tlog.Hash
	buf      []byte
	sideSize int64     // the side file's size: zeros from sideN on (lineFile)
	saltsF   lineFile  // the salts file, opened lazily
	salts    saltCache // for Unseal

	spare *spare // next segment, being preallocated (writer only)
	side  file   // the sensitive side file, opened lazily
	sideN int64

	torn *TornTail // the torn tail Open repaired, if any
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
	salts   []Salt
	done    chan result
}

type result struct {
	r   Receipt
	err error
}

// sideRecord is one line of the side file: the sealed value of a whole
// field stored as a commitment (its salt is in the salts file).
type sideRecord struct {
	Field  string `json:"field"`
	HMAC   Digest `json:"hmac"`
	Index  int64  `json:"index"`
	Sealed []byte `json:"sealed"`
}

const (
	segDir        = "log"
	hashesFile    = "hashes"
	checkpointDir = "checkpoints"
	blobDir       = "blobs"
	sideFile      = "sensitive.jsonl"
	saltsFile     = "salts.jsonl"
	lockFile      = "LOCK"
)

func segName(first int64) string { return fmt.Sprintf("%020d.seg", first) }

// Open opens the log in dir, creating it if needed. It recovers from a crash:
// it verifies every frame and the hash chain, and zeroes a torn last frame
// (never an acknowledged one: those were synced), keeping a copy and
// reporting it (TornTail). Any other damage refuses the log with a
// *CorruptError (ErrCorrupt): nothing acknowledged is ever discarded. A
// directory another process has open gives ErrLocked.
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
	l := &Log{dir: dir, opts: opts, lock: lock, queue: make(chan *request, opts.MaxBatch), durable: make(chan durable, 64), done: make(chan struct{})}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("open audit log %s: %w", dir, err)
	}
	l.next = l.size
	go l.run()
	go l.acker()
	return l, nil
}

// Append writes e to the log and returns once it is on stable storage. The
// entry is copied; sensitive fields become commitments and long fields are
// stored by digest. An error means the entry was not acknowledged: it may or
// may not be in the log after a crash or a cancelled ctx, but the caller must
// act as if it were not. After a disk error every Append fails with ErrFailed.
func (l *Log) Append(ctx context.Context, e *Entry) (Receipt, error) {
	p, err := l.Enqueue(ctx, e)
	if err != nil {
		return Receipt{}, err
	}
	return p.Wait(ctx)
}

// Pending is an entry queued by Enqueue.
type Pending interface {
	// Wait is the second half of Append: it returns once the entry is on
	// stable storage, or the error that stopped the log (see Append).
	Wait(ctx context.Context) (Receipt, error)
}

type pending struct{ req *request }

// Enqueue is the first half of Append: it prepares e and queues it, and
// returns without waiting for the write. Entries are written in the order
// they were queued. An error means e was not queued and will not be
// written. Once e is queued it is written and acknowledged (Wait) unless the
// log fails first, and then no entry queued after it is acknowledged either:
// so a caller may let what comes after e depend on e as soon as Enqueue
// returns, provided it acts on e itself only after Wait.
func (l *Log) Enqueue(ctx context.Context, e *Entry) (Pending, error) {
	req, err := l.prepare(e)
	if err != nil {
		return nil, err
	}
	l.appendMu.RLock()
	defer l.appendMu.RUnlock()
	if l.closed {
		return nil, fmt.Errorf("append: %w", ErrClosed)
	}
	select {
	case l.queue <- req:
		return pending{req}, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("append: %w", ctx.Err())
	}
}

func (p pending) Wait(ctx context.Context) (Receipt, error) {
	select {
	case res := <-p.req.done:
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
	req := &request{done: make(chan result, 1), salts: c.Salts}
	c.Salts = nil
	// Names and fields apart: a pair holding both would let the name's
	// escape (into the side record) move the copy c to the heap with it.
	names := [...]string{"action", "instruction", "reasoning", "result", "state"}
	for i, f := range [...]*Field{&c.Action, &c.Instruction, &c.Reasoning, &c.Result, &c.State} {
		if f.Text == "" {
			f.Sensitive = false
			continue
		}
		switch {
		case f.Sensitive:
			cm, salt, err := Commit(l.opts.Rand, []byte(f.Text))
			if err != nil {
				return nil, fmt.Errorf("append: %w", err)
			}
			req.side = append(req.side, sideRecord{Field: names[i], HMAC: cm.HMAC, Sealed: cm.Sealed})
			req.salts = append(req.salts, salt)
			*f = Field{Commitment: cm.HMAC}
		case len(f.Text) > l.opts.MaxInline:
			d, err := l.putBlob([]byte(f.Text))
			if err != nil {
				return nil, err
			}
			*f = Field{Digest: d, Size: int64(len(f.Text))}
		}
	}
	if c.Raw.Text != "" && int64(len(c.Raw.Text)) <= l.opts.MaxRaw {
		d, err := l.putBlob([]byte(c.Raw.Text))
		if err != nil {
			return nil, err
		}
		c.Raw = Field{Digest: d, Size: int64(len(c.Raw.Text))}
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
	b, err := readFileMax(filepath.Join(l.dir, blobDir, d.String()), MaxBlobSize)
	if err != nil {
		return nil, fmt.Errorf("read blob: %w", err)
	}
	if sha256.Sum256(b) != d {
		return nil, fmt.Errorf("read blob %v: content does not match digest", d)
	}
	return b, nil
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
	if i < l.base || i-l.base >= int64(len(l.locs)) {
		l.mu.RUnlock()
		return nil, fmt.Errorf("index %d out of range [%d, %d)", i, l.base, l.base+int64(len(l.locs)))
	}
	lc := l.locs[i-l.base]
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

// ReadEntries returns the payloads of entries [lo, hi), in order, as
// ReadEntry would, checking each frame's CRC and index. It reads each
// segment's run of frames with one read instead of two per entry, for
// readers that walk the whole log (replay, rebuild).
func (l *Log) ReadEntries(lo, hi int64) ([][]byte, error) {
	l.mu.RLock()
	if lo < l.base || hi > l.base+int64(len(l.locs)) || lo > hi {
		n := l.base + int64(len(l.locs))
		l.mu.RUnlock()
		return nil, fmt.Errorf("read entries [%d, %d): out of range [%d, %d)", lo, hi, l.base, n)
	}
	// Both are only appended to: the elements seen now never change.
	locs, segs := l.locs[lo-l.base:hi-l.base:hi-l.base], l.segs
	l.mu.RUnlock()

	out := make([][]byte, 0, len(locs))
	for j := 0; j < len(locs); {
		k := j + 1
		for k < len(locs) && locs[k].seg == locs[j].seg {
			k++
		}
		seg := segs[locs[j].seg]
		// Frames j .. k-2 lie whole between the first offset and the last
		// one: read them at once; the last frame by itself.
		start := locs[j].off
		buf := make([]byte, locs[k-1].off-start)
		if _, err := seg.f.ReadAt(buf, start); err != nil {
			return nil, fmt.Errorf("read entries at %d: %w", start, err)
		}
		r := memReader(buf)
		for i := j; i < k; i++ {
			var fr frame
			var err error
			if i < k-1 {
				fr, err = readFrame(r, locs[i].off-start, int64(len(buf)))
			} else {
				fr, err = readFrame(seg.f, locs[i].off, seg.size)
			}
			if err != nil {
				return nil, fmt.Errorf("read entry %d: %w", lo+int64(i), err)
			}
			if fr.index != lo+int64(i) {
				return nil, fmt.Errorf("read entry %d: %w: frame holds entry %d", lo+int64(i), ErrCorrupt, fr.index)
			}
			out = append(out, fr.payload)
		}
		j = k
	}
	return out, nil
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
		errs = append(errs, l.hashes.sync(), l.hashes.f.Close())
	}
	if l.side != nil {
		errs = append(errs, l.side.Close())
	}
	if l.saltsF.f != nil {
		errs = append(errs, l.saltsF.f.Close())
	}
	errs = append(errs, l.lock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}
