package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestNoPolicyDecidesNothing: a gateway started without a policy (no valid
// bundle) decides and executes nothing, refusals are still logged (naming
// no policy); once a policy is activated it works.
func TestNoPolicyDecidesNothing(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	up := newUpstream(t, l)
	pay := &gateway.HTTPExecutor{Method: "POST", URL: up.srv.URL + "/pay/{to}", Headers: http.Header{"Authorization": {"Bearer upstream-secret"}}}
	clk := &clock{t: time.Now()}
	gw, err := gateway.New(gateway.Config{Log: l, Now: clk.now, Executors: map[string]gateway.Executor{"transfer": pay}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if a := gw.Active(); !a.None || a.Digest != "" || a.Policy == nil {
		t.Fatalf("active without a policy: %+v, want None with a deny-all policy and no digest", a)
	}
	req := &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "transfer", "amount": 5, "to": "acct-1"}`)}
	for _, execute := range []bool{true, false} {
		if res, err := gw.Submit(ctx, req, execute); !errors.Is(err, gateway.ErrNoPolicy) {
			t.Fatalf("submit without a policy: %+v, %v; want ErrNoPolicy", res, err)
		}
	}
	if l.Size() != 0 {
		t.Errorf("the log has %d entries after refused submissions; Submit itself records nothing", l.Size())
	}
	res, err := gw.Refuse(ctx, agent42, "no_policy", "no valid policy bundle is active", []byte(`{"action": {}}`))
	if err != nil || res.Decision.Decision != policy.Deny || res.Decision.Policy != "" {
		t.Fatalf("refuse without a policy: %+v %v", res, err)
	}

	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: "sha256:test", Version: 1, Signers: []string{"alice"}, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	if up.count() != 0 {
		t.Fatalf("the upstream was called %d times before a policy was active", up.count())
	}
	got, err := gw.Submit(ctx, req, true)
	if err != nil || got.Decision.Decision != policy.Allow || got.Outcome == nil || got.Outcome.Status != gateway.StatusOK {
		t.Fatalf("submit after activation: %+v %v", got, err)
	}
	if up.count() != 1 {
		t.Errorf("upstream calls: %d, want 1", up.count())
	}
	up.checkOracle()
}
