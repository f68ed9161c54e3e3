package policy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/policy"
)

const sensitiveSchema = `action "pay" {
  amount: number
  card: string sensitive
  # a comment
  pin?: string sensitive
}
`

func TestSchemaSensitiveFields(t *testing.T) {
	p := mustPolicy(t, policy.Options{}, sensitiveSchema+`
rule "SmallPayments" {
  precondition: action.type == "pay"
  condition: action.amount <= 100 && action.card.startsWith("4")
  allow
}
`)
	if got, want := p.Sensitive("pay"), []string{"card", "pin"}; !slices.Equal(got, want) {
		t.Fatalf("Sensitive(pay) = %v, want %v", got, want)
	}
	if got := p.Sensitive("refund"); got != nil {
		t.Fatalf("Sensitive(refund) = %v, want none", got)
	}
	// The policy evaluates the plaintext.
	d := p.Evaluate(mustRequest(t, `{"action":{"type":"pay","amount":5,"card":"4111111111111111"},"now":"2026-11-22T10:00:00Z"}`))
	if d.Decision != policy.Allow {
		t.Fatalf("decision %s (%v), want allow", d.Decision, d.Errors)
	}
	// fmt keeps the modifier.
	f, err := policy.Parse("p.rules", []byte(sensitiveSchema))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(policy.Format(f)); got != sensitiveSchema {
		t.Fatalf("Format:\n%s\nwant:\n%s", got, sensitiveSchema)
	}
}

func TestSchemaModifierErrors(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{"action \"pay\" {\n  card: string secret\n}\n", `p.rules:2:16: unknown field modifier "secret" (want sensitive)`},
		{"action \"pay\" {\n  card: string sensitive sensitive\n}\n", `p.rules:2:26: unexpected`},
		{"action \"pay\" {\n  card: sensitive string\n}\n", `p.rules:2:9: unknown field type "sensitive"`},
	} {
		_, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(tt.src)}}, policy.Options{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %s", tt.src, err, tt.want)
		}
	}
}

// TestSensitiveValueNotInErrors: a sensitive value of the wrong shape is
// denied schema_mismatch without the value in the error.
func TestSensitiveValueNotInErrors(t *testing.T) {
	p := mustPolicy(t, policy.Options{}, `action "enrol" {
  born: timestamp sensitive
  pin: int sensitive
}
`)
	for _, req := range []string{
		`{"action":{"type":"enrol","born":"19 March 1984","pin":1234},"now":"2026-11-22T10:00:00Z"}`,
		`{"action":{"type":"enrol","born":"1984-03-19T00:00:00Z","pin":1234.5},"now":"2026-11-22T10:00:00Z"}`,
	} {
		d := p.Evaluate(mustRequest(t, req))
		if d.Decision != policy.Deny || d.Reason != "schema_mismatch" {
			t.Fatalf("%s: %s %s, want deny schema_mismatch", req, d.Decision, d.Reason)
		}
		for _, e := range d.Errors {
			if strings.Contains(e.Message, "1984") || strings.Contains(e.Message, "1234") {
				t.Errorf("the error shows the sensitive value: %s", e.Message)
			}
		}
	}
}
