package ledger_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

const propPolicy = `policy "p" {
  default: allow
}
rule "S" {
  precondition: action.type == "pay"
  condition: session.total("pay", "amount", {"to": action.to}, duration("1h")) + action.amount <= 100
  deny: "session"
}
rule "A" {
  precondition: action.type == "pay"
  condition: agent.count("pay", {"to": action.to}, duration("30m")) < 5
  deny: "agent"
}
rule "P" {
  precondition: action.type == "pay"
  condition: principal.total("pay", "amount", {}, duration("2h")) < 1000
  deny: "principal"
}
rule "G" {
  precondition: action.type == "pay"
  condition: global.succeeded("check", {"who": action.to}) || action.amount < 7
  deny: "global"
}
`

// naive is the model the ledger must agree with: every decision in a
// list, every query a scan (policy.HistoryState) over the scope's part.
type naive struct {
	entries   []naiveEntry
	retention time.Duration
}

type naiveEntry struct {
	id                          string
	agent, principal, sess      string
	h                           policy.HistoryEntry
	counts, succeeded, executes bool
}

func (n *naive) state(agent policy.Agent, session string) policy.State {
	return policy.StateFunc(func(q *policy.Query) (policy.Aggregate, error) {
		var list policy.HistoryState
		for _, e := range n.entries {
			if !e.h.Time.After(q.Now.Add(-n.retention)) {
				continue // what the ledger forgets
			}
			in := false
			switch q.Index.Scope {
			case policy.ScopeSession:
				in = e.agent == agent.ID && e.sess == session
			case policy.ScopeAgent:
				in = e.agent == agent.ID
			case policy.ScopePrincipal:
				in = e.principal == agent.PrincipalID()
			case policy.ScopeGlobal:
				in = true
			}
			if !in {
				continue
			}
			h := e.h
			switch {
			case !e.counts:
				h.Outcome = "failure"
			case e.succeeded:
				h.Outcome = "success"
			default:
				h.Outcome = ""
			}
			list = append(list, h)
		}
		return list.Aggregate(q)
	})
}

// TestLedgerAgreesWithScan: over random sequences of decisions (several
// agents, principals and sessions), outcomes of every kind, time passing
// beyond the retention and sweeps, every helper the policy calls gets from
// the ledger's indexes what a scan of the decisions gets, and so every
// decision is the same. 10,000 sequences.
func TestLedgerAgreesWithScan(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(propPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := 10000
	if testing.Short() {
		cases = 1000
	}
	for c := range cases {
		if err := propCase(p, uint64(c)); err != nil {
			t.Fatalf("case %d: %v", c, err)
		}
	}
}

func propCase(p *policy.Policy, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 7))
	retention := 3 * time.Hour
	l := ledger.New(ledger.Options{Retention: retention})
	l.Install(p)
	m := &naive{retention: retention}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	agents := []policy.Agent{{ID: "a1", Principal: "team"}, {ID: "a2", Principal: "team"}, {ID: "a3"}}
	var open []int
	steps := 5 + r.IntN(40)
	for i := range steps {
		now = now.Add(time.Duration(r.IntN(40)) * time.Minute)
		switch k := r.IntN(10); {
		case k < 6: // a decision
			ag := agents[r.IntN(len(agents))]
			sess := fmt.Sprint("s", r.IntN(2))
			typ := "pay"
			// Whole amounts, cents, and now and then one with more places
			// than a total sums as decimals (a third).
			amount := []float64{float64(r.IntN(60)), float64(r.IntN(6000)) / 100, float64(r.IntN(60)) / 3}[r.IntN(3)]
			if r.IntN(8) != 0 && amount != math.Round(amount*100)/100 {
				amount = math.Round(amount)
			}
			fields := map[string]any{"type": typ, "to": fmt.Sprint("p", r.IntN(3)), "amount": amount}
			if r.IntN(4) == 0 {
				typ = "check"
				fields = map[string]any{"type": typ, "who": fmt.Sprint("p", r.IntN(3))}
			}
			act, err := policy.NewAction(fields)
			if err != nil {
				return err
			}
			reads, _ := p.ReadsFor(typ)
			tx := l.Begin(ag, sess, typ, reads)
			// Every index's aggregate, to the last bit: totals are exact
			// decimal sums in both.
			for _, x := range p.Reads().Indexes {
				if !reads.Has(x.Scope) && x.Scope != policy.ScopeSession && x.Scope != policy.ScopeAgent {
					continue
				}
				var values []any
				for _, k := range x.Keys {
					values = append(values, fields[k])
				}
				want := policy.QueryCount
				if x.Field != "" {
					want = policy.QueryTotal
				}
				q := &policy.Query{Index: x, Values: values, Window: time.Hour, Now: now, Want: want}
				got, err1 := tx.Aggregate(q)
				exp, err2 := m.state(ag, sess).Aggregate(q)
				if (err1 == nil) != (err2 == nil) || got.Count != exp.Count || got.Total != exp.Total {
					tx.Unlock()
					return fmt.Errorf("step %d: %s: ledger %+v %v, scan %+v %v", i, x, got, err1, exp, err2)
				}
			}
			got := p.Evaluate(&policy.Request{Action: act, Agent: ag, Session: policy.Session{ID: sess}, Now: now, State: tx})
			want := p.Evaluate(&policy.Request{Action: act, Agent: ag, Session: policy.Session{ID: sess}, Now: now, State: m.state(ag, sess)})
			if got.Decision != want.Decision || fmt.Sprint(got.Rules) != fmt.Sprint(want.Rules) {
				tx.Unlock()
				return fmt.Errorf("step %d: ledger %s %v, scan %s %v", i, got.Decision, got.Rules, want.Decision, want.Rules)
			}
			d := ledger.Decision(got.Decision)
			if r.IntN(5) == 0 {
				d = ledger.Approved
			}
			id := fmt.Sprint("r", i)
			executes := r.IntN(2) == 0 // else only its agent reports on it
			tx.Decided(id, &act, d, "", now, executes)
			tx.Unlock()
			m.entries = append(m.entries, naiveEntry{id: id, agent: ag.ID, principal: ag.PrincipalID(), sess: sess, counts: true, executes: executes,
				h: policy.HistoryEntry{Action: act.Fields, Type: typ, Decision: string(d), Time: now}})
			if d.Allowed() {
				open = append(open, len(m.entries)-1)
			}
		case k < 9 && len(open) > 0: // an outcome
			j := r.IntN(len(open))
			e := &m.entries[open[j]]
			open = append(open[:j], open[j+1:]...)
			st := []ledger.Status{ledger.OK, ledger.Error, ledger.Unknown}[r.IntN(3)]
			c := ledger.ConsequenceOf(st, !e.executes || r.IntN(2) == 0, r.IntN(4) == 0)
			l.Outcome(e.agent, e.id, st, c)
			e.counts, e.succeeded = c.Counts, c.Succeeded
		default:
			l.Sweep(now)
		}
	}
	return nil
}

// TestScopesLock: a decision holds the scopes it reads and writes; another
// agent's decision that shares none of them proceeds while it is held, and
// one that shares a scope (the principal, or global) gets it only once it
// is released.
func TestScopesLock(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(propPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := ledger.New(ledger.Options{})
	l.Install(p)
	a1 := policy.Agent{ID: "a1", Principal: "team"}
	agentOnly := policy.ScopeSet(0).With(policy.ScopeAgent)
	principal := agentOnly.With(policy.ScopePrincipal)
	global := agentOnly.With(policy.ScopeGlobal)
	// "check" actions are written to no index of another scope than global.
	for _, tt := range []struct {
		name     string
		held     policy.ScopeSet
		other    policy.Agent
		reads    policy.ScopeSet
		waits    bool
		heldType string
	}{
		{"another agent, own scope", agentOnly, policy.Agent{ID: "a3"}, agentOnly, false, "report"},
		{"another principal", principal, policy.Agent{ID: "a3"}, principal, false, "report"},
		{"same principal", principal, policy.Agent{ID: "a2", Principal: "team"}, principal, true, "report"},
		{"global", global, policy.Agent{ID: "a3"}, global, true, "report"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tx := l.Begin(a1, "s", tt.heldType, tt.held)
			var released atomic.Bool
			done := make(chan bool)
			go func() {
				tx2 := l.Begin(tt.other, "s", "report", tt.reads)
				done <- released.Load()
				tx2.Unlock()
			}()
			if !tt.waits {
				if after := <-done; after {
					t.Fatal("impossible: released before")
				}
				released.Store(true)
				tx.Unlock()
				return
			}
			released.Store(true)
			tx.Unlock()
			if after := <-done; !after {
				t.Error("the other decision got a shared scope while it was held")
			}
		})
	}
}
