package gateway_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
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
