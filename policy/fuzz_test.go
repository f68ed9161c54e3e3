package policy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rulelock/rulelock/policy"
)

// FuzzFormat checks that any file that parses formats to text that parses to
// the same formatted text: fmt of fmt is the identity.
func FuzzFormat(f *testing.F) {
	f.Add([]byte(seed))
	files, _ := filepath.Glob("../examples/*/*.rules")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("policy \"p\" {\n  default: allow\n}\n# c\nrule \"x\" { // c\n  condition: a &&\n  b\n  require_approval {\n    within: 90s\n    groups: [\"a\",]\n  }\n}\n"))
	f.Add([]byte("action \"t\" {\n  a?: int\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		file, err := policy.Parse("f.rules", src)
		if err != nil {
			return
		}
		once := policy.Format(file)
		file2, err := policy.Parse("f.rules", once)
		if err != nil {
			t.Fatalf("formatted output does not parse: %v\ninput:\n%s\nformatted:\n%s", err, src, once)
		}
		twice := policy.Format(file2)
		if !bytes.Equal(once, twice) {
			t.Fatalf("fmt is not idempotent\nonce:\n%s\ntwice:\n%s", once, twice)
		}
	})
}

// FuzzDecodeRequest checks that no envelope makes the decoder or the
// evaluator panic, and that a decoded action's canonical form decodes to
// itself.
func FuzzDecodeRequest(f *testing.F) {
	p, err := loadDir("../examples/payments")
	if err != nil {
		f.Fatal(err)
	}
	for _, a := range bypassAttempts {
		f.Add([]byte(`{"action": ` + a.action + `, "now": "2026-11-22T10:00:00Z"}`))
	}
	f.Add([]byte(`{"action": {"type": "update_counterparty_bank_details", "counterparty": "acme", "iban": "X"}, "session": {"id": "s", "history": [{"action": {"type": "verify_counterparty", "counterparty": "acme"}, "decision": "allow", "outcome": "success", "time": "2026-11-22T09:00:00Z"}]}, "now": "2026-11-22T10:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := policy.DecodeRequest(body)
		if err != nil {
			return
		}
		d := p.Evaluate(req)
		if d.ActionHash != req.Action.HashString() {
			t.Fatalf("decision names hash %s, request has %s", d.ActionHash, req.Action.HashString())
		}
		again, err := policy.DecodeRequest(append(append([]byte(`{"now": "2026-11-22T10:00:00Z", "action": `), req.Action.JSON...), '}'))
		if err != nil {
			t.Fatalf("canonical action %s does not decode: %v", req.Action.JSON, err)
		}
		if !bytes.Equal(again.Action.JSON, req.Action.JSON) {
			t.Fatalf("canonical form is not stable: %s then %s", req.Action.JSON, again.Action.JSON)
		}
	})
}
