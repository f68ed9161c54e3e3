// Package policy implements rulelock's policy language: declarative rules
// whose expressions are CEL (cel.dev), parsed, type-checked and compiled
// once, then evaluated against one request at a time to decide whether an
// agent's action is allowed, denied or held for human approval. It is the
// engine the gateway, `rulelock eval`, `rulelock test`, `rulelock replay`
// and `rulelock verify --replay` all use, and it can be embedded on its
// own: it imports nothing network-facing and keeps no state between calls.
// docs/policy-language.md is the full reference; this comment is the
// contract in brief.
//
// # Sources
//
// A policy is one .rules file or the files at the root of a directory
// (Load, ReadSources, FromSources): every .rules file, and every data
// document NAME.json, NAME.yaml or NAME.yml, which expressions see as
// data.NAME. Test files (*_test.yaml, *_test.yml, *_test.json) belong to
// package policytest, not to the policy; subdirectories are not read. Files
// are UTF-8, at most 4 MiB each. Data documents are decoded with the
// strict JSON decoder requests use (YAML converted first): duplicate keys
// are errors and numbers are doubles.
//
// # Rules
//
// A file holds at most one policy header, action schemas, rules and
// invariants:
//
//	policy "payments" {
//	  default: deny                  // the decision when no rule fired
//	}
//
//	rule "NoHighValueTransfers" {
//	  precondition: action.type == "transfer"   // when the rule applies
//	  condition: action.amount <= 10000         // when it is satisfied
//	  deny: "Transfers over $10,000 require human approval"
//	}
//
// A rule applies when its precondition holds (no precondition: always). An
// applicable rule whose condition does not hold (or that has none) fires its
// outcome: deny: "message", require_approval { approvers, groups, within,
// message }, or allow. A postcondition checks an executed action's result
// (CheckResult); an invariant is a rule for every action; mode: shadow
// makes a rule reported but never enforced. Expressions see action, agent,
// session, principal, global, instruction, reasoning, now, data and, in
// postconditions, result.
//
// # Decisions
//
// Evaluate returns a Decision, in this order of precedence: deny if an
// enforced rule denied, else require_approval if one asked for approval,
// else allow if an allow rule fired, else the policy's default. Every fired
// rule is listed with its message. Evaluation fails closed: an expression
// that errors makes a deny or require_approval rule deny, and an allow rule
// not allow; exceeding Options.CostLimit denies (cost_exceeded); an action
// that does not match its declared schema is denied before any rule
// (schema_mismatch). Decision.Reason is a stable code (the Reason
// constants). The same Policy, Request and State always give the same
// Decision: time comes only from Request.Now, and Policy.Digest names the
// exact sources, so a recorded decision can be replayed.
//
// # Errors
//
// Parse and compile errors are an ErrorList of *Error, each printed
// file:line:col: message, with line and column 1-based and the column in
// bytes. Lint warnings (Policy.Warnings) use the same form.
//
// # Example
//
// Compile the seed policy and decide a $20,000 transfer (see Example):
//
//	p, err := policy.FromSources([]policy.Source{{Name: "seed.rules", Data: src}}, policy.Options{})
//	req, err := policy.DecodeRequest([]byte(`{"action": {"type": "transfer", "amount": 20000, "to": "acct-9"}, "now": "2026-11-22T10:00:00Z"}`))
//	d := p.Evaluate(req)
//	// d.Decision == policy.Deny, d.Reason == policy.ReasonDeniedByRule
package policy
