package mcpproxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/freeze"
)

// TestFrozenRefusesCalls: while an approver's freeze is in force a
// tools/call is refused with an error, logged as a frozen denial, and
// nothing reaches the upstream; after two approvers lift it the call goes
// through.
func TestFrozenRefusesCalls(t *testing.T) {
	f := newFixture(t, testPolicy)
	ctx := context.Background()
	cs := f.connect(t, "token-a", nil, nil)
	id := freeze.NewID()
	signed, err := freeze.Sign(freeze.Statement{ID: id, Time: time.Now().UTC().Truncate(time.Second), Reason: "stop"}, f.signers["alice"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.gw.Freeze(ctx, "alice", signed); err != nil {
		t.Fatal(err)
	}
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": "while frozen"}})
	if err == nil || !strings.Contains(err.Error(), "frozen") {
		t.Fatalf("call while frozen: %v, want an error saying the gateway is frozen", err)
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q while frozen", got)
	}
	var logged []string
	for _, e := range f.entries(t) {
		if e.Kind == audit.KindDecision {
			logged = append(logged, e.Decision+" "+e.Agent+" "+e.Message)
		}
	}
	if len(logged) != 1 || !strings.HasPrefix(logged[0], "deny agent-a frozen") {
		t.Errorf("decisions logged: %q, want one frozen denial of agent-a", logged)
	}
	for _, who := range []string{"alice", "bob"} {
		vote, _ := freeze.Sign(freeze.Statement{Lift: true, ID: id}, f.signers[who])
		if _, err := f.gw.Unfreeze(ctx, who, vote); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": "after"}})
	if err != nil || res.IsError || text(res) != "echo: after" {
		t.Fatalf("call after the unfreeze: %v %v", res, err)
	}
}
