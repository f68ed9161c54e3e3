package gateway_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// nopRecorder acknowledges every entry without keeping it.
type nopRecorder struct{ n int64 }

func (r *nopRecorder) Append(context.Context, *audit.Entry) (audit.Receipt, error) {
	r.n++
	return audit.Receipt{Index: r.n - 1}, nil
}

// BenchmarkDecideSteadyState is one agent's decision once its history is
// full and steady: one decision a minute with a retention of 1,000 minutes,
// so each decision drops the oldest of ~1,000 entries (what a gateway that
// has run longer than its retention does on every decision).
func BenchmarkDecideSteadyState(b *testing.B) {
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: &nopRecorder{}, Now: c.now, Retention: 1000 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	act, err := policy.NewAction(map[string]any{"type": "report", "n": 1.0})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	submit := func() {
		c.advance(time.Minute)
		if _, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: act}, false); err != nil {
			b.Fatal(err)
		}
	}
	for range 1100 {
		submit()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		submit()
	}
}

// BenchmarkRetained reports the memory the gateway keeps per decision
// within the retention window (its record, the history entry, the
// decision): allowed decide-only transfers from 1,000 agents, short
// instruction and reasoning, heap measured after a GC.
func BenchmarkRetained(b *testing.B) {
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	act, err := policy.NewAction(map[string]any{"type": "transfer", "amount": 500.0, "to": "acct-1"})
	if err != nil {
		b.Fatal(err)
	}
	agents := make([]policy.Agent, 1000)
	for i := range agents {
		agents[i] = policy.Agent{ID: fmt.Sprintf("agent-%d", i), Roles: []string{"payments"}}
	}
	const n = 100_000
	for b.Loop() {
		gw, err := gateway.New(gateway.Config{Policy: p, Log: &nopRecorder{}, Now: c.now})
		if err != nil {
			b.Fatal(err)
		}
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range n {
			req := &gateway.Request{Agent: agents[i%len(agents)], Action: act, Instruction: "Pay invoice 1234", Reasoning: "It is due today."}
			if _, err := gw.Submit(context.Background(), req, false); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/n, "retained-B/decision")
		runtime.KeepAlive(gw)
	}
}

// BenchmarkRetainedPayments reports the memory kept per retained decision
// under the payments policy (examples/payments: its payee limit is
// global.total over 24 hours), for actions of several sizes: allowed
// transfers of $100 from 100 agents to 100 payees, one a second (all
// within the retention), with a memo of 0, 1 KiB or 16 KiB. outcome=none:
// decide-only and never reported (the ledger keeps each allowed action's
// fact until the retention ends); outcome=ok: executed, with an ok outcome
// (the fact goes). Each sub-benchmark makes 20,000 decisions in a new
// gateway or ledger and measures the heap after a GC:
//
//   - kept=gateway: gateway.Submit over a log that can be read back (but
//     keeps nothing itself); the heap is everything the gateway keeps
//     (ledger, requests, caches), not the log's.
//   - kept=ledger: the same decisions folded into a ledger.Ledger alone,
//     as the gateway does (Begin, Evaluate with the Txn as State, Decided,
//     Unlock; Outcome): its real heap, and its own estimate
//     (Ledger.Bytes, ledger-est-B/decision).
//
// The difference between the two is what the gateway keeps of each request
// for GET /v1/requests/{id}: where its entries are once it is final, its
// whole record while it is not (decide-only and never reported).
//
//	go test -run '^$' -bench RetainedPayments -benchtime 1x -count 6 ./internal/gateway
func BenchmarkRetainedPayments(b *testing.B) {
	srcs, err := policy.ReadSources(os.DirFS(filepath.Join("..", "..", "examples", "payments")))
	if err != nil {
		b.Fatal(err)
	}
	p, err := policy.FromSources(srcs, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, kept := range []string{"gateway", "ledger"} {
		for _, memo := range []int{0, 1 << 10, 16 << 10} {
			for _, outcome := range []bool{false, true} {
				name := fmt.Sprintf("kept=%s/memo=%d/outcome=none", kept, memo)
				if outcome {
					name = fmt.Sprintf("kept=%s/memo=%d/outcome=ok", kept, memo)
				}
				b.Run(name, func(b *testing.B) {
					for b.Loop() {
						retainPayments(b, p, kept == "ledger", memo, outcome)
					}
				})
			}
		}
	}
}

func retainPayments(b *testing.B, p *policy.Policy, ledgerOnly bool, memo int, outcome bool) {
	const n, agents, payees = 20_000, 100, 100
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	agentsOf := make([]policy.Agent, agents)
	for i := range agentsOf {
		agentsOf[i] = policy.Agent{ID: fmt.Sprintf("agent-%03d", i), Roles: []string{"payments"}}
	}
	pad := strings.Repeat("m", memo)
	// Each decision gets an action of its own, decoded from its own body, as
	// a request's is.
	newAction := func(i int) policy.Action {
		body := fmt.Sprintf(`{"type": "transfer", "amount": 100, "to": "acct-%03d"}`, i%payees)
		if memo > 0 {
			body = fmt.Sprintf(`{"type": "transfer", "amount": 100, "to": "acct-%03d", "memo": "%08d%s"}`, i%payees, i, pad[8:])
		}
		v, err := strictjson.Decode([]byte(body), strictjson.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		a, err := policy.NewAction(v)
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	ctx := context.Background()
	var m0, m1 runtime.MemStats
	if ledgerOnly {
		l := ledger.New(ledger.Options{})
		l.Install(p)
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range n {
			act, agent := newAction(i), agentsOf[i%agents]
			id := fmt.Sprintf("r%026d", i)
			reads, _ := p.ReadsFor(act.Type)
			tx := l.Begin(agent, "s", act.Type, reads)
			d := p.Evaluate(&policy.Request{Action: act, Agent: agent, Session: policy.Session{ID: "s", History: tx.History()}, Now: c.now(), State: tx})
			if d.Decision != policy.Allow {
				b.Fatalf("decision %d: %s %v %v", i, d.Decision, d.Rules, d.Errors)
			}
			tx.Decided(id, &act, ledger.Decision(d.Decision), d.Reason, c.now(), outcome)
			tx.Unlock()
			if outcome {
				l.Outcome(agent.ID, id, ledger.OK, ledger.ConsequenceOf(ledger.OK, false, false))
			}
			c.advance(time.Second)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(l.Bytes())/n, "ledger-est-B/decision")
		runtime.KeepAlive(l)
	} else {
		ok := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
			return gateway.Outcome{Status: gateway.StatusOK}
		})
		// A log that can be read back, as the audit log can: the gateway
		// keeps of a final request only where it is (readableNop keeps
		// nothing itself, so the heap is the gateway's own).
		gw, err := gateway.New(gateway.Config{Policy: p, Log: &readableNop{}, Now: c.now, Executors: map[string]gateway.Executor{"transfer": ok}})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range n {
			req := &gateway.Request{Agent: agentsOf[i%agents], Session: "s", Action: newAction(i), Instruction: "Pay invoice 1234", Reasoning: "It is due today."}
			res, err := gw.Submit(ctx, req, outcome)
			if err != nil {
				b.Fatal(err)
			}
			if res.Decision.Decision != policy.Allow || outcome && (res.Outcome == nil || res.Outcome.Status != gateway.StatusOK) {
				b.Fatalf("decision %d: %s %v %v", i, res.Decision.Decision, res.Decision.Rules, res.Outcome)
			}
			c.advance(time.Second)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(gw)
	}
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/n, "retained-B/decision")
}
