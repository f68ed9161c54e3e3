package pgstate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/pgtest"
	"github.com/rulelock/rulelock/policy"
)

// freezePolicy: pings read and count nothing (their decisions share only
// the freeze's lock across replicas); transfers are capped per agent.
const freezePolicy = `policy "f" {
  default: deny
}
rule "AllowPings" {
  precondition: action.type == "ping"
  allow
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: agent.total("transfer", "amount", {}, duration("24h")) + action.amount <= 1000000
  allow
}
`

// TestFreezeUnderTrafficOnReplicas: while two replicas decide without a
// pause (pings, which share only the freeze's lock, and transfers, which
// also lock their agent), a third records a freeze. The freeze is not
// starved by the decisions holding its lock shared, and in the log no
// decision after the freeze entry is an allow: each replica folds the
// freeze before its next decision. After the unfreeze (two votes on two
// replicas) every replica allows again.
func TestFreezeUnderTrafficOnReplicas(t *testing.T) {
	for trial := range 5 {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			c := newClusterOn(t, pgtest.New(t), freezePolicy, 3)
			ctx := context.Background()
			var stop atomic.Bool
			var wg sync.WaitGroup
			var decided, tried atomic.Int64
			for w := range 8 {
				r := c.reps[w%2]
				wg.Go(func() {
					for i := 0; !stop.Load(); i++ {
						js := `{"type": "ping"}`
						if i%2 == 1 {
							js = `{"type": "transfer", "amount": 1}`
						}
						_, err := r.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: fmt.Sprintf("agent-%d", w)}, Session: "s",
							Action: action(t, js)}, false)
						tried.Add(1)
						if err == nil {
							decided.Add(1)
						}
					}
				})
			}
			for decided.Load() < 50 {
				time.Sleep(5 * time.Millisecond)
			}
			id := freeze.NewID()
			signed, err := freeze.Sign(freeze.Statement{ID: id, Time: time.Now().UTC().Truncate(time.Second), Reason: "stop"}, c.signers["alice"])
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := c.reps[2].gw.Freeze(ctx, "alice", signed); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("freeze: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the freeze never got its lock: starved by the decisions holding it shared")
			}
			before, after := decided.Load(), tried.Load()
			for tried.Load() < after+40 { // attempts after the freeze: refused
				time.Sleep(5 * time.Millisecond)
			}
			stop.Store(true)
			wg.Wait()

			lift := func(who string, r *replica) {
				s, err := freeze.Sign(freeze.Statement{Lift: true, ID: id}, c.signers[who])
				if err != nil {
					t.Fatal(err)
				}
				if _, err := r.gw.Unfreeze(ctx, who, s); err != nil {
					t.Fatalf("unfreeze by %s: %v", who, err)
				}
			}
			lift("alice", c.reps[0])
			lift("bob", c.reps[1])
			for i, r := range c.reps {
				res, err := r.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-after"}, Session: "s", Action: action(t, `{"type": "ping"}`)}, false)
				if err != nil || res.Decision.Decision != policy.Allow {
					t.Errorf("replica %d after the unfreeze: %v %+v", i, err, res)
				}
			}

			// The log: no allow between the freeze and the unfreeze.
			snap, err := c.reps[0].st.LogSize(ctx)
			if err != nil {
				t.Fatal(err)
			}
			raws, err := c.reps[0].st.ReadEntries(0, snap)
			if err != nil {
				t.Fatal(err)
			}
			frozen, denied := false, 0
			for i, raw := range raws {
				e, err := audit.DecodeEntry(raw)
				if err != nil {
					t.Fatal(err)
				}
				if n, ok := ledger.ParseFreezeNote(e); ok {
					frozen = n.Word != ledger.NoteUnfreeze
					continue
				}
				if frozen && e.Kind == audit.KindDecision {
					if ledger.Decision(e.Decision) == ledger.Allow {
						t.Errorf("entry %d: an allow after the freeze entry: %s %s", i, e.Agent, e.RequestID)
					}
					denied++
				}
			}
			t.Logf("%d entries, %d decisions decided before the freeze returned, %d refused or denied while frozen", len(raws), before, denied)
		})
	}
}
