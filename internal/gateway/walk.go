package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
)

// logItem is one entry of the log, decoded: d is set for decisions (nil
// Action for a refusal), leaf when the walk computes leaf hashes.
type logItem struct {
	index int64
	e     *audit.Entry
	d     *ledger.Decoded
	leaf  tlog.Hash
}

// walkLog calls each with every entry of the log, in log order, from one
// goroutine, while workers goroutines (default GOMAXPROCS) read and decode
// the entries ahead of it: what the fold must do in order (Rebuild, the
// replay, a refold) runs alone, the decoding around it in parallel. With
// leaves, each item has its Merkle leaf hash. The first error stops it.
//
// Entries are decoded with audit.DecodeVerifiedEntry: opening the log
// checked every frame and the hash chain; that each encoding is canonical
// is the verifier's to check (audit.VerifyDir, which `rulelock verify
// --replay` runs first).
func walkLog(lr LogReader, workers int, leaves bool, each func(logItem) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	w := &walker{lr: lr, leaves: leaves, each: each, stop: make(chan struct{})}
	return w.run(workers)
}

// walkChunk is how many consecutive entries one decoder takes at a time.
const walkChunk = 256

// walker is one walkLog: decoders read and decode chunks of entries in
// parallel; one sequencer takes the chunks in log order and calls each.
type walker struct {
	lr     LogReader
	leaves bool
	each   func(logItem) error

	stop    chan struct{}
	errOnce sync.Once
	err     error
}

// chunk is a run of decoded entries.
type chunk struct {
	lo, hi int64
	items  []logItem
	err    error
	done   chan struct{}
}

func (w *walker) fail(err error) {
	w.errOnce.Do(func() {
		w.err = err
		close(w.stop)
	})
}

func (w *walker) run(n int) error {
	order := make(chan *chunk, 2*n)
	work := make(chan *chunk, 2*n)
	var wg sync.WaitGroup
	go func() {
		defer close(order)
		defer close(work)
		size := w.lr.Size()
		for lo := int64(0); lo < size; lo += walkChunk {
			c := &chunk{lo: lo, hi: min(lo+walkChunk, size), done: make(chan struct{})}
			select {
			case order <- c:
			case <-w.stop:
				return
			}
			work <- c // never blocks longer than a decoder takes: work is as deep as order
		}
	}()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				c.items, c.err = w.decode(c.lo, c.hi)
				close(c.done)
			}
		}()
	}
	w.sequence(order)
	// Unblock the producer and the decoders if the walk stopped early.
	for c := range order {
		<-c.done
	}
	wg.Wait()
	return w.err
}

// sequence takes the chunks in log order and calls each.
func (w *walker) sequence(order <-chan *chunk) {
	for c := range order {
		select {
		case <-c.done:
		case <-w.stop:
			return
		}
		if c.err != nil {
			w.fail(c.err)
			return
		}
		for _, it := range c.items {
			if err := w.each(it); err != nil {
				w.fail(err)
				return
			}
		}
		c.items = nil // the chunk is done with: let its entries go
	}
}

// decode reads and decodes entries [lo, hi).
func (w *walker) decode(lo, hi int64) ([]logItem, error) {
	items := make([]logItem, 0, hi-lo)
	raws, err := w.lr.ReadEntries(lo, hi)
	if err != nil {
		return nil, fmt.Errorf("entries from %d: %w", lo, err)
	}
	for i := lo; i < hi; i++ {
		select {
		case <-w.stop:
			return nil, errStopped
		default:
		}
		raw := raws[i-lo]
		e, err := audit.DecodeVerifiedEntry(raw)
		if err != nil {
			return nil, &EntryError{Index: i, Err: err}
		}
		it := logItem{index: i, e: e}
		if w.leaves {
			it.leaf = tlog.RecordHash(raw)
		}
		if e.Kind == audit.KindDecision {
			if it.d, err = ledger.Decode(e, w.lr); err != nil {
				return nil, &EntryError{Index: i, Err: err}
			}
		}
		items = append(items, it)
	}
	return items, nil
}

var errStopped = errors.New("walk stopped")

// EntryError is an entry of the log that a walk (Rebuild, Replay) could not
// decode: errors.Is(err, audit.ErrActionMismatch) for a decision whose
// action is not the one its action_sha256 names.
type EntryError struct {
	Index int64
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %d: %v", e.Index, e.Err) }

func (e *EntryError) Unwrap() error { return e.Err }
