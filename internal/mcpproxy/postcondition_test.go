package mcpproxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/mcpproxy"
)

// postconditionPolicy checks the echo tool's result, which postconditions
// see as the proxy records it: {"content": [{"type": "text", "text": ...}]}.
const postconditionPolicy = `policy "mcp" { default: deny }

rule "Echo" {
  precondition: action.type == "up.echo"
  allow
}

rule "EchoRepeatsText" {
  precondition: action.type == "up.echo"
  postcondition: result.content[0].type == "text" && result.content[0].text == "echo: " + action.text
  deny: "the echo is not the text"
}

rule "EchoIsShort" {
  precondition: action.type == "up.echo"
  postcondition: size(result.content[0].text) <= 12
  deny: "the echo is too long"
}

rule "NoStructuredContent" {
  mode: shadow
  precondition: action.type == "up.echo"
  postcondition: has(result.structuredContent)
  deny: "the echo has no structured content"
}
`

// TestPostconditionsOverMCP: the verdicts are in the reply's
// io.rulelock/decision _meta and in the outcome entry, and a violated
// enforced postcondition is told to the agent in the result's text, which
// stays a result (not isError): the call was executed.
func TestPostconditionsOverMCP(t *testing.T) {
	f := newFixture(t, postconditionPolicy)
	cs := f.connect(t, "token-a", nil, nil)
	const shadow = "NoStructuredContent violated"
	tests := []struct {
		text     string
		verdicts string // rule holds|violated, in policy order
		told     string // the text after the echo; "" for none
	}{
		{"hi", "EchoRepeatsText holds, EchoIsShort holds, " + shadow, ""},
		{"a longer text", "EchoRepeatsText holds, EchoIsShort violated, " + shadow,
			`rulelock: the call was executed, but its result violates the policy: rule "EchoIsShort": the echo is too long`},
	}
	for _, tt := range tests {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": tt.text}})
		if err != nil {
			t.Fatal(err)
		}
		if res.IsError {
			t.Errorf("%q: got isError, want a result", tt.text)
		}
		if got, want := text(res), "echo: "+tt.text+tt.told; got != want {
			t.Errorf("%q: got %v, want %v", tt.text, got, want)
		}
		dec, _ := res.Meta[mcpproxy.MetaDecision].(map[string]any)
		var got []string
		ps, _ := dec["postconditions"].([]any)
		for _, p := range ps {
			v, _ := p.(map[string]any)
			rule, _ := v["rule"].(string)
			got = append(got, verdict(rule, v["holds"] == true))
		}
		if g := strings.Join(got, ", "); g != tt.verdicts {
			t.Errorf("%q: _meta postconditions: got %v, want %v", tt.text, g, tt.verdicts)
		}
	}
	var logged []string
	for _, e := range f.entries(t) {
		if e.Kind != audit.KindOutcome {
			continue
		}
		for _, v := range e.Postconditions {
			logged = append(logged, verdict(v.Rule, v.Holds))
		}
	}
	if got, want := strings.Join(logged, ", "), tests[0].verdicts+", "+tests[1].verdicts; got != want {
		t.Errorf("outcome entries: got %v, want %v", got, want)
	}
}

func verdict(rule string, holds bool) string {
	if holds {
		return rule + " holds"
	}
	return rule + " violated"
}
