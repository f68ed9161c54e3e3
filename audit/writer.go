package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/tlog"
)

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
	if acked, err := l.writeBatch(batch); err != nil {
		l.mu.Lock()
		l.failed = fmt.Errorf("append: %w: %w", ErrFailed, err)
		l.mu.Unlock()
		ack(batch[acked:], Receipt{}, l.failed)
	}
}

func ack(batch []*request, r Receipt, err error) {
	for _, req := range batch {
		req.done <- result{r, err}
	}
}

// writeBatch writes, syncs and acknowledges batch, rolling to a new segment
// when the current one is full. It returns how many requests it
// acknowledged (all of them when err is nil).
func (l *Log) writeBatch(batch []*request) (acked int, err error) {
	if err := l.writeSide(batch); err != nil {
		return 0, err
	}
	for acked < len(batch) {
		rest := batch[acked:]
		seg := l.segs[len(l.segs)-1]
		var buf []byte
		chain := l.chain
		idx := l.size
		n := 0
		for _, req := range rest {
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
				return acked, err
			}
			continue
		}
		if _, err := seg.f.WriteAt(buf, seg.end); err != nil {
			return acked, fmt.Errorf("write %s: %w", seg.f.Name(), err)
		}
		if err := seg.f.Sync(); err != nil {
			return acked, fmt.Errorf("sync %s: %w", seg.f.Name(), err)
		}
		err := l.publish(rest[:n], seg, chain)
		acked += n
		if err != nil {
			return acked, err
		}
	}
	return acked, nil
}

// publish records the durable frames in memory and acknowledges them.
func (l *Log) publish(batch []*request, seg *segment, chain tlog.Hash) error {
	locs := make([]loc, len(batch))
	off := seg.end
	var herr error
	for i, req := range batch {
		locs[i] = loc{seg: int32(len(l.segs) - 1), off: off}
		off += frameHeader + int64(len(req.payload))
		if herr == nil {
			herr = l.hashes.add(l.size+int64(i), req.leaf)
		}
	}
	if herr == nil && l.hashes.needsFlush() {
		herr = l.hashes.flush()
	}
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
