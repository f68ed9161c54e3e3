package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestRevokedPrincipalIsDenied: an agent parks a trade, the gateway
// restarts with a configuration in which the agent is gone, or no longer
// has the role it asked with; the quorum, met afterwards, re-evaluates the
// request for the agent as configured now: denied principal_revoked,
// logged, never executed. An agent configured as before gets it executed.
func TestRevokedPrincipalIsDenied(t *testing.T) {
	for _, tt := range []struct {
		name     string
		now      map[string]policy.Agent
		want     policy.Effect
		executed int
	}{
		{"removed", map[string]policy.Agent{}, policy.Deny, 0},
		{"role withdrawn", map[string]policy.Agent{agent42.ID: {ID: agent42.ID}}, policy.Deny, 0},
		{"unchanged", map[string]policy.Agent{agent42.ID: agent42}, "approved", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, t.TempDir())
			ctx := context.Background()
			parked := f.park(t)
			creds := http.Header{"Authorization": {"Bearer upstream-secret"}}
			trade := &gateway.HTTPExecutor{Method: "POST", URL: f.up.srv.URL + "/trades", Headers: creds}
			gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: f.log, Approvers: f.reg, Now: f.clock.now,
				Executors: map[string]gateway.Executor{"trade": trade},
				Principals: func(id string) (policy.Agent, bool) {
					a, ok := tt.now[id]
					return a, ok
				}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := gw.Rebuild(ctx, f.log); err != nil {
				t.Fatal(err)
			}
			var last *gateway.ApprovalResult
			for _, who := range []string{"alice", "bob"} {
				if last, err = gw.Approve(ctx, "caller", parked.RequestID, f.sign(t, who, *parked.Approval, approval.Approve)); err != nil {
					t.Fatal(err)
				}
			}
			if last.Result == nil || last.Result.Decision.Decision != tt.want {
				t.Fatalf("after the quorum: %+v, want %s", last.Result, tt.want)
			}
			if tt.want == policy.Deny && last.Result.Decision.Reason != "principal_revoked" {
				t.Errorf("reason %q, want principal_revoked", last.Result.Decision.Reason)
			}
			if got := f.up.count(); got != tt.executed {
				t.Errorf("executions: got %d, want %d", got, tt.executed)
			}
		})
	}
}

// TestRecheckParked: when who may act changes (SetPrincipals, as a reload
// does), RecheckParked denies at once, logged, a parked request whose agent
// was removed: a caller waiting on it is answered with the denial, the
// upstream is never called, the approval queue no longer holds it, and a
// restarted gateway restores it denied. A request whose agent is unchanged
// stays parked; a second re-check denies nothing more.
func TestRecheckParked(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	other := policy.Agent{ID: "agent-7", Roles: agent42.Roles}
	gone, kept := f.park(t), f.parkAs(t, other)
	waited := make(chan *gateway.Result, 1)
	go func() {
		res, _ := f.gw.Wait(ctx, agent42.ID, gone.RequestID)
		waited <- res
	}()
	f.gw.SetPrincipals(func(id string) (policy.Agent, bool) { return other, id == other.ID })
	const reload = "sha256:00000000000000000000000000000000000000000000000000000000000000aa"
	got, err := f.gw.RecheckParked(ctx, reload)
	if err != nil || len(got) != 1 || got[0].RequestID != gone.RequestID || got[0].Reason != "principal_revoked" {
		t.Fatalf("RecheckParked: %+v %v, want %s denied principal_revoked", got, err, gone.RequestID)
	}
	res := <-waited
	if res == nil || res.Decision.Decision != policy.Deny || res.Decision.Reason != "principal_revoked" || res.Approval == nil || res.Approval.State != approval.Revoked {
		t.Fatalf("the waiter got %+v, want deny principal_revoked, revoked", res)
	}
	if pending := f.gw.Pending(); len(pending) != 1 || pending[0].Request.ID != kept.RequestID {
		t.Errorf("pending after the re-check: %+v, want %s only", pending, kept.RequestID)
	}
	if again, err := f.gw.RecheckParked(ctx, reload); err != nil || len(again) != 0 {
		t.Errorf("second re-check: %+v %v, want nothing", again, err)
	}
	last, err := f.log.ReadEntry(f.log.Size() - 1)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := audit.DecodeEntry(last)
	if e.Kind != audit.KindDecision || e.RequestID != gone.RequestID || e.Decision != "deny" || e.Message != "principal_revoked" || !strings.Contains(e.State.Text, `"reload":"`+reload+`"`) {
		t.Errorf("last entry %+v, want the denial naming the reload", e)
	}
	if _, err := f.gw.Approve(ctx, "caller", gone.RequestID, f.sign(t, "alice", *gone.Approval, approval.Approve)); !errors.Is(err, approval.ErrClosed) {
		t.Errorf("approval of the revoked request: %v, want closed", err)
	}
	if n := f.up.count(); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}

	f.log.Close()
	restarted := newFixtureFrom(t, dir, f)
	if _, err := restarted.gw.Rebuild(ctx, restarted.log); err != nil {
		t.Fatal(err)
	}
	if res, err := restarted.gw.Get(agent42.ID, gone.RequestID); err != nil || res.Decision.Reason != "principal_revoked" || res.Approval.State != approval.Revoked {
		t.Errorf("after a restart: %+v %v, want denied and revoked", res, err)
	}
	if pending := restarted.gw.Pending(); len(pending) != 1 || pending[0].Request.ID != kept.RequestID {
		t.Errorf("pending after a restart: %+v, want %s only", pending, kept.RequestID)
	}
}
