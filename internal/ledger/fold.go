package ledger

import (
	"strings"
	"sync"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// Decided folds one decision into the scopes the txn holds: an allowed
// action adds a point to every index of its type, in the scope of each;
// with a policy that reads session.history, every decision joins the
// session's history. A denial for the memory budget is not remembered
// (it would grow what it guards against). t is the decision's time, and
// what is older than t - retention leaves the series written.
//
// The ledger keeps what an outcome of the action may still change (a fact)
// only where it can change something a rule reads: when executes is set
// (the gateway executes it, and an execution it sees fail releases the
// limit), for an index succeeded() reads, or for session.history. The fold
// of the log passes executes always: it cannot tell, and a fact kept for an
// action only its agent reports on changes nothing a rule reads.
func (tx *Txn) Decided(id string, act *policy.Action, d Decision, reason string, t time.Time, executes bool) {
	if d == Deny && Reason(reason) == OverBudget {
		return
	}
	l := tx.l
	now := t.UnixNano()
	cutoff := t.Add(-l.opts.Retention).UnixNano()
	tx.pruneFacts(cutoff)
	var f *fact
	if tx.tab.history {
		ss := tx.sessionScope(true)
		l.bytes.Add(-ss.pruneHistory(t.Add(-l.opts.Retention)))
		// A deep copy: the decoded action's strings share the memory of the
		// whole request body (instruction and reasoning included).
		ss.history = append(ss.history, policy.HistoryEntry{Action: cloneFields(act.Fields), Type: strings.Clone(act.Type), Decision: string(d), Time: t})
		ss.ids = append(ss.ids, strings.Clone(id))
		ss.sizes = append(ss.sizes, historyEntryBytes(act))
		l.bytes.Add(historyEntryBytes(act))
		if d.Allowed() {
			f = &fact{time: now, session: tx.session, principal: tx.agent.Principal}
		}
	}
	keep := f != nil || executes
	if d.Allowed() {
		var vbuf [4]any
		for _, sp := range tx.tab.byType[act.Type] {
			values := vbuf[:0]
			for _, k := range sp.x.Keys {
				values = append(values, act.Fields[k])
			}
			group, ok := policy.GroupKey(values)
			if !ok {
				continue // never matched by any call
			}
			m := tx.seriesOf(sp.x.Scope, true)
			if m == nil {
				panic("ledger: a decision writes a scope its txn does not hold")
			}
			key := seriesKey{sp, group}
			s := m[key]
			if s == nil {
				s = &series{}
				m[key] = s
				l.bytes.Add(seriesBytes + int64(len(group)))
			}
			l.bytes.Add(-int64(s.prune(cutoff, sp.total)) * s.pointBytes(sp.total))
			v, isNum := policy.Number(act.Fields[sp.x.Field])
			abs := s.appendPoint(now, v, isNum, sp.total)
			l.bytes.Add(s.pointBytes(sp.total))
			keep = keep || sp.succ
			if f == nil {
				f = &fact{time: now, session: tx.session, principal: tx.agent.Principal}
			}
			f.points = append(f.points, pointRef{s: s, total: sp.total, abs: abs})
			f.scopes = f.scopes.With(sp.x.Scope)
		}
	}
	if f != nil && keep {
		id = strings.Clone(id) // a copy: see sessionScope
		f.session = strings.Clone(f.session)
		tx.as.facts[id] = f
		tx.as.order = append(tx.as.order, id)
		l.bytes.Add(factBytes + int64(len(f.points))*24)
	}
}

// cloneFields deep-copies a decoded action (strictjson values).
func cloneFields(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[strings.Clone(k)] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case string:
		return strings.Clone(v)
	case map[string]any:
		return cloneFields(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = cloneValue(x)
		}
		return out
	}
	return v // numbers, booleans, null
}

func historyEntryBytes(act *policy.Action) int64 {
	// The decoded action is kept: roughly three times its canonical text.
	return historyBytes + 3*int64(len(act.JSON))
}

// pruneHistory drops the session history older than from and returns the
// bytes it frees.
func (ss *sessionScope) pruneHistory(from time.Time) int64 {
	n := 0
	freed := int64(0)
	for n < len(ss.history) && ss.history[n].Time.Before(from) {
		freed += ss.sizes[n]
		n++
	}
	if n == 0 {
		return 0
	}
	clear(ss.history[:n])
	clear(ss.ids[:n])
	ss.history, ss.ids, ss.sizes = ss.history[n:], ss.ids[n:], ss.sizes[n:]
	return freed
}

// pruneFacts forgets the facts older than cutoff: no outcome can change
// what they count any more (their points left the windows).
func (tx *Txn) pruneFacts(cutoff int64) {
	as := tx.as
	n := 0
	for n < len(as.order) {
		f, ok := as.facts[as.order[n]]
		if ok && f.time >= cutoff {
			break
		}
		if ok {
			delete(as.facts, as.order[n])
			tx.l.bytes.Add(-factBytes - int64(len(f.points))*24)
		}
		n++
	}
	if n > 0 {
		clear(as.order[:n])
		as.order = as.order[n:]
	}
}

// Outcome folds the outcome of request id of agent: what the action counts
// from now on (Consequence), and in the session history its outcome.
func (l *Ledger) Outcome(agentID, id string, status Status, c Consequence) {
	as := l.lockAgent(agentID)
	f := as.facts[id]
	as.mu.Unlock()
	if f == nil {
		return // not allowed, not indexed, or gone with the retention window
	}
	tx := l.begin(l.tab.Load(), policy.Agent{ID: agentID, Principal: f.principal}, f.session, f.scopes)
	defer tx.Unlock()
	if tx.as.facts[id] != f {
		return
	}
	delete(tx.as.facts, id)
	l.bytes.Add(-factBytes - int64(len(f.points))*24)
	for _, p := range f.points {
		if !c.Counts {
			p.s.release(p.abs, p.total)
		}
		if c.Succeeded {
			p.s.setSucceeded(p.abs)
		}
	}
	if ss := tx.sessionScope(false); ss != nil {
		for i := len(ss.ids) - 1; i >= 0; i-- {
			if ss.ids[i] == id {
				ss.history[i].Outcome = historyOutcome(status, c)
				break
			}
		}
	}
}

// historyOutcome is an outcome in session.history's vocabulary.
func historyOutcome(status Status, c Consequence) string {
	switch {
	case c.Succeeded:
		return "success"
	case status == Unknown:
		return "unknown"
	}
	return "failure"
}

// Sweep drops what left the retention window as of now everywhere, also in
// scopes no decision has written since (a payee paid once): series with no
// point left, sessions and agents with nothing left.
func (l *Ledger) Sweep(now time.Time) {
	cutoff := now.Add(-l.opts.Retention)
	l.global.mu.Lock()
	l.sweepSeries(l.global.series, cutoff.UnixNano())
	l.global.mu.Unlock()
	l.principals.Range(func(k, v any) bool {
		st := v.(*store)
		st.mu.Lock()
		l.sweepSeries(st.series, cutoff.UnixNano())
		l.dropIfEmpty(&l.principals, k, v, st, len(st.series) == 0)
		return true
	})
	l.agents.Range(func(k, v any) bool {
		as := v.(*agentScope)
		as.mu.Lock()
		tx := &Txn{l: l, as: as}
		tx.pruneFacts(cutoff.UnixNano())
		l.sweepSeries(as.series, cutoff.UnixNano())
		for sid, ss := range as.sessions {
			l.bytes.Add(-ss.pruneHistory(cutoff))
			l.sweepSeries(ss.series, cutoff.UnixNano())
			if len(ss.series) == 0 && len(ss.history) == 0 {
				delete(as.sessions, sid)
				l.bytes.Add(-scopeBytes)
			}
		}
		l.dropIfEmpty(&l.agents, k, v, &as.store, len(as.series) == 0 && len(as.sessions) == 0 && len(as.facts) == 0)
		return true
	})
}

// dropIfEmpty marks the state v of key (st, locked on entry) dead and
// removes it from m when it holds nothing, then unlocks it.
func (l *Ledger) dropIfEmpty(m *sync.Map, key, v any, st *store, empty bool) {
	st.dead = empty
	st.mu.Unlock()
	if empty && m.CompareAndDelete(key, v) {
		l.bytes.Add(-scopeBytes)
	}
}

func (l *Ledger) sweepSeries(m map[seriesKey]*series, cutoff int64) {
	for k, s := range m {
		l.bytes.Add(-int64(s.prune(cutoff, k.sp.total)) * s.pointBytes(k.sp.total))
		if len(s.times) == 0 {
			delete(m, k)
			l.bytes.Add(-seriesBytes - int64(len(k.group)))
		}
	}
}
