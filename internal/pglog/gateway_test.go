package pglog

import (
	"context"
	"testing"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/pgtest"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

const capPolicy = `policy "t" {
  default: deny
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0
  allow
}
rule "DailyCap" {
  precondition: action.type == "transfer"
  condition: agent.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 10000
  deny: "at most 10000 per payee per day"
}
`

// TestGateway: the gateway records its decisions through the PostgreSQL
// log (gateway.Recorder); a gateway on another replica rebuilds its state
// from that log (gateway.LogReader) and holds the daily cap the first one's
// decisions used up; the log of both verifies.
func TestGateway(t *testing.T) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	ctx := context.Background()
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(capPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	agent := policy.Agent{ID: "agent-42", Roles: []string{"payments"}}
	transfer := func(js string) *gateway.Request {
		t.Helper()
		v, err := strictjson.Decode([]byte(js), strictjson.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := policy.NewAction(v)
		if err != nil {
			t.Fatal(err)
		}
		return &gateway.Request{Agent: agent, Action: a}
	}

	one := newReplica(t, c.DSN())
	gw1, err := gateway.New(gateway.Config{Policy: p, Log: one.log})
	if err != nil {
		t.Fatal(err)
	}
	for _, js := range []string{`{"type": "transfer", "amount": 6000, "to": "acct-7"}`, `{"type": "transfer", "amount": 3000, "to": "acct-7"}`} {
		res, err := gw1.Submit(ctx, transfer(js), false)
		if err != nil || res.Decision.Decision != policy.Allow {
			t.Fatalf("replica 1, %s: %+v, %v; want allow", js, res, err)
		}
	}

	two := newReplica(t, c.DSN())
	gw2, err := gateway.New(gateway.Config{Policy: p, Log: two.log})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := NewReader(two.pool).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw2.Rebuild(ctx, snap); err != nil {
		t.Fatalf("rebuild from the PostgreSQL log: %v", err)
	}
	res, err := gw2.Submit(ctx, transfer(`{"type": "transfer", "amount": 2000, "to": "acct-7"}`), false)
	if err != nil || res.Decision.Decision != policy.Deny {
		t.Fatalf("replica 2, 2000 more to acct-7: %+v, %v; want deny (6000 + 3000 + 2000 > 10000)", res, err)
	}
	if _, err := integrate(ctx, dial(t, c.DSN()), signer, 1000, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := exportAndVerify(t, one.pool, verifier)
	if err != nil {
		t.Fatalf("verify export: %v", err)
	}
	if rep.Entries < 3 {
		t.Errorf("verified %d entries, want the 3 decisions at least", rep.Entries)
	}
}
