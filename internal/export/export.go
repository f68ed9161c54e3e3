// Package export ships the audit log's entries, in log order, to a
// receiver: an HTTP endpoint (a SIEM's collector) or a file. It reads the
// log; it is never in the decision path, so a slow or absent receiver makes
// it fall behind, never slows a decision, and never loses an entry.
//
// # Delivery
//
// The exporter keeps a cursor: the index of the next entry to send,
// written durably (a temporary file, fsync, rename, directory fsync) after
// each batch the receiver acknowledged. It reads the entries from the
// cursor on, sends them in batches of at most Options.BatchSize entries
// and Options.BatchBytes bytes, and moves the cursor only after the
// receiver acknowledged the whole batch. A failed send is retried, the same
// batch, forever, with exponential backoff and jitter. So delivery is
// at-least-once and in order: after a crash of the exporter (or of the
// receiver before it answered) the batch is sent again, and the receiver
// sees indexes it already has. It tells duplicates by index.
//
// # Format
//
// A batch is JSON lines, one per entry:
//
//	{"index":41,"leaf_hash":"<base64>","entry":{...the entry as the log holds it...}}
//
// entry is the entry's canonical encoding, byte for byte as it is in the
// log (sensitive members are commitments there, never unsealed here), and
// leaf_hash is its RFC 6962 leaf hash, SHA-256(0x00 || entry), in base64 as
// tlog-checkpoint notes write hashes: a receiver can check an entry against
// a signed checkpoint with an inclusion proof (GET /v1/log/proof/{index}).
//
// To HTTP the batch is the body of one POST (Content-Type
// application/x-ndjson, headers Rulelock-First-Index and
// Rulelock-Entries); any 2xx acknowledges it, anything else (including a
// timeout) is retried. A 413 halves the batch size. To a file the batch
// is appended and the file fsynced before the cursor moves; a line left
// incomplete by a crash is cut off when the exporter opens the file again
// (it was never acknowledged: the cursor still points at it).
package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
)

// Source is what the exporter reads of the log: an *audit.Log, or an
// *audit.Snapshot of a log another process writes.
type Source interface {
	Size() int64
	ReadEntries(lo, hi int64) ([][]byte, error)
}

// Sink receives batches. Send returns nil only once the receiver holds the
// whole batch durably (a 2xx, an fsync): then the cursor moves past it.
type Sink interface {
	Send(ctx context.Context, b Batch) error
}

// Batch is a run of consecutive entries, encoded as JSON lines.
type Batch struct {
	First int64  // index of the first entry
	N     int    // number of entries
	Lines []byte // N JSON lines, each ending in '\n'
}

// Options configure an Exporter. Open, Sink and Cursor are required.
type Options struct {
	// Open returns a view of the log that holds the entries from next-1
	// on (the cursor's next entry, and the one before it, which the
	// cursor names). The exporter calls it whenever it has sent all of the
	// view it holds, to see new entries; a view that is an io.Closer is
	// closed when replaced. For a log this process writes, use Live(log);
	// for one another process writes, Follow(dir).
	Open func(next int64) (Source, error)
	Sink Sink
	// Cursor is the path of the cursor file (created on first use).
	Cursor string
	// BatchSize caps the entries of a batch (default 2000), BatchBytes its
	// size (default 4 MiB; a single entry larger than that goes alone).
	BatchSize  int
	BatchBytes int
	// Poll is how long to wait when there is nothing new, or less than a
	// full batch (default 1s): the delay of an entry when the exporter is
	// caught up, and at most one cursor sync per Poll then.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a
	// failed batch (defaults 100ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger // default: discard
	// StopAtEnd makes Run return once it has sent every entry of the
	// log as it last looked (an export run from cron, or a test).
	StopAtEnd bool
}

func (o *Options) setDefaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 2000
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 4 << 20
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Stats is the exporter's progress.
type Stats struct {
	Exported int64 // entries acknowledged: the cursor (never resets)
	Size     int64 // entries in the log when last looked
	Failures int64 // failed sends since the start (each is retried)
}

// Lag is how many entries of the log are not yet acknowledged.
func (s Stats) Lag() int64 { return max(0, s.Size-s.Exported) }

// Exporter sends the log's entries to a Sink. Run it once.
type Exporter struct {
	opts     Options
	batch    int // current batch size (halved on 413)
	exported atomic.Int64
	size     atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	lastErr  error
}

// New returns an exporter. It reads the cursor, so that Stats is right
// before Run starts.
func New(opts Options) (*Exporter, error) {
	if opts.Open == nil || opts.Sink == nil || opts.Cursor == "" {
		return nil, errors.New("export: Open, Sink and Cursor are required")
	}
	opts.setDefaults()
	x := &Exporter{opts: opts, batch: opts.BatchSize}
	c, err := ReadCursor(opts.Cursor)
	if err != nil {
		return nil, err
	}
	x.exported.Store(c.Next)
	x.size.Store(c.Next)
	return x, nil
}

// Stats returns the exporter's progress.
func (x *Exporter) Stats() Stats {
	return Stats{Exported: x.exported.Load(), Size: x.size.Load(), Failures: x.failures.Load()}
}

// Err returns the error of the last failed send, or nil after a success.
func (x *Exporter) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.lastErr
}

// Run exports until ctx is done (then it returns nil), or until it finds
// that the cursor is not this log's (another log, or one rolled back: it
// stops rather than send anything wrong). Every other failure (a send,
// reading the log, writing the cursor) is retried with backoff, forever:
// nothing is skipped.
func (x *Exporter) Run(ctx context.Context) error {
	c, err := ReadCursor(x.opts.Cursor)
	if err != nil {
		return err
	}
	var src Source
	defer func() { closeSource(src) }()
	wait := x.opts.MinBackoff
	for ctx.Err() == nil {
		if src == nil || c.Next >= src.Size() {
			closeSource(src)
			src = nil
			if src, err = x.opts.Open(c.Next); err != nil {
				x.failed(ctx, &wait, fmt.Errorf("open log: %w", err))
				continue
			}
			x.size.Store(src.Size())
			if err := c.check(src); errors.Is(err, ErrOtherLog) {
				return err
			} else if err != nil {
				x.failed(ctx, &wait, err)
				continue
			}
			if c.Next == src.Size() {
				if x.opts.StopAtEnd {
					return nil
				}
				sleep(ctx, x.opts.Poll)
				continue
			}
		}
		b, last, err := x.read(src, c.Next)
		if err != nil {
			closeSource(src)
			src = nil
			x.failed(ctx, &wait, err)
			continue
		}
		if !x.send(ctx, b) {
			continue // ctx is done, or a smaller batch is to be read
		}
		next := Cursor{Next: b.First + int64(b.N), LeafHash: last}
		for err := next.write(x.opts.Cursor); err != nil && ctx.Err() == nil; err = next.write(x.opts.Cursor) {
			x.failed(ctx, &wait, err) // the batch is sent again if the process ends first
		}
		if ctx.Err() != nil {
			break
		}
		c, wait = next, x.opts.MinBackoff
		x.exported.Store(c.Next)
		if b.N < x.batch && !x.opts.StopAtEnd {
			// Caught up: wait for more rather than send (and sync a
			// cursor for) every few entries; behind, it sends full
			// batches back to back.
			sleep(ctx, x.opts.Poll)
		}
	}
	return nil
}

// failed counts and reports a failure other than a send, and waits before
// the retry.
func (x *Exporter) failed(ctx context.Context, wait *time.Duration, err error) {
	x.failures.Add(1)
	x.mu.Lock()
	x.lastErr = err
	x.mu.Unlock()
	x.opts.Logger.Warn("export: retrying", "retry_in", *wait, "err", err)
	sleep(ctx, *wait/2+rand.N(*wait/2+1))
	*wait = min(2**wait, x.opts.MaxBackoff)
}

// read encodes the batch of entries from next on.
func (x *Exporter) read(src Source, next int64) (Batch, tlog.Hash, error) {
	size := src.Size()
	x.size.Store(size)
	hi := min(size, next+int64(x.batch))
	entries, err := src.ReadEntries(next, hi)
	if err != nil {
		return Batch{}, tlog.Hash{}, fmt.Errorf("export: %w", err)
	}
	b := Batch{First: next}
	var last tlog.Hash
	for i, e := range entries {
		if b.N > 0 && len(b.Lines)+len(e)+128 > x.opts.BatchBytes {
			break
		}
		last = tlog.RecordHash(e)
		b.Lines = AppendLine(b.Lines, next+int64(i), last, e)
		b.N++
	}
	return b, last, nil
}

// AppendLine appends the JSON line of entry i (its encoding e, whose leaf
// hash is h) to dst.
func AppendLine(dst []byte, i int64, h tlog.Hash, e []byte) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, i, 10)
	dst = append(dst, `,"leaf_hash":"`...)
	dst = append(dst, h.String()...)
	dst = append(dst, `","entry":`...)
	dst = append(dst, e...)
	return append(dst, "}\n"...)
}

// Line is one exported entry as a receiver decodes it.
type Line struct {
	Index    int64           `json:"index"`
	LeafHash string          `json:"leaf_hash"`
	Entry    json.RawMessage `json:"entry"`
}

// Check reports whether l's leaf hash is the hash of its entry bytes.
func (l Line) Check() error {
	h, err := tlog.ParseHash(l.LeafHash)
	if err != nil {
		return fmt.Errorf("entry %d: leaf_hash: %w", l.Index, err)
	}
	if tlog.RecordHash(l.Entry) != h {
		return fmt.Errorf("entry %d: leaf_hash does not match the entry", l.Index)
	}
	return nil
}

// send sends b until the sink acknowledges it (true). It returns false,
// b not acknowledged, when ctx ends, or when the receiver refused b as too
// large: x.batch is then halved and the caller reads a smaller batch.
func (x *Exporter) send(ctx context.Context, b Batch) bool {
	wait := x.opts.MinBackoff
	for {
		err := x.opts.Sink.Send(ctx, b)
		x.mu.Lock()
		x.lastErr = err
		x.mu.Unlock()
		if err == nil {
			x.batch = min(x.opts.BatchSize, x.batch*2)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		x.failures.Add(1)
		x.opts.Logger.Warn("export: send failed; retrying", "first", b.First, "entries", b.N, "retry_in", wait, "err", err)
		// Jitter over the upper half of the wait: exporters that failed
		// together do not retry together.
		if !sleep(ctx, wait/2+rand.N(wait/2+1)) {
			return false
		}
		if errors.Is(err, ErrTooLarge) && b.N > 1 {
			x.batch = max(1, b.N/2)
			return false
		}
		wait = min(2*wait, x.opts.MaxBackoff)
	}
}

// ErrOtherLog stops Run: the cursor was written for another log, or for
// this one before it was rolled back.
var ErrOtherLog = errors.New("the cursor belongs to another log")

// ErrTooLarge is returned by a Sink whose receiver refused a batch as too
// large: the exporter halves the batch size.
var ErrTooLarge = errors.New("batch too large for the receiver")

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func closeSource(s Source) {
	if c, ok := s.(io.Closer); ok {
		c.Close()
	}
}

// Cursor is what the cursor file holds: the next entry to send and the
// leaf hash of the entry before it, so that a cursor is never applied to
// another log.
type Cursor struct {
	Next     int64     `json:"next"`
	LeafHash tlog.Hash `json:"leaf_hash"`
}

// ReadCursor reads the cursor file at path; a missing file is the start.
func ReadCursor(path string) (Cursor, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Cursor{}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("export: read cursor: %w", err)
	}
	var c cursorFile
	if err := json.Unmarshal(b, &c); err != nil || c.Next < 0 {
		return Cursor{}, fmt.Errorf("export: cursor %s is damaged: %q", path, b)
	}
	h, err := tlog.ParseHash(c.LeafHash)
	if c.Next > 0 && err != nil {
		return Cursor{}, fmt.Errorf("export: cursor %s: leaf_hash: %v", path, err)
	}
	return Cursor{Next: c.Next, LeafHash: h}, nil
}

type cursorFile struct {
	Next     int64  `json:"next"`
	LeafHash string `json:"leaf_hash,omitempty"`
}

func (c Cursor) write(path string) error {
	f := cursorFile{Next: c.Next}
	if c.Next > 0 {
		f.LeafHash = c.LeafHash.String()
	}
	b, _ := json.Marshal(f)
	if err := fsx.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("export: write cursor: %w", err)
	}
	return nil
}

// check refuses a cursor past the log's end, or whose previous entry is
// not the one it recorded.
func (c Cursor) check(src Source) error {
	if c.Next > src.Size() {
		return fmt.Errorf("export: %w: the cursor is at entry %d, the log has %d (rolled back?)", ErrOtherLog, c.Next, src.Size())
	}
	if c.Next == 0 {
		return nil
	}
	e, err := src.ReadEntries(c.Next-1, c.Next)
	if err != nil {
		return fmt.Errorf("export: check the cursor: %w", err)
	}
	if tlog.RecordHash(e[0]) != c.LeafHash {
		return fmt.Errorf("export: %w: entry %d of the log is not the one the cursor recorded", ErrOtherLog, c.Next-1)
	}
	return nil
}

// Live returns an Options.Open for a log this process writes (an
// *audit.Log): the log itself, which the exporter never closes.
func Live(log Source) func(int64) (Source, error) {
	v := liveView{log}
	return func(int64) (Source, error) { return v, nil }
}

// Follow returns an Options.Open for the log in dir that another process
// (a gateway) writes. The first view is a whole snapshot (every frame
// checked, audit.OpenSnapshot); each later one is the tail from the last
// entry of the one before (audit.OpenTail), so that looking again costs
// what was appended since, not the whole log. A tail it cannot open, or
// one that would not hold next-1, falls back to a whole snapshot.
func Follow(dir string) func(next int64) (Source, error) {
	var last *audit.Position
	return func(next int64) (Source, error) {
		var s *audit.Snapshot
		if last != nil && last.Index <= max(next-1, 0) {
			if t, err := audit.OpenTail(dir, *last); err == nil {
				s = t
			}
		}
		if s == nil {
			var err error
			if s, err = audit.OpenSnapshot(dir); err != nil {
				return nil, err
			}
		}
		if n := s.Size(); n > 0 {
			p, err := s.Position(n - 1)
			if err != nil {
				s.Close()
				return nil, err
			}
			last = &p
		}
		return s, nil
	}
}

// liveView hides a Close method.
type liveView struct{ s Source }

func (v liveView) Size() int64                                { return v.s.Size() }
func (v liveView) ReadEntries(lo, hi int64) ([][]byte, error) { return v.s.ReadEntries(lo, hi) }
