package gateway

import (
	"math"
	"runtime"
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
	// Sealed names the action's sensitive members whose salts are gone:
	// their commitments stand in the request in place of the values the
	// policy evaluated.
	Sealed []string
	// Logged is the action as the log holds it when it has sensitive
	// members (nil: Request.Action.JSON): what a report may show.
	Logged []byte
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
	r := &replayer{opts: opts, fn: fn, ledger: l}
	return walkLog(lr, opts.Workers, false, r.replayOne)
}

// replayer is one Replay's state: the ledger it folds into.
type replayer struct {
	opts   ReplayOptions
	fn     func(*Replayed) error
	ledger *ledger.Ledger
}

// allScopes: the replay is sequential, so it holds every scope.
const allScopes = policy.ScopeSet(1<<policy.ScopeSession | 1<<policy.ScopeAgent | 1<<policy.ScopePrincipal | 1<<policy.ScopeGlobal)

func (w *replayer) replayOne(it logItem) error {
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
			Instruction: d.Instruction,
			Reasoning:   d.Reasoning,
			Now:         e.Time,
			State:       tx,
		}, Sealed: d.Sealed, Logged: d.Logged}
		if err := w.fn(r); err != nil {
			return err
		}
	}
	tx.Decided(e.RequestID, d.Action, d.Decision, e.Message, e.Time, true)
	return nil
}
