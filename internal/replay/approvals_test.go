package replay_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

const tradePolicy = `policy "trades" {
  default: deny
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
rule "TwoApprovers" {
  precondition: action.type == "trade"
  condition: action.amount <= 100
  require_approval {
    approvers: 2
    groups: ["treasury"]
  }
}
rule "DailyCap" {
  precondition: action.type == "trade"
  condition: global.total("trade", "amount", {}, duration("24h")) + action.amount <= 100000
  deny: "at most 100000 a day"
}
`

// TestVerifyGatewayDenials: an honest log in which the gateway, not the
// policy, denied approved requests replays clean — a request approved
// once, then the policy changed (a new activation), then approved again
// (policy_changed), and one whose agent was removed from the
// configuration before its quorum (principal_revoked) — while an altered
// policy_changed, claimed under the policy the approvers signed for, is
// reported.
func TestVerifyGatewayDenials(t *testing.T) {
	data := t.TempDir()
	p1 := archived(t, data, tradePolicy)
	p2 := archived(t, data, tradePolicy+"// version 2\n")
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	signers, reg := approvers(t)
	now := func() time.Time { return time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC) }
	removed := map[string]bool{}
	gw, err := gateway.New(gateway.Config{Policy: p1, Log: l, Approvers: reg, Now: now,
		Principals: func(id string) (policy.Agent, bool) {
			return policy.Agent{ID: id, Roles: []string{"trading"}}, !removed[id]
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p1, Digest: p1.Digest(), Dev: true, Source: "v1"}); err != nil {
		t.Fatal(err)
	}
	park := func(agent string) *gateway.Result {
		t.Helper()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: agent, Roles: []string{"trading"}}, Action: mustAction(t, `{"type": "trade", "amount": 5000}`)}, false)
		if err != nil || res.Approval == nil {
			t.Fatalf("park: %+v %v", res, err)
		}
		return res
	}
	approve := func(res *gateway.Result, who string) *gateway.ApprovalResult {
		t.Helper()
		signed, err := approval.Sign(res.Approval.Statement(approval.Approve, ""), signers[who])
		if err != nil {
			t.Fatal(err)
		}
		out, err := gw.Approve(ctx, "caller", res.RequestID, signed)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	executed := park("a1")
	approve(executed, "alice")
	if out := approve(executed, "bob"); out.Result.Decision.Decision != "approved" {
		t.Fatalf("first request: %+v, want approved", out.Result.Decision)
	}
	changed := park("a1")
	approve(changed, "alice")
	if err := gw.Activate(ctx, &gateway.Active{Policy: p2, Digest: p2.Digest(), Dev: true, Source: "v2"}); err != nil {
		t.Fatal(err)
	}
	if out := approve(changed, "bob"); out.Result.Decision.Reason != "policy_changed" {
		t.Fatalf("after the policy changed: %+v, want policy_changed", out.Result.Decision)
	}
	revoked := park("a2")
	removed["a2"] = true
	approve(revoked, "alice")
	if out := approve(revoked, "bob"); out.Result.Decision.Reason != "principal_revoked" {
		t.Fatalf("after a2 was removed: %+v, want principal_revoked", out.Result.Decision)
	}
	sum, err := replay.Verify(l, replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, AllowDevelopment: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Findings) != 0 {
		t.Fatalf("honest log: findings %+v", sum.Findings)
	}

	// The same denial claimed where the policy had not changed is caught:
	// a copy of the log with the first request's approved re-decision
	// rewritten as a policy_changed denial under the same policy.
	forged := filepath.Join(t.TempDir(), "log")
	fl, err := audit.Open(forged, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	err = gateway.EachEntry(l, func(i int64, raw []byte, e *audit.Entry) error {
		if e.Kind == audit.KindDecision && e.RequestID == executed.RequestID && e.Decision == "approved" {
			e.Decision, e.Message = "deny", "policy_changed"
		}
		_, err := fl.Append(ctx, e)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, err = replay.Verify(fl, replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, AllowDevelopment: true})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range sum.Findings {
		found = found || f.Class == replay.ReplayMismatch && strings.Contains(f.Detail, "policy_changed")
	}
	if !found {
		t.Errorf("forged policy_changed: findings %+v, want a replay_mismatch", sum.Findings)
	}
}

// archived compiles a development policy and archives it as the gateway
// does (lifecycle.Archive, <data>/bundles/<digest>/).
func archived(t *testing.T, data, src string) *policy.Policy {
	t.Helper()
	srcs := []policy.Source{{Name: "p.rules", Data: []byte(src)}}
	p, err := policy.FromSources(srcs, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := (lifecycle.Archive{Dir: filepath.Join(data, "bundles")}).StoreDev(p, srcs); err != nil {
		t.Fatal(err)
	}
	return p
}

func approvers(t *testing.T) (map[string]note.Signer, *approval.Registry) {
	t.Helper()
	signers := map[string]note.Signer{}
	var as []approval.Approver
	for _, id := range []string{"alice", "bob"} {
		skey, vkey, err := note.GenerateKey(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		signers[id], _ = note.NewSigner(skey)
		as = append(as, approval.Approver{ID: id, Groups: []string{"treasury"}, Key: vkey})
	}
	reg, err := approval.NewRegistry(as)
	if err != nil {
		t.Fatal(err)
	}
	return signers, reg
}
