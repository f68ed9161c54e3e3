package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

const parkMessage = "two treasurers sign trades over 100"

// TestRejectedIsDenied: a rejected request reports its final decision,
// deny with the reason approval_rejected, live and after a restart; the
// rules that parked it stay in the decision.
func TestRejectedIsDenied(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	r := *f.park(t).Approval
	if _, err := f.gw.Reject(ctx, "caller", r.ID, f.sign(t, "carol", r, approval.Reject)); err != nil {
		t.Fatal(err)
	}
	check := func(when string, g *fixture) {
		t.Helper()
		res, err := g.gw.Get(agent42.ID, r.ID)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if res.Decision.Decision != policy.Deny || res.Decision.Reason != string(ledger.ApprovalRejected) {
			t.Errorf("%s: decision %s (%s), want deny (%s)", when, res.Decision.Decision, res.Decision.Reason, ledger.ApprovalRejected)
		}
		if len(res.Decision.Rules) == 0 || res.Decision.Rules[0].Name != "BigNeedsApproval" {
			t.Errorf("%s: rules %+v, want the rule that parked it", when, res.Decision.Rules)
		}
		if res.Approval == nil || res.Approval.State != approval.Rejected || res.Approval.Rejection == nil {
			t.Errorf("%s: approval %+v, want rejected", when, res.Approval)
		}
	}
	check("live", f)
	f.log.Close()
	g := newFixtureFrom(t, dir, f)
	if _, err := g.gw.Rebuild(ctx, g.log); err != nil {
		t.Fatal(err)
	}
	check("after a restart", g)
}

// TestParkedKeepsMessageAcrossRestart: a parked request restored by a
// restart on the same data directory keeps its requirements whole, the
// message included, in its decision and in its approval object.
func TestParkedKeepsMessageAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	parked := f.park(t)
	check := func(when string, res *gateway.Result) {
		t.Helper()
		if a := res.Decision.Approval; a == nil || len(a.Requirements) != 1 || a.Requirements[0].Message != parkMessage || a.Approvers != 2 {
			t.Errorf("%s: decision's approval terms %+v, want the requirement with its message", when, a)
		}
		if res.Approval == nil || len(res.Approval.Requirements) != 1 || res.Approval.Requirements[0].Message != parkMessage {
			t.Errorf("%s: approval object %+v, want the requirement with its message", when, res.Approval)
		}
	}
	check("parked", parked)
	f.log.Close()
	g := newFixtureFrom(t, dir, f)
	if _, err := g.gw.Rebuild(ctx, g.log); err != nil {
		t.Fatal(err)
	}
	res, err := g.gw.Get(agent42.ID, parked.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	check("after a restart", res)
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("null")) {
		t.Errorf("after a restart the reply has a null (docs/openapi.yaml: arrays are arrays): %s", b)
	}
	if p := g.gw.Pending(); len(p) != 1 || p[0].Request.Requirements[0].Message != parkMessage {
		t.Errorf("pending after a restart: %+v", p)
	}
}
