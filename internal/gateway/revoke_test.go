package gateway_test

import (
	"context"
	"net/http"
	"testing"

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
