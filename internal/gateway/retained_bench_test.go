package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

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
