package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/rulelock/rulelock/internal/fsx"
)

// run is the writer, with eager group commit and no timer: it takes what
// is queued, writes it, syncs once and hands the durable batch to acker,
// which publishes and acknowledges it while the writer already writes and
// syncs the next batch. Nothing is acknowledged before the fdatasync that
// covers it.
//
// After a batch of more than one entry (appends are concurrent), the
// writer yields its processor once before it takes the next batch, so that
// the goroutines already runnable, about to append, join that batch rather
// than wait for the one after it. An fdatasync costs about 80 µs of kernel
// CPU on a virtual machine whatever it covers, so at saturation larger
// batches leave more CPU to the appenders (docs/benchmarks.md: 10–11,000 to
// 11–14,000 decisions/s over HTTP). A lone append (batches of one) does
// not yield and waits for nothing.
func (l *Log) run() {
	defer close(l.durable)
	last := 0
	for req := range l.queue {
		if last > 1 {
			runtime.Gosched()
		}
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
		last = len(batch)
	}
}

// commit makes batch durable and hands it to acker, or answers what it
// could not make durable with the error that stopped the log.
func (l *Log) commit(batch []*request) {
	if err := l.Err(); err != nil {
		ack(batch, err)
		return
	}
	if sent, err := l.writeBatch(batch); err != nil {
		ack(batch[sent:], l.fail(err))
	}
}

// durable is a synced batch: its requests and where their frames are.
type durable struct {
	reqs []*request
	locs []loc
}

// acker publishes and acknowledges durable batches, in order. After a
// failed publish nothing more is acknowledged.
func (l *Log) acker() {
	defer close(l.done)
	var err error
	for d := range l.durable {
		if err == nil {
			err = l.publish(d)
			if err != nil {
				err = l.fail(err)
			}
			continue
		}
		ack(d.reqs, err)
	}
}

// fail stops the log after a disk error and returns the error every
// unacknowledged and later Append gets. No fdatasync follows a failed one:
// a second call may report success for pages the failed one lost.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = fmt.Errorf("append: %w: %w", ErrFailed, err)
	}
	return l.failed
}

func ack(batch []*request, err error) {
	for _, req := range batch {
		req.done <- result{Receipt{}, err}
	}
}

// writeBatch writes and syncs batch, rolling to a new segment when the
// current one is full, and hands the durable frames to acker. It returns
// how many requests it handed over (all of them when err is nil).
func (l *Log) writeBatch(batch []*request) (sent int, err error) {
	if err := l.writeSide(batch); err != nil {
		return 0, err
	}
	for sent < len(batch) {
		rest := batch[sent:]
		seg := l.segs[len(l.segs)-1]
		buf := l.buf[:0]
		chain := l.chain
		off := seg.end
		locs := make([]loc, 0, len(rest))
		for _, req := range rest {
			if off+frameHeader+int64(len(req.payload)) > seg.size {
				break
			}
			chain = nextChain(chain, req.leaf)
			buf = appendFrame(buf, l.next+int64(len(locs)), chain, req.payload)
			locs = append(locs, loc{seg: int32(len(l.segs) - 1), off: off})
			off += frameHeader + int64(len(req.payload))
		}
		l.buf = buf
		n := len(locs)
		if n == 0 {
			if err := l.newSegment(l.next); err != nil {
				return sent, err
			}
			continue
		}
		if _, err := seg.f.WriteAt(buf, seg.end); err != nil {
			return sent, fmt.Errorf("write %s: %w", seg.f.Name(), err)
		}
		if err := seg.f.Sync(); err != nil {
			return sent, fmt.Errorf("sync %s: %w", seg.f.Name(), err)
		}
		seg.end = off
		l.chain = chain
		l.next += int64(n)
		l.durable <- durable{reqs: rest[:n], locs: locs}
		sent += n
	}
	return sent, nil
}

// publish records a durable batch in memory and acknowledges it.
func (l *Log) publish(w durable) error {
	var herr error
	l.mu.RLock()
	first := l.size
	l.mu.RUnlock()
	for i, req := range w.reqs {
		if herr = l.hashes.add(first+int64(i), req.leaf); herr != nil {
			break
		}
	}
	if herr == nil && l.hashes.needsFlush() {
		herr = l.hashes.flush()
	}
	l.mu.Lock()
	l.locs = append(l.locs, w.locs...)
	l.size += int64(len(w.reqs))
	l.mu.Unlock()
	for i, req := range w.reqs {
		req.done <- result{Receipt{Index: first + int64(i), LeafHash: req.leaf}, nil}
	}
	// The entries are durable and acknowledged; a hashes error only stops
	// further appends (the hashes are rebuilt on reopen).
	return herr
}

// writeSide appends the batch's salts to the salts file and the sealed
// whole fields to the side file, and syncs them, before the entries that
// commit to them are written: an acknowledged entry's values can be
// revealed (until the salts are deleted).
func (l *Log) writeSide(batch []*request) error {
	var side, salts bytes.Buffer
	idx := l.next
	for _, req := range batch {
		for _, s := range req.side {
			s.Index = idx
			if err := appendLine(&side, s); err != nil {
				return fmt.Errorf("side record: %w", err)
			}
		}
		for _, s := range req.salts {
			if err := appendLine(&salts, saltRecord{HMAC: s.HMAC, Index: idx, Salt: s.Salt}); err != nil {
				return fmt.Errorf("salt record: %w", err)
			}
		}
		idx++
	}
	if err := l.appendSide(&l.saltsF.f, &l.saltsF.end, &l.saltsF.size, saltsFile, salts.Bytes()); err != nil {
		return err
	}
	return l.appendSide(&l.side, &l.sideN, &l.sideSize, sideFile, side.Bytes())
}

func appendLine(buf *bytes.Buffer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf.Write(b)
	buf.WriteByte('\n')
	return nil
}

// lineFile is a file of JSON lines the writer appends to (the side and
// salts files). Like a segment, it is zero-filled ahead of its end, a
// step at a time, so that the fdatasync after most appends has no size
// change, no metadata, to flush: on a file that grew with every append
// that flush made an append with sensitive values cost three plain ones.
// Readers stop at the first zero byte.
type lineFile struct {
	f    file
	end  int64 // where the next line goes
	size int64 // the file's size, zeros from end on
}

// lineFileStep is how far ahead a line file is zero-filled.
const lineFileStep = 256 << 10

// appendSide appends b to the line file name (f, opened on first use,
// its end and size as in lineFile) and syncs it.
func (l *Log) appendSide(f *file, end, size *int64, name string, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	lf := lineFile{f: *f, end: *end, size: *size}
	defer func() { *f, *end, *size = lf.f, lf.end, lf.size }()
	if lf.f == nil {
		opened, err := l.opts.openFile(filepath.Join(l.dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		last, err := sideEnd(opened)
		if err == nil {
			// The file may be new: its name must be durable with the entries.
			err = fsx.SyncDir(l.dir)
		}
		if err != nil {
			opened.Close()
			return fmt.Errorf("open %s: %w", name, err)
		}
		lf = lineFile{f: opened, end: last, size: last}
	}
	if need := lf.end + int64(len(b)); need > lf.size {
		size := need + lineFileStep
		if _, err := lf.f.WriteAt(make([]byte, size-lf.size), lf.size); err != nil {
			return fmt.Errorf("extend %s: %w", name, err)
		}
		lf.size = size
	}
	if _, err := lf.f.WriteAt(b, lf.end); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := lf.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	lf.end += int64(len(b))
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
