package gateway

import (
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// ReplayOptions are the gateway settings a replay must share with the
// gateway that wrote the log (zero: the gateway's defaults), and how the
// replay runs.
type ReplayOptions struct {
	Retention  time.Duration
	MaxHistory int

	// Approved: also call fn for the re-evaluation of an approved request
	// (Entry.Decision "approved").
	Approved bool
	// Entry, when set, is called for every entry, in log order, from one
	// goroutine, before fn sees the entry (if it is a decision).
	Entry func(i int64, e *audit.Entry) error
	// Workers is how many goroutines decode entries and how many evaluate
	// (default GOMAXPROCS; 1 for a plain sequential walk).
	Workers int
}

// Replayed is one recorded decision with the request as the gateway
// evaluated it: the recorded action, agent (id and roles), session,
// instruction and reasoning, now = the entry's time, and the agent's history
// derived from the entries before it, exactly as the gateway derives it.
type Replayed struct {
	Index   int64
	Entry   *audit.Entry
	Request *policy.Request
	// HistoryLimit is set when the gateway denied without evaluating
	// because the agent's history was full.
	HistoryLimit bool
}

// Replay walks the log and calls fn for every decision that was evaluated
// (not for requests refused before decoding, and not for the re-evaluation
// of an approved request unless opts.Approved).
//
// Agents' histories are independent, so the decisions of different agents
// are replayed concurrently: fn is called from several goroutines at once,
// but for the decisions of one agent always one at a time and in log order,
// each seeing the history of exactly the entries before it. The Replayed
// value and its Request.Session.History are only valid during the call.
// The first error (from reading the log, opts.Entry or fn) stops the walk.
//
// Entries are decoded with audit.DecodeVerifiedEntry: their structure is
// checked, but not that each encoding is canonical, which audit.VerifyDir
// checks (`rulelock verify --replay` runs it first).
func Replay(lr LogReader, opts ReplayOptions, fn func(*Replayed) error) error {
	if opts.Retention <= 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = 1000
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	w := &walker{lr: lr, opts: opts, fn: fn, stop: make(chan struct{}), seed: maphash.MakeSeed()}
	return w.run()
}

// replayChunk is how many consecutive entries one decoder takes at a time.
const replayChunk = 256

// walker is one Replay: decoders read and decode chunks of entries in
// parallel; one sequencer takes the chunks in log order, calls opts.Entry
// and hands each agent's events to the shard that owns the agent; each
// shard evaluates its agents' decisions in order.
type walker struct {
	lr   LogReader
	opts ReplayOptions
	fn   func(*Replayed) error
	seed maphash.Seed

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

// replayItem is one decoded entry. For decisions, req is the request as
// the gateway evaluated it (history to be filled in), or nil when the
// entry records a request refused before decoding.
type replayItem struct {
	index int64
	e     *audit.Entry
	req   *policy.Request
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
			roles := map[string][]string{} // decoded decision states: most are alike
			for c := range work {
				c.items, c.err = w.decode(c.lo, c.hi, roles)
				close(c.done)
			}
		}()
	}
	shards := make([]chan []replayItem, n)
	for i := range shards {
		shards[i] = make(chan []replayItem, 4)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.evaluate(shards[i])
		}()
	}
	w.sequence(order, shards)
	for _, s := range shards {
		close(s)
	}
	// Unblock the producer and the decoders if the walk stopped early.
	for c := range order {
		<-c.done
	}
	wg.Wait()
	return w.err
}

// sequence takes the chunks in log order and routes them.
func (w *walker) sequence(order <-chan *chunk, shards []chan []replayItem) {
	batches := make([][]replayItem, len(shards))
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
			if w.opts.Entry != nil {
				if err := w.opts.Entry(it.index, it.e); err != nil {
					w.fail(err)
					return
				}
			}
			if it.e.Kind == audit.KindOutcome || it.req != nil {
				s := w.shard(it.e.Agent, len(shards))
				batches[s] = append(batches[s], it)
			}
		}
		for s, b := range batches {
			if len(b) == 0 {
				continue
			}
			select {
			case shards[s] <- b:
			case <-w.stop:
				return
			}
			batches[s] = nil
		}
	}
}

func (w *walker) shard(agent string, n int) int {
	if n == 1 {
		return 0
	}
	return int(maphash.String(w.seed, agent) % uint64(n))
}

// decode reads and decodes entries [lo, hi). roles caches the agent roles
// of each decision state text seen.
func (w *walker) decode(lo, hi int64, roles map[string][]string) ([]replayItem, error) {
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
		raw := raws[i-lo]
		e, err := audit.DecodeVerifiedEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("replay: entry %d: %w", i, err)
		}
		it := replayItem{index: i, e: e}
		if e.Kind == audit.KindDecision {
			if it.req, err = w.request(i, e, roles); err != nil {
				return nil, err
			}
		}
		items = append(items, it)
	}
	return items, nil
}

var errStopped = errors.New("replay stopped")

// request rebuilds the request a decision entry records, without its
// history; nil when it was refused before decoding.
func (w *walker) request(i int64, e *audit.Entry, roles map[string][]string) (*policy.Request, error) {
	text := e.Action.Text
	if text == "" && !e.Action.Digest.IsZero() {
		b, err := w.lr.Blob(e.Action.Digest)
		if err != nil {
			return nil, fmt.Errorf("replay: entry %d: action: %w", i, err)
		}
		text = string(b)
	}
	v, err := strictjson.Decode([]byte(text), strictjson.Limits{})
	if err != nil {
		return nil, nil // refused before decoding: nothing was evaluated
	}
	act, err := policy.NewAction(v)
	if err != nil {
		return nil, nil
	}
	r, ok := roles[e.State.Text]
	if !ok {
		ds, err := decodeDecisionState(e.State)
		if err != nil {
			return nil, fmt.Errorf("replay: entry %d: state: %w", i, err)
		}
		r = ds.AgentRoles
		if ds.Approval == nil && len(roles) < 1024 {
			roles[e.State.Text] = r // shared: the policy only reads roles
		}
	}
	return &policy.Request{
		Action:      act,
		Agent:       policy.Agent{ID: e.Agent, Roles: r},
		Session:     policy.Session{ID: e.Session},
		Instruction: e.Instruction.Text,
		Reasoning:   e.Reasoning.Text,
		Now:         e.Time,
	}, nil
}

// replayAgent is one agent's history during a replay: what agentState
// holds in the gateway, pruned the same way, without copying on every
// prune.
type replayAgent struct {
	history []policy.HistoryEntry
	ids     []string
}

func (a *replayAgent) prune(from time.Time) {
	n := 0
	for n < len(a.history) && a.history[n].Time.Before(from) {
		n++
	}
	a.history, a.ids = a.history[n:], a.ids[n:]
}

func (a *replayAgent) setOutcome(id, outcome string) {
	for i := len(a.ids) - 1; i >= 0; i-- {
		if a.ids[i] == id {
			a.history[i].Outcome = outcome
			return
		}
	}
}

// evaluate replays the events of the agents one shard owns.
func (w *walker) evaluate(in <-chan []replayItem) {
	agents := map[string]*replayAgent{}
	failed := false
	for b := range in {
		if failed {
			continue // drain
		}
		for _, it := range b {
			if err := w.replayOne(agents, it); err != nil {
				w.fail(err)
				failed = true
				break
			}
		}
	}
}

func (w *walker) replayOne(agents map[string]*replayAgent, it replayItem) error {
	e := it.e
	st := agents[e.Agent]
	if e.Kind == audit.KindOutcome {
		if st != nil {
			st.setOutcome(e.RequestID, historyOutcome(e.Status))
		}
		return nil
	}
	if st == nil {
		st = &replayAgent{}
		agents[e.Agent] = st
	}
	st.prune(e.Time.Add(-w.opts.Retention))
	r := &Replayed{Index: it.index, Entry: e, Request: it.req, HistoryLimit: atHistoryCap(e.Decision, len(st.history), w.opts.MaxHistory)}
	// The full slice expression: an fn that appends gets its own copy.
	r.Request.Session.History = st.history[:len(st.history):len(st.history)]
	if e.Decision != "approved" || w.opts.Approved {
		if err := w.fn(r); err != nil {
			return err
		}
	}
	if r.HistoryLimit {
		return nil // the gateway does not remember it (Gateway.decide)
	}
	st.history = append(st.history, policy.HistoryEntry{Action: r.Request.Action.Fields, Type: r.Request.Action.Type, Decision: e.Decision, Time: e.Time})
	st.ids = append(st.ids, e.RequestID)
	return nil
}
