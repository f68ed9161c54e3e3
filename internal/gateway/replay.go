package gateway

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

// ReplayOptions are the gateway settings a replay must share with the
// gateway that wrote the log (zero: the gateway's defaults), and how the
// replay runs.
type ReplayOptions struct {
	Retention time.Duration
	// Policies are the policies the replay will evaluate under: the ledger
	// keeps the indexes they read, from the first entry on, as the gateway
	// did from each activation on (it folds the whole log again when a
	// policy needs a new index).
	Policies []*policy.Policy

	// Approved: also call fn for the re-evaluation of an approved request
	// (Entry.Decision "approved").
	Approved bool
	// Entry, when set, is called for every entry, in log order, before fn
	// sees the entry (if it is a decision).
	Entry func(i int64, e *audit.Entry) error
	// Workers is how many goroutines decode entries (default GOMAXPROCS).
	Workers int
}

// Replayed is one recorded decision with the request as the gateway
// evaluated it: the recorded action, agent (id, roles, principal), session,
// instruction and reasoning, now = the entry's time, and the state folded
// from the entries before it by the gateway's own fold (the ledger).
type Replayed struct {
	Index   int64
	Entry   *audit.Entry
	Request *policy.Request
}

// Replay walks the log and calls fn for every decision that was evaluated
// (not for requests refused before decoding, and not for the re-evaluation
// of an approved request unless opts.Approved), in log order, each seeing
// the state of exactly the entries before it, then folds the entry into the
// ledger exactly as a restarted gateway does (ledger.Apply). Limits can
// span agents (principal and global scopes), so decisions are evaluated one
// at a time; entries are read and decoded in parallel. The Replayed value
// and its Request (its State too) are only valid during the call. The first
// error (from reading the log, opts.Entry or fn) stops the walk.
//
// Entries are decoded with audit.DecodeVerifiedEntry: their structure is
// checked, but not that each encoding is canonical, which audit.VerifyDir
// checks (`rulelock verify --replay` runs it first).
func Replay(lr LogReader, opts ReplayOptions, fn func(*Replayed) error) error {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	l := ledger.New(ledger.Options{Retention: opts.Retention, Budget: math.MaxInt64})
	for _, p := range opts.Policies {
		l.Install(p)
	}
	w := &walker{lr: lr, opts: opts, fn: fn, stop: make(chan struct{}), ledger: l}
	return w.run()
}

// replayChunk is how many consecutive entries one decoder takes at a time.
const replayChunk = 256

// walker is one Replay: decoders read and decode chunks of entries in
// parallel; one sequencer takes the chunks in log order, calls opts.Entry
// and fn, and folds each entry.
type walker struct {
	lr     LogReader
	opts   ReplayOptions
	fn     func(*Replayed) error
	ledger *ledger.Ledger

	stop    chan struct{}
	errOnce sync.Once
	err     error
}

// chunk is a run of decoded entries.
type chunk struct {
	lo, hi int64
	items  []replayItem
	err    error
	done   chan struct{}
}

// replayItem is one decoded entry; d is set for decisions.
type replayItem struct {
	index int64
	e     *audit.Entry
	d     *ledger.Decoded
}

func (w *walker) fail(err error) {
	w.errOnce.Do(func() {
		w.err = err
		close(w.stop)
	})
}

func (w *walker) run() error {
	n := w.opts.Workers
	order := make(chan *chunk, 2*n)
	work := make(chan *chunk, 2*n)
	var wg sync.WaitGroup
	go func() {
		defer close(order)
		defer close(work)
		size := w.lr.Size()
		for lo := int64(0); lo < size; lo += replayChunk {
			c := &chunk{lo: lo, hi: min(lo+replayChunk, size), done: make(chan struct{})}
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

// sequence takes the chunks in log order, evaluates and folds.
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
			if err := w.replayOne(it); err != nil {
				w.fail(err)
				return
			}
		}
	}
}

// decode reads and decodes entries [lo, hi).
func (w *walker) decode(lo, hi int64) ([]replayItem, error) {
	items := make([]replayItem, 0, hi-lo)
	raws, err := w.lr.ReadEntries(lo, hi)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	for i := lo; i < hi; i++ {
		select {
		case <-w.stop:
			return nil, errStopped
		default:
		}
		e, err := audit.DecodeVerifiedEntry(raws[i-lo])
		if err != nil {
			return nil, fmt.Errorf("replay: entry %d: %w", i, err)
		}
		it := replayItem{index: i, e: e}
		if e.Kind == audit.KindDecision {
			if it.d, err = ledger.Decode(e, w.lr); err != nil {
				return nil, fmt.Errorf("replay: entry %d: %w", i, err)
			}
		}
		items = append(items, it)
	}
	return items, nil
}

var errStopped = errors.New("replay stopped")

// allScopes: the replay is sequential, so it holds every scope.
const allScopes = policy.ScopeSet(1<<policy.ScopeSession | 1<<policy.ScopeAgent | 1<<policy.ScopePrincipal | 1<<policy.ScopeGlobal)

func (w *walker) replayOne(it replayItem) error {
	e := it.e
	if w.opts.Entry != nil {
		if err := w.opts.Entry(it.index, e); err != nil {
			return err
		}
	}
	if e.Kind != audit.KindDecision || it.d.Action == nil {
		w.ledger.Apply(e, it.d)
		return nil
	}
	d := it.d
	tx := w.ledger.Begin(d.Agent, e.Session, d.Action.Type, allScopes)
	defer tx.Unlock()
	if ledger.Decision(e.Decision) != ledger.Approved || w.opts.Approved {
		r := &Replayed{Index: it.index, Entry: e, Request: &policy.Request{
			Action:      *d.Action,
			Agent:       d.Agent,
			Session:     policy.Session{ID: e.Session, History: tx.History()},
			Instruction: e.Instruction.Text,
			Reasoning:   e.Reasoning.Text,
			Now:         e.Time,
			State:       tx,
		}}
		if err := w.fn(r); err != nil {
			return err
		}
	}
	tx.Decided(e.RequestID, d.Action, d.Decision, e.Message, e.Time, true)
	return nil
}
