package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// readableNop acknowledges every entry and keeps none, but says it can read
// the log back, as the audit log can: the gateway then keeps of a final
// request only where it is. It measures the gateway's own memory, without
// the log's; nothing reads back from it.
type readableNop struct{ nopRecorder }

func (r *readableNop) Size() int64 { return r.n }

func (r *readableNop) ReadEntries(lo, hi int64) ([][]byte, error) {
	return nil, errors.New("readableNop keeps nothing")
}

func (r *readableNop) Blob(audit.Digest) ([]byte, error) { return nil, errors.New("no blobs") }

// BenchmarkRetainedPayments reports the heap the gateway keeps per decision
// within the retention window under the payments policy (its per-payee
// limit over all agents), for 100,000 executed transfers from 1,000 agents
// to 5,000 payees, with a short memo and with a 4 KiB one: what is kept
// does not depend on the action's size.
func BenchmarkRetainedPayments(b *testing.B) {
	src, err := os.ReadFile("../../examples/payments/payments.rules")
	if err != nil {
		b.Fatal(err)
	}
	p, err := policy.FromSources([]policy.Source{{Name: "payments.rules", Data: src}}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ok := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
		return gateway.Outcome{Status: gateway.StatusOK}
	})
	for _, memo := range []int{8, 4096} {
		b.Run(fmt.Sprintf("memo=%d", memo), func(b *testing.B) {
			const n = 100_000
			acts := make([]policy.Action, 5000)
			for i := range acts {
				acts[i] = action(b, fmt.Sprintf(`{"type": "transfer", "amount": 5, "to": "acct-%d", "memo": %q}`, i, strings.Repeat("m", memo)))
			}
			agents := make([]policy.Agent, 1000)
			for i := range agents {
				agents[i] = policy.Agent{ID: fmt.Sprintf("agent-%d", i), Roles: []string{"payments"}}
			}
			c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
			for b.Loop() {
				gw, err := gateway.New(gateway.Config{Policy: p, Log: &readableNop{}, Now: c.now,
					Executors: map[string]gateway.Executor{"transfer": ok}})
				if err != nil {
					b.Fatal(err)
				}
				var m0, m1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m0)
				for i := range n {
					req := &gateway.Request{Agent: agents[i%len(agents)], Action: acts[i%len(acts)], Instruction: "Pay invoice 1234", Reasoning: "It is due today."}
					if res, err := gw.Submit(context.Background(), req, true); err != nil || res.Decision.Decision != policy.Allow {
						b.Fatalf("%+v %v", res, err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/n, "retained-B/decision")
				b.ReportMetric(float64(gw.Ledger().Bytes)/n, "ledger-est-B/decision")
				runtime.KeepAlive(gw)
			}
		})
	}
}

// BenchmarkScopes decides in parallel (GOMAXPROCS goroutines, each its own
// agent) under a limit over the agent's own actions and under the same limit
// over all agents: decisions that share no scope take no common lock, those
// that share the global scope are made one at a time.
func BenchmarkScopes(b *testing.B) {
	for _, scope := range []string{"agent", "global"} {
		b.Run("scope="+scope, func(b *testing.B) {
			src := fmt.Sprintf(`policy "s" {
  default: allow
}
rule "Cap" {
  precondition: action.type == "transfer"
  condition: %s.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 1e12
  deny: "cap"
}
`, scope)
			p, err := policy.FromSources([]policy.Source{{Name: "s.rules", Data: []byte(src)}}, policy.Options{})
			if err != nil {
				b.Fatal(err)
			}
			gw, err := gateway.New(gateway.Config{Policy: p, Log: &readableNop{}})
			if err != nil {
				b.Fatal(err)
			}
			act := action(b, `{"type": "transfer", "amount": 5, "to": "acct-1"}`)
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				agent := policy.Agent{ID: fmt.Sprint("agent-", next.Add(1))}
				for pb.Next() {
					if _, err := gw.Submit(context.Background(), &gateway.Request{Agent: agent, Action: act}, false); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
