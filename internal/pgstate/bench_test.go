package pgstate

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/pgtest"
	"github.com/rulelock/rulelock/policy"
)

// benchPolicy: transfers under a payee cap over all agents (every decision
// holds the global lock), payments under a cap per agent (decisions of two
// agents share no lock).
const benchPolicy = `policy "b" {
  default: deny
}
rule "AllowTransfers" {
  precondition: action.type == "transfer" || action.type == "pay"
  condition: action.amount > 0
  allow
}
rule "PayeeCap" {
  precondition: action.type == "transfer"
  condition: global.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 1000000000
  deny: "payee cap, all agents"
}
rule "AgentCap" {
  precondition: action.type == "pay"
  condition: agent.total("pay", "amount", {"to": action.to}, duration("24h")) + action.amount <= 1000000000
  deny: "payee cap, per agent"
}
`

// BenchmarkDecisions: decide-only decisions spread round-robin over 1 or 3
// replicas on one PostgreSQL, by 64 concurrent callers, each as its own
// agent: "global" decisions all hold the global lock (the payee cap over all
// agents), "agent" decisions hold only their agent's. replicas=0 is the
// baseline: one gateway alone on the PostgreSQL log (no Replicas).
//
//	go test -run '^$' -bench Decisions -benchtime 2000x -count 3 ./internal/pgstate
func BenchmarkDecisions(b *testing.B) {
	pg := pgtest.New(b)
	for _, scope := range []struct{ name, typ string }{{"global", "transfer"}, {"agent", "pay"}} {
		for _, n := range []int{0, 1, 3} {
			b.Run(fmt.Sprintf("scope=%s/replicas=%d", scope.name, n), func(b *testing.B) {
				c := newClusterOn(b, pg, benchPolicy, max(n, 1))
				if n == 0 {
					// The baseline: one gateway alone on the PostgreSQL log,
					// no shared locks, no catch-up.
					alone, err := gateway.New(gateway.Config{Policy: c.pol, Log: c.reps[0].st.log})
					if err != nil {
						b.Fatal(err)
					}
					c.reps[0] = &replica{gw: alone}
					n = 1
				}
				ctx := context.Background()
				var next, callers atomic.Int64
				act := action(b, fmt.Sprintf(`{"type": %q, "amount": 1, "to": "acct-1"}`, scope.typ))
				b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0))) // 64 callers
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					agent := policy.Agent{ID: fmt.Sprintf("agent-%d", callers.Add(1))}
					for pb.Next() {
						r := c.reps[int(next.Add(1))%n]
						res, err := r.gw.Submit(ctx, &gateway.Request{Agent: agent, Session: "s", Action: act}, false)
						if err != nil || res.Decision.Decision != policy.Allow {
							b.Errorf("decision: %+v, %v", res, err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			})
		}
	}
}
