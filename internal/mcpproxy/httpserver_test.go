package mcpproxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestToolsListFollowsPolicyOverHTTP: over /mcp an agent's server is
// reused from request to request, not refreshed on each one; tools/list
// still shows what the active policy may allow, at once after an
// activation (even without PolicyChanged) and in a session opened later.
func TestToolsListFollowsPolicyOverHTTP(t *testing.T) {
	f := newFixture(t, testPolicy)
	ctx := context.Background()
	cs := f.connect(t, "token-a", nil, nil)
	if got, want := strings.Join(toolNames(t, cs), ","), "up.echo,up.publish,up.slow"; got != want {
		t.Fatalf("tools/list = %s, want %s", got, want)
	}
	// A policy without the rule that allows up.slow.
	src := testPolicy[:strings.Index(testPolicy, `rule "Slow"`)] + testPolicy[strings.Index(testPolicy, `rule "Publish"`):]
	p, err := policy.FromSources([]policy.Source{{Name: "mcp.rules", Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true}); err != nil {
		t.Fatal(err)
	}
	want := "up.echo,up.publish"
	if got := strings.Join(toolNames(t, cs), ","); got != want {
		t.Errorf("tools/list after the activation = %s, want %s", got, want)
	}
	later := f.connect(t, "token-a", nil, nil)
	if got := strings.Join(toolNames(t, later), ","); got != want {
		t.Errorf("tools/list in a later session = %s, want %s", got, want)
	}
}
