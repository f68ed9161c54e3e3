package policy_test

import (
	"testing"

	"github.com/rulelock/rulelock/policy"
)

// BenchmarkSeed is a quick in-package check; the side-by-side comparison
// with OPA lives in bench/.
func BenchmarkSeed(b *testing.B) {
	p := mustPolicy(b, policy.Options{}, "policy \"p\" {\n  default: allow\n}\n"+seed)
	req := mustRequest(b, `{"action": {"type": "transfer", "amount": 20000, "to": "acct-9"}, "now": "2026-11-22T10:00:00Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		if p.Evaluate(req).Decision != policy.Deny {
			b.Fatal("not denied")
		}
	}
}
