package ledger

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// Options configure a Ledger. The zero value works.
type Options struct {
	// Retention is how long actions are kept for the windows (default 7
	// days). It must be at least the longest window a policy reads
	// (CheckRetention).
	Retention time.Duration
	// Budget caps the memory the ledger keeps, in bytes (default 512 MiB).
	// Over it, OverBudget reports true and the gateway denies new actions
	// (memory_budget) until old ones leave the retention window.
	Budget int64
}

// DefaultRetention and DefaultBudget are the zero Options' values.
const (
	DefaultRetention = 7 * 24 * time.Hour
	DefaultBudget    = 512 << 20
)

// Ledger is the state derived from the log. It is safe for concurrent use:
// a Txn locks the scopes one decision reads and writes.
type Ledger struct {
	opts Options
	tab  atomic.Pointer[table]

	agents     sync.Map // agent id -> *agentScope
	principals sync.Map // principal id -> *store
	global     store

	bytes atomic.Int64

	freeze freezeFold // the emergency stop (freeze.go)
}

// spec is one index the ledger keeps.
type spec struct {
	x     *policy.Index
	total bool
	succ  bool // succeeded() reads it: a reported success changes what it answers
}

// table is the set of indexes the ledger keeps, replaced whole by Install.
type table struct {
	byKey   map[string]*spec
	byIndex map[*policy.Index]*spec
	byType  map[string][]*spec
	history bool // a policy reads session.history: keep the sessions' actions
}

// store is one scope's series.
type store struct {
	mu     sync.Mutex
	series map[seriesKey]*series
	dead   bool // swept: look it up again
}

type seriesKey struct {
	sp    *spec
	group string
}

// agentScope is one agent's state: its own scope's series and, under the
// same lock, its sessions and its open facts.
type agentScope struct {
	store
	sessions map[string]*sessionScope
	facts    map[string]*fact
	order    []string // fact ids in the order they were added, for pruning
}

// sessionScope is one session of one agent.
type sessionScope struct {
	series  map[seriesKey]*series
	history []policy.HistoryEntry // only when a policy reads session.history
	ids     []string
	sizes   []int64
}

// fact is an allowed action whose outcome may still change what it counts.
type fact struct {
	time      int64
	session   string
	principal string
	scopes    policy.ScopeSet
	points    []pointRef
}

type pointRef struct {
	s     *series
	total bool
	abs   int64
}

const (
	factBytes    = 200 // a fact, its map entry and id, roughly
	historyBytes = 96  // a session history entry without its action
	scopeBytes   = 256 // an agent, a session or a principal, roughly
)

// New returns an empty ledger.
func New(opts Options) *Ledger {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	l := &Ledger{opts: opts}
	l.global.series = map[seriesKey]*series{}
	l.tab.Store(&table{byKey: map[string]*spec{}, byIndex: map[*policy.Index]*spec{}, byType: map[string][]*spec{}})
	return l
}

// Retention is the ledger's retention.
func (l *Ledger) Retention() time.Duration { return l.opts.Retention }

// Bytes is the ledger's estimate of the memory it keeps.
func (l *Ledger) Bytes() int64 { return l.bytes.Load() }

// Budget is the ledger's memory budget in bytes.
func (l *Ledger) Budget() int64 { return l.opts.Budget }

// OverBudget reports whether the ledger keeps more than its budget.
func (l *Ledger) OverBudget() bool { return l.bytes.Load() > l.opts.Budget }

// CheckRetention refuses a policy that reads a window longer than the
// retention: the ledger would have forgotten actions the window counts.
func (l *Ledger) CheckRetention(p *policy.Policy) error {
	return CheckRetention(p, l.opts.Retention)
}

// CheckRetention refuses a policy whose longest window exceeds retention.
func CheckRetention(p *policy.Policy, retention time.Duration) error {
	if retention <= 0 {
		retention = DefaultRetention
	}
	if w := p.Reads().MaxWindow; w > retention {
		return fmt.Errorf("policy %s reads a window of %s, longer than the retention of %s (limits.retention): the limit would not hold", p.Name(), w, retention)
	}
	return nil
}

// Covers reports whether the ledger already keeps everything p reads: its
// indexes and, if p reads session.history, the sessions' actions. When it
// does not, installing p leaves that state empty, and the caller must fold
// the log into a new ledger instead (what the gateway does on activation).
func (l *Ledger) Covers(p *policy.Policy) bool {
	t := l.tab.Load()
	reads := p.Reads()
	if reads.History && !t.history {
		return false
	}
	for _, x := range reads.Indexes {
		if _, ok := t.byKey[x.Key()]; !ok {
			return false
		}
	}
	for _, x := range reads.Succeeded {
		if !t.byKey[x.Key()].succ {
			return false // the facts that would mark successes were not all kept
		}
	}
	return true
}

// Install makes the ledger keep the indexes p reads (those it already keeps
// stay), and the sessions' actions if p reads session.history. It returns
// the indexes that are new. What is new starts empty: install into a ledger
// that Covers p, or into a new one before folding the log into it.
func (l *Ledger) Install(p *policy.Policy) []*policy.Index {
	old := l.tab.Load()
	reads := p.Reads()
	nt := &table{byKey: map[string]*spec{}, byIndex: map[*policy.Index]*spec{}, byType: map[string][]*spec{}, history: old.history || reads.History}
	for k, sp := range old.byKey {
		nt.byKey[k] = sp
		nt.byType[sp.x.Type] = append(nt.byType[sp.x.Type], sp)
	}
	for x, sp := range old.byIndex {
		nt.byIndex[x] = sp
	}
	var added []*policy.Index
	for _, x := range reads.Indexes {
		k := x.Key()
		sp, ok := nt.byKey[k]
		if !ok {
			sp = &spec{x: x, total: x.Field != ""}
			nt.byKey[k] = sp
			nt.byType[x.Type] = append(nt.byType[x.Type], sp)
			added = append(added, x)
		}
		nt.byIndex[x] = sp
	}
	for _, x := range reads.Succeeded {
		nt.byKey[x.Key()].succ = true
	}
	l.tab.Store(nt)
	return added
}

// writes returns the scopes a decision of actionType adds points to.
func (t *table) writes(actionType string) policy.ScopeSet {
	var s policy.ScopeSet
	for _, sp := range t.byType[actionType] {
		s = s.With(sp.x.Scope)
	}
	if t.history {
		s = s.With(policy.ScopeSession)
	}
	return s
}

// Txn is one decision's (or outcome's) hold on the scopes it reads and
// writes: decisions that share a scope are atomic with respect to each
// other; decisions that share none do not wait on each other. It is the
// policy.State of the decision.
type Txn struct {
	l         *Ledger
	tab       *table
	agent     policy.Agent
	session   string
	as        *agentScope
	principal *store // nil unless locked
	global    bool
}

// Begin locks what a decision of actionType by agent in session reads
// (reads, from policy.ReadsFor) and writes. Unlock releases it.
func (l *Ledger) Begin(agent policy.Agent, session, actionType string, reads policy.ScopeSet) *Txn {
	tab := l.tab.Load()
	return l.begin(tab, agent, session, reads|tab.writes(actionType))
}

func (l *Ledger) begin(tab *table, agent policy.Agent, session string, scopes policy.ScopeSet) *Txn {
	tx := &Txn{l: l, tab: tab, agent: agent, session: session}
	// Lock order: global, principal, agent.
	if scopes.Has(policy.ScopeGlobal) {
		l.global.mu.Lock()
		tx.global = true
	}
	if scopes.Has(policy.ScopePrincipal) {
		tx.principal = l.lockPrincipal(agent.PrincipalID())
	}
	tx.as = l.lockAgent(agent.ID)
	return tx
}

func (l *Ledger) lockAgent(id string) *agentScope {
	return lockIn(&l.agents, id, &l.bytes, func() *agentScope {
		return &agentScope{store: store{series: map[seriesKey]*series{}}, sessions: map[string]*sessionScope{}, facts: map[string]*fact{}}
	})
}

func (l *Ledger) lockPrincipal(id string) *store {
	return lockIn(&l.principals, id, &l.bytes, func() *store { return &store{series: map[seriesKey]*series{}} })
}

// scoped is a scope's state kept in a sync.Map by key.
type scoped interface{ base() *store }

func (s *store) base() *store { return s }

// lockIn returns the state of key in m, made by mk if there is none, with
// its lock held. The lookup takes no lock shared by every scope: decisions
// that share no scope never wait on each other. A state that Sweep dropped
// while it was being looked up is dead, and looked up again.
func lockIn[T scoped](m *sync.Map, key string, bytes *atomic.Int64, mk func() T) T {
	for {
		v, ok := m.Load(key)
		if !ok {
			if v, ok = m.LoadOrStore(strings.Clone(key), mk()); !ok { // a copy: see sessionScope
				bytes.Add(scopeBytes)
			}
		}
		t := v.(T)
		s := t.base()
		s.mu.Lock()
		if !s.dead {
			return t
		}
		s.mu.Unlock()
	}
}

// Unlock releases the scopes, in the reverse order.
func (tx *Txn) Unlock() {
	tx.as.mu.Unlock()
	if tx.principal != nil {
		tx.principal.mu.Unlock()
	}
	if tx.global {
		tx.l.global.mu.Unlock()
	}
}

// seriesOf returns the series map of a scope the txn holds, nil if it does
// not hold it.
func (tx *Txn) seriesOf(sc policy.Scope, create bool) map[seriesKey]*series {
	switch sc {
	case policy.ScopeSession:
		ss := tx.sessionScope(create)
		if ss == nil {
			return nil
		}
		if ss.series == nil && create {
			ss.series = map[seriesKey]*series{}
		}
		return ss.series
	case policy.ScopeAgent:
		return tx.as.series
	case policy.ScopePrincipal:
		if tx.principal == nil {
			return nil
		}
		return tx.principal.series
	case policy.ScopeGlobal:
		if !tx.global {
			return nil
		}
		return tx.l.global.series
	}
	return nil
}

func (tx *Txn) sessionScope(create bool) *sessionScope {
	ss, ok := tx.as.sessions[tx.session]
	if !ok && create {
		ss = &sessionScope{}
		// A copy: a decoded string shares the memory of the whole request
		// body (or log entry) it came from, which the ledger must not keep.
		tx.as.sessions[strings.Clone(tx.session)] = ss
		tx.l.bytes.Add(scopeBytes)
	}
	return ss
}

// Aggregate answers a helper call from the indexes (policy.State). A query
// for a scope the txn does not hold, or an index the ledger does not keep,
// is an error: the rule fails closed.
func (tx *Txn) Aggregate(q *policy.Query) (policy.Aggregate, error) {
	sp, ok := tx.tab.byIndex[q.Index]
	if !ok {
		if sp, ok = tx.tab.byKey[q.Index.Key()]; !ok {
			return policy.Aggregate{}, fmt.Errorf("%s: %w", q.Index, policy.ErrNoIndex)
		}
	}
	if q.Index.Scope != policy.ScopeSession && q.Index.Scope != policy.ScopeAgent && tx.seriesOf(q.Index.Scope, false) == nil {
		return policy.Aggregate{}, fmt.Errorf("%s: the scope is not held", q.Index)
	}
	group, ok := policy.GroupKey(q.Values)
	if !ok {
		return policy.Aggregate{}, nil // a list, a map or null never matches
	}
	s := tx.seriesOf(q.Index.Scope, false)[seriesKey{sp, group}]
	if s == nil {
		return policy.Aggregate{}, nil
	}
	if q.Want == policy.QuerySucceeded {
		// succeeded() looks back as far as the ledger keeps: the retention.
		w := *q
		w.Window = tx.l.opts.Retention
		return s.aggregate(&w)
	}
	return s.aggregate(q)
}

// History is the session's earlier actions, for a policy that reads
// session.history (nil otherwise); valid until Unlock.
func (tx *Txn) History() []policy.HistoryEntry {
	if !tx.tab.history {
		return nil
	}
	ss := tx.sessionScope(false)
	if ss == nil {
		return nil
	}
	return ss.history[:len(ss.history):len(ss.history)]
}

// Scopes is the set of scopes a decision of actionType holds (Begin): those
// it reads (reads, from policy.ReadsFor) and those it writes. Replicas take
// the same scopes' locks across processes before they decide.
func (l *Ledger) Scopes(actionType string, reads policy.ScopeSet) policy.ScopeSet {
	return reads | l.tab.Load().writes(actionType)
}
