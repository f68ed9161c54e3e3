package gateway_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

// park submits a trade that needs two treasury approvers.
func (f *fixture) park(t *testing.T) *gateway.Result {
	t.Helper()
	return f.parkAs(t, agent42)
}

func (f *fixture) parkAs(t *testing.T, agent policy.Agent) *gateway.Result {
	t.Helper()
	res, err := f.gw.Submit(context.Background(), &gateway.Request{Agent: agent, Session: "s", Action: action(t, `{"type": "trade", "amount": 5000}`)}, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision.Decision != policy.RequireApproval || res.Approval == nil {
		t.Fatalf("got %+v, want a parked request", res)
	}
	return res
}

// sign returns approver's signed statement for a parked request.
func (f *fixture) sign(t *testing.T, approver string, r approval.Request, v approval.Verdict) []byte {
	t.Helper()
	reason := ""
	if v == approval.Reject {
		reason = "not today"
	}
	signed, err := approval.Sign(r.Statement(v, reason), f.signers[approver])
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestTwoPersonApproval(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	parked := f.park(t)
	r := *parked.Approval

	refusals := []struct {
		name, approver string
		signed         []byte
		code           string
	}{
		{"outside the group", "mallory", nil, "not_in_group"},
		{"self-approval", "agent-42", nil, "self_approval"},
	}
	altered := r
	altered.Action[0] ^= 1
	for _, x := range refusals {
		_, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, x.approver, r, approval.Approve))
		if approval.Code(err) != x.code {
			t.Errorf("%s: got %v, want %s", x.name, err, x.code)
		}
	}
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", altered, approval.Approve)); approval.Code(err) != "action_mismatch" {
		t.Errorf("approval of an altered action: got %v, want action_mismatch", err)
	}
	first, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve))
	if err != nil || first.Result != nil {
		t.Fatalf("first approval: %+v %v, want accepted and not yet executed", first, err)
	}
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); approval.Code(err) != "duplicate_approver" {
		t.Errorf("alice twice: got %v, want duplicate_approver", err)
	}
	if f.up.count() != 0 {
		t.Fatal("executed before the quorum")
	}
	second, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "bob", r, approval.Approve))
	if err != nil || second.Result == nil || second.Result.Outcome == nil || second.Result.Decision.Decision != "approved" {
		t.Fatalf("second approval: %+v %v, want the request approved and executed", second, err)
	}
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "carol", r, approval.Approve)); approval.Code(err) != "closed" {
		t.Errorf("approval after execution: got %v, want closed", err)
	}
	if f.up.count() != 1 {
		t.Fatalf("upstream received %d requests, want 1", f.up.count())
	}
	f.up.checkOracle()
	got, err := f.gw.Wait(ctx, agent42.ID, r.ID)
	if err != nil || got.Outcome == nil || got.Approval.State != approval.Executed {
		t.Fatalf("wait: %+v %v", got, err)
	}
	// The log names both approvers with their signatures.
	approvers := map[string]bool{}
	for i := int64(0); i < f.log.Size(); i++ {
		raw, _ := f.log.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		if e.Kind == audit.KindApproval && e.Decision == "approve" {
			if len(e.Signature) == 0 {
				t.Errorf("approval entry %d has no signature", i)
			}
			approvers[e.Approver] = true
		}
	}
	if !approvers["alice"] || !approvers["bob"] || len(approvers) != 2 {
		t.Errorf("approval entries by %v, want alice and bob", approvers)
	}
}

func TestRejection(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	r := *f.park(t).Approval
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.gw.Reject(ctx, "caller", r.ID, f.sign(t, "carol", r, approval.Reject)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "bob", r, approval.Approve)); approval.Code(err) != "closed" {
		t.Fatalf("approval after rejection: got %v, want closed", err)
	}
	if f.up.count() != 0 {
		t.Fatal("a rejected request was executed")
	}
}

// TestConcurrentFinalApprovals: many approvers completing the quorum at
// once never execute a request twice.
func TestConcurrentFinalApprovals(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	// The approval package runs 1,000 trials of the race itself; here 200
	// trials go through the whole gateway, log and upstream.
	const trials = 200
	for i := 0; i < trials; i++ {
		r := *f.parkAs(t, policy.Agent{ID: fmt.Sprintf("agent-%d", i), Roles: []string{"payments"}}).Approval
		if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		executed := 0
		for _, who := range []string{"bob", "carol", "bob", "carol"} {
			signed := f.sign(t, who, r, approval.Approve)
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := f.gw.Approve(ctx, "caller", r.ID, signed)
				if err == nil && res.Result != nil {
					mu.Lock()
					executed++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if executed != 1 {
			t.Fatalf("trial %d: %d approvals executed the request, want exactly 1", i, executed)
		}
	}
	if f.up.count() != trials {
		t.Fatalf("upstream received %d requests for %d approved trades", f.up.count(), trials)
	}
	f.up.checkOracle()
}

// TestApprovalsSurviveRestart: a half-approved request is still pending
// after a restart and executes once on its last approval.
func TestApprovalsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	r := *f.park(t).Approval
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); err != nil {
		t.Fatal(err)
	}
	f.log.Close()

	g := newFixtureFrom(t, dir, f) // reopens the log in dir, same approvers
	if _, err := g.gw.Rebuild(ctx, g.log); err != nil {
		t.Fatal(err)
	}
	pending := g.gw.Pending()
	if len(pending) != 1 || pending[0].Request.ID != r.ID || len(pending[0].Request.Approvals) != 1 {
		t.Fatalf("pending after restart: %+v, want %s with alice's approval", pending, r.ID)
	}
	if got := pending[0].StillNeeded; len(got) != 1 || got[0] != 1 {
		t.Fatalf("still needed after alice's approval: %v, want [1]", got)
	}
	if _, err := g.gw.Approve(ctx, "caller", r.ID, g.sign(t, "alice", r, approval.Approve)); approval.Code(err) != "duplicate_approver" {
		t.Fatalf("alice again after restart: got %v, want duplicate_approver", err)
	}
	res, err := g.gw.Approve(ctx, "caller", r.ID, g.sign(t, "bob", r, approval.Approve))
	if err != nil || res.Result == nil || res.Result.Outcome == nil {
		t.Fatalf("final approval after restart: %+v %v", res, err)
	}
	if g.up.count() != 1 || f.up.count() != 0 {
		t.Fatalf("executions: %d, want 1", g.up.count()+f.up.count())
	}
	g.up.checkOracle()
	// The re-evaluation after the restart saw the agent's recorded roles:
	// TradersOnly would have denied a role-less agent.
	if res.Result.Decision.Decision != "approved" {
		t.Fatalf("re-evaluated after restart: %+v", res.Result.Decision)
	}
	// A third start finds the request executed and pending nothing.
	g.log.Close()
	h := newFixtureFrom(t, dir, f)
	if _, err := h.gw.Rebuild(ctx, h.log); err != nil {
		t.Fatal(err)
	}
	if p := h.gw.Pending(); len(p) != 0 {
		t.Fatalf("pending after the third start: %+v", p)
	}
	if h.up.count() != 0 {
		t.Fatal("a restart executed something")
	}
}

// TestExpiry: a parked request that reaches its time limit ends as
// expired, logged, and accepts no late approval.
func TestExpiry(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := *f.park(t).Approval
	f.clock.advance(2 * time.Hour) // the default limit is one hour
	go f.gw.RunExpiry(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	got, err := f.gw.Wait(wctx, agent42.ID, r.ID)
	if err != nil || got.Approval == nil || got.Approval.State != approval.Expired {
		t.Fatalf("after the limit: %+v %v, want expired", got, err)
	}
	if got.Decision.Decision != policy.Deny || got.Decision.Reason != string(ledger.ApprovalExpired) {
		t.Errorf("expired request's decision: %s (%s), want deny (approval_expired)", got.Decision.Decision, got.Decision.Reason)
	}
	if _, err := f.gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); approval.Code(err) == "" {
		t.Fatal("a late approval was accepted")
	}
	expired := false
	for i := int64(0); i < f.log.Size(); i++ {
		raw, _ := f.log.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		if e.Kind == audit.KindApproval && e.RequestID == r.ID && e.Decision == "expired" {
			expired = true
		}
	}
	if !expired || f.up.count() != 0 {
		t.Fatalf("expired entry logged %v, executions %d", expired, f.up.count())
	}
}
