package policy_test

import (
	"fmt"
	"log"

	"github.com/rulelock/rulelock/policy"
)

// Example compiles the seed article's rule, exactly as written, under a
// default-allow header, and decides two transfers: the one over $10,000 is
// denied with the rule's message, the other is allowed by the default.
func Example() {
	src := []byte(`policy "seed" {
  default: allow
}

rule "NoHighValueTransfers" {
precondition: action.type == "transfer"
condition: action.amount <= 10000
deny: "Transfers over $10,000 require human approval"
}
`)
	p, err := policy.FromSources([]policy.Source{{Name: "seed.rules", Data: src}}, policy.Options{})
	if err != nil {
		log.Fatal(err) // file:line:col: what, for each error
	}
	for _, amount := range []int{20000, 500} {
		req, err := policy.DecodeRequest(fmt.Appendf(nil,
			`{"action": {"type": "transfer", "amount": %d, "to": "acct-9"}, "now": "2026-11-22T10:00:00Z"}`, amount))
		if err != nil {
			log.Fatal(err)
		}
		d := p.Evaluate(req)
		fmt.Printf("%d: %s (%s)", amount, d.Decision, d.Reason)
		for _, r := range d.Rules {
			fmt.Printf(" %s: %q", r.Name, r.Message)
		}
		fmt.Println()
	}
	// Output:
	// 20000: deny (denied_by_rule) NoHighValueTransfers: "Transfers over $10,000 require human approval"
	// 500: allow (default_allow)
}

// Example_errors shows how a policy that does not compile is reported:
// each error at its file:line:col.
func Example_errors() {
	src := []byte(`rule "R" {
  precondition: action.type == "transfer"
  condition: action.amount <= limit
  deny: "too much"
}
`)
	_, err := policy.FromSources([]policy.Source{{Name: "bad.rules", Data: src}}, policy.Options{})
	fmt.Println(err)
	// Output:
	// bad.rules:3:31: undeclared reference to 'limit'
}
