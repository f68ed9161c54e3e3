package policy_test

import (
	"os"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/policy"
)

// defaultDeny allows small transfers and nothing else.
const defaultDeny = `rule "SmallTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount <= 10000
  allow
}
`

// bypassAttempts are actions a hostile agent may send hoping that a
// transfer of 20000 (or a look-alike of "transfer") gets allowed.
var bypassAttempts = []struct{ name, action string }{
	{"capitalised type", `{"type": "Transfer", "amount": 500, "to": "acct-1"}`},
	{"upper-case type", `{"type": "TRANSFER", "amount": 500, "to": "acct-1"}`},
	{"trailing space", `{"type": "transfer ", "amount": 500, "to": "acct-1"}`},
	{"leading space", `{"type": " transfer", "amount": 500, "to": "acct-1"}`},
	{"zero-width space", `{"type": "trans\u200bfer", "amount": 500, "to": "acct-1"}`},
	{"zero-width joiner raw", "{\"type\": \"trans\u200dfer\", \"amount\": 500, \"to\": \"acct-1\"}"},
	{"cyrillic a", "{\"type\": \"tr\u0430nsfer\", \"amount\": 500, \"to\": \"acct-1\"}"},
	{"fullwidth t", "{\"type\": \"\uff54ransfer\", \"amount\": 500, \"to\": \"acct-1\"}"},
	{"NUL suffix", `{"type": "transfer\u0000", "amount": 500, "to": "acct-1"}`},
	{"newline suffix", `{"type": "transfer\n", "amount": 500, "to": "acct-1"}`},
	{"type as list", `{"type": ["transfer"], "amount": 500, "to": "acct-1"}`},
	{"duplicate amount small last", `{"type": "transfer", "amount": 20000, "amount": 5, "to": "acct-1"}`},
	{"duplicate amount small first", `{"type": "transfer", "amount": 5, "amount": 20000, "to": "acct-1"}`},
	{"duplicate via escape", `{"type": "transfer", "amount": 20000, "\u0061mount": 5, "to": "acct-1"}`},
	{"duplicate type", `{"type": "transfer", "type": "verify_counterparty", "amount": 20000, "to": "acct-1"}`},
	{"case-variant key", `{"type": "transfer", "amount": 5, "Amount": 20000, "to": "acct-1"}`},
	{"case-variant type key", `{"Type": "transfer", "type": "transfer", "amount": 20000, "to": "acct-1"}`},
	{"amount as string", `{"type": "transfer", "amount": "20000", "to": "acct-1"}`},
	{"amount as list", `{"type": "transfer", "amount": [20000], "to": "acct-1"}`},
	{"amount as object", `{"type": "transfer", "amount": {"value": 20000}, "to": "acct-1"}`},
	{"amount null", `{"type": "transfer", "amount": null, "to": "acct-1"}`},
	{"amount missing", `{"type": "transfer", "to": "acct-1"}`},
	{"amount bool", `{"type": "transfer", "amount": true, "to": "acct-1"}`},
	{"exponent", `{"type": "transfer", "amount": 1e5, "to": "acct-1"}`},
	{"trailing zero fraction", `{"type": "transfer", "amount": 20000.0, "to": "acct-1"}`},
	{"lossy decimal", `{"type": "transfer", "amount": 10000.0000000000001, "to": "acct-1"}`},
	{"lossy integer", `{"type": "transfer", "amount": 9007199254740993, "to": "acct-1"}`},
	{"overflow", `{"type": "transfer", "amount": 1e400, "to": "acct-1"}`},
	{"NaN bare", `{"type": "transfer", "amount": NaN, "to": "acct-1"}`},
	{"NaN string", `{"type": "transfer", "amount": "NaN", "to": "acct-1"}`},
	{"Infinity bare", `{"type": "transfer", "amount": Infinity, "to": "acct-1"}`},
	{"minus Infinity", `{"type": "transfer", "amount": -Infinity, "to": "acct-1"}`},
	{"Infinity string", `{"type": "transfer", "amount": "Infinity", "to": "acct-1"}`},
	{"hex number", `{"type": "transfer", "amount": 0x4E20, "to": "acct-1"}`},
	{"leading plus", `{"type": "transfer", "amount": +20000, "to": "acct-1"}`},
	{"leading zero", `{"type": "transfer", "amount": 020000, "to": "acct-1"}`},
	{"trailing garbage", `{"type": "transfer", "amount": 20000, "to": "acct-1"} {"amount": 5}`},
	{"comment", `{"type": "transfer", /* 5 */ "amount": 20000, "to": "acct-1"}`},
	{"single quotes", `{'type': 'transfer', 'amount': 20000}`},
	{"lone surrogate", `{"type": "transfer\ud800", "amount": 500, "to": "acct-1"}`},
}

func TestBypassAttempts(t *testing.T) {
	payments, err := loadDir("../examples/payments")
	if err != nil {
		t.Fatal(err)
	}
	policies := map[string]*policy.Policy{
		"default-deny": mustPolicy(t, policy.Options{}, defaultDeny),
		"payments":     payments,
	}
	for pname, p := range policies {
		for _, a := range bypassAttempts {
			body := `{"action": ` + a.action + `, "agent": {"id": "agent-42", "roles": ["payments"]}, "now": "2026-11-22T10:00:00Z"}`
			req, err := policy.DecodeRequest([]byte(body))
			if err != nil {
				continue // rejected at the edge: no decision, no action
			}
			if d := p.Evaluate(req); d.Decision == policy.Allow {
				t.Errorf("%s: %s: %s was allowed (%s, rules %v)", pname, a.name, a.action, d.Reason, d.Rules)
			}
		}
	}
	// The same policies do allow the honest small transfer: the table is not
	// passing because everything is denied.
	honest := mustRequest(t, `{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}, "agent": {"id": "agent-42", "roles": ["payments"]}, "now": "2026-11-22T10:00:00Z"}`)
	for pname, p := range policies {
		if d := p.Evaluate(honest); d.Decision != policy.Allow {
			t.Errorf("%s: the honest transfer of 500 got %s (%v), want allow", pname, d.Decision, d.Errors)
		}
	}
}

// TestEnvelopeStrict checks the envelope around the action: unknown and
// mistyped fields are errors, not ignored.
func TestEnvelopeStrict(t *testing.T) {
	bad := []string{
		`{"action": {"type": "transfer"}, "now": "2026-11-22T10:00:00Z", "agnet": {}}`,
		`{"action": {"type": "transfer"}, "now": "2026-11-22T10:00:00Z", "agent": {"id": "a", "role": "admin"}}`,
		`{"action": {"type": "transfer"}, "now": "yesterday"}`,
		`{"action": {"type": "transfer"}}`,
		`{"now": "2026-11-22T10:00:00Z"}`,
		`{"action": "transfer", "now": "2026-11-22T10:00:00Z"}`,
		`{"action": {"type": ""}, "now": "2026-11-22T10:00:00Z"}`,
		`{"action": {"type": "` + strings.Repeat("a", 129) + `"}, "now": "2026-11-22T10:00:00Z"}`,
		"\xef\xbb\xbf" + `{"action": {"type": "transfer"}, "now": "2026-11-22T10:00:00Z"}`,
		`{"action": {"type": "transfer", "memo": "` + "\xff" + `"}, "now": "2026-11-22T10:00:00Z"}`,
		`{"action": {"type": "transfer", "n": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}, "now": "2026-11-22T10:00:00Z"}`,
		`{"action": {"type": "transfer"}, "now": "2026-11-22T10:00:00Z", "session": {"history": [{"decision": "allow"}]}}`,
	}
	for _, b := range bad {
		if _, err := policy.DecodeRequest([]byte(b)); err == nil {
			t.Errorf("%.80q: accepted, want an error", b)
		}
	}
}

func TestActionHashCanonical(t *testing.T) {
	a := mustRequest(t, `{"action": {"to": "acct-1", "type": "transfer", "amount": 20000.0}, "now": "2026-11-22T10:00:00Z"}`)
	b := mustRequest(t, `{"now": "2026-11-22T10:00:00Z", "action": {"type":"transfer","amount":2e4,"to":"acct-1"}}`)
	if a.Action.Hash != b.Action.Hash {
		t.Fatalf("the same action in two spellings hashed differently:\n%s\n%s", a.Action.JSON, b.Action.JSON)
	}
	if got, want := string(a.Action.JSON), `{"amount":20000,"to":"acct-1","type":"transfer"}`; got != want {
		t.Fatalf("canonical form: got %s, want %s", got, want)
	}
}

func loadDir(dir string) (*policy.Policy, error) {
	return policy.Load(os.DirFS(dir), policy.Options{})
}
