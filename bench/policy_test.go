package bench

// Policy evaluation: rulelock's engine (package policy, CEL underneath)
// against OPA evaluating the same rules written in Rego, in the same run.
// Each benchmark has the sub-benchmarks rulelock and opa, so that benchstat
// puts them side by side, and opa-parsed-input for reference:
//
//	cd bench && go test -run '^$' -bench 'SeedRule|HundredRules|Counterparty' -count 10 -benchmem .
//
// Both sides get their input built once, outside the timed loop: rulelock a
// *policy.Request, OPA the same request as a map[string]any passed with
// rego.EvalInput (on every Eval OPA round-trips it through JSON and converts
// it to its own values; rulelock reads the request's Go values directly).
// opa-parsed-input gives OPA its input already converted (ast.Value), so
// it measures OPA's evaluation alone. Before the timed loops each benchmark
// checks that the engines reach the same decision.
// docs/benchmarks.md has the numbers.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/rulelock/rulelock/policy"
)

// sink keeps the compiler from discarding the evaluations.
var sink any

// benchNow is the request time of every benchmark.
var benchNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// compileRules compiles one .rules source.
func compileRules(b testing.TB, name, src string) *policy.Policy {
	b.Helper()
	p, err := policy.FromSources([]policy.Source{{Name: name, Data: []byte(src)}}, policy.Options{})
	if err != nil {
		b.Fatalf("compile %s: %v", name, err)
	}
	return p
}

// prepareRego prepares the query data.bench.decision over one module.
// examplePolicy compiles the policy of examples/<name>.
func examplePolicy(tb testing.TB, name string) *policy.Policy {
	tb.Helper()
	srcs, err := policy.ReadSources(os.DirFS(filepath.Join("..", "examples", name)))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := policy.FromSources(srcs, policy.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func prepareRego(b testing.TB, name, module string) rego.PreparedEvalQuery {
	b.Helper()
	pq, err := rego.New(
		rego.Query("data.bench.decision"),
		rego.Module(name, module),
	).PrepareForEval(context.Background())
	if err != nil {
		b.Fatalf("prepare %s: %v", name, err)
	}
	return pq
}

// newAction builds a canonical action, numbers as float64.
func newAction(b testing.TB, fields map[string]any) policy.Action {
	b.Helper()
	a, err := policy.NewAction(fields)
	if err != nil {
		b.Fatalf("action: %v", err)
	}
	return a
}

// regoDecision evaluates the prepared query once and returns the decision.
func regoDecision(ctx context.Context, pq rego.PreparedEvalQuery, input rego.EvalOption) (string, error) {
	rs, err := pq.Eval(ctx, input)
	if err != nil {
		return "", err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return "", fmt.Errorf("want one result, got %v", rs)
	}
	s, ok := rs[0].Expressions[0].Value.(string)
	if !ok {
		return "", fmt.Errorf("decision is %T, not a string", rs[0].Expressions[0].Value)
	}
	return s, nil
}

// runPair runs the rulelock and opa sub-benchmarks of one case, after
// checking that both engines decide want.
func runPair(b *testing.B, p *policy.Policy, req *policy.Request, pq rego.PreparedEvalQuery, input map[string]any, want policy.Effect) {
	b.Helper()
	ctx := context.Background()
	if d := p.Evaluate(req); d.Decision != want {
		b.Fatalf("rulelock decides %s (%s, rules %v, errors %v), want %s", d.Decision, d.Reason, d.Rules, d.Errors, want)
	}
	parsed, err := ast.InterfaceToValue(input)
	if err != nil {
		b.Fatalf("opa input: %v", err)
	}
	for _, in := range []rego.EvalOption{rego.EvalInput(input), rego.EvalParsedInput(parsed)} {
		got, err := regoDecision(ctx, pq, in)
		if err != nil {
			b.Fatalf("opa: %v", err)
		}
		if got != string(want) {
			b.Fatalf("opa decides %q, want %q", got, want)
		}
	}
	b.Run("rulelock", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = p.Evaluate(req)
		}
	})
	b.Run("opa", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rs, err := pq.Eval(ctx, rego.EvalInput(input))
			if err != nil {
				b.Fatal(err)
			}
			sink = rs
		}
	})
	// For reference, not a target: OPA with the input converted to its own
	// values once, outside the loop, as a caller that keeps ast.Values would.
	b.Run("opa-parsed-input", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rs, err := pq.Eval(ctx, rego.EvalParsedInput(parsed))
			if err != nil {
				b.Fatal(err)
			}
			sink = rs
		}
	})
}

// --- (a) the seed rule --------------------------------------------------

const seedRego = `package bench

# NoHighValueTransfers: a transfer applies; unless its amount is at most
# 10000 (a missing or non-numeric amount fails closed), it is denied.
deny contains "Transfers over $10,000 require human approval" if {
	input.action.type == "transfer"
	not within_limit
}

within_limit if input.action.amount <= 10000

default decision := "allow"

decision := "deny" if count(deny) > 0
`

// BenchmarkSeedRule: the seed rule, verbatim from examples/seed/seed.rules
// (default allow), on a transfer of 20000: denied.
func BenchmarkSeedRule(b *testing.B) {
	src, err := os.ReadFile("../examples/seed/seed.rules")
	if err != nil {
		b.Fatal(err)
	}
	p := compileRules(b, "seed.rules", string(src))
	fields := map[string]any{"type": "transfer", "amount": 20000.0, "to": "acct-9"}
	req := &policy.Request{
		Action: newAction(b, fields),
		Agent:  policy.Agent{ID: "agent-1", Roles: []string{"payments"}},
		Now:    benchNow,
	}
	input := map[string]any{
		"action": fields,
		"agent":  map[string]any{"id": "agent-1", "roles": []any{"payments"}},
	}
	runPair(b, p, req, prepareRego(b, "seed.rego", seedRego), input, policy.Deny)
}

// --- (b) 100 rules over 20 action types ---------------------------------

// actionTypes are the 20 action types of the hundred-rule policy.
var actionTypes = []string{
	"transfer", "refund", "payout", "invoice_pay", "card_charge",
	"card_refund", "fx_convert", "trade", "loan_disburse", "loan_repay",
	"payroll_run", "vendor_pay", "tax_remit", "escrow_release", "chargeback",
	"wire_out", "ach_debit", "ach_credit", "crypto_withdraw", "fee_collect",
}

// hundredRules generates the policy (deny by default) in both languages:
// for each action type, five rules over amount, to and currency: an allow
// rule, a hard limit, a currency allow-list, a blocked-payee prefix and an
// approval threshold. The limits differ per type.
func hundredRules() (rules, regoSrc string) {
	var r, g strings.Builder
	r.WriteString("policy \"hundred\" {\n  default: deny\n}\n")
	g.WriteString("package bench\n\n")
	for i, t := range actionTypes {
		limit := 10000 * (i + 1)
		approve := limit / 4
		blocked := fmt.Sprintf("blocked-%02d-", i)
		fmt.Fprintf(&r, `
rule "%[1]s_allow" {
  precondition: action.type == "%[1]s"
  condition: action.amount > 0
  allow
}

rule "%[1]s_limit" {
  precondition: action.type == "%[1]s"
  condition: action.amount <= %[2]d
  deny: "%[1]s over %[2]d"
}

rule "%[1]s_currency" {
  precondition: action.type == "%[1]s"
  condition: action.currency in ["USD", "EUR", "GBP", "CHF"]
  deny: "%[1]s in an unsupported currency"
}

rule "%[1]s_blocked_payee" {
  precondition: action.type == "%[1]s"
  condition: !action.to.startsWith("%[3]s")
  deny: "%[1]s to a blocked payee"
}

rule "%[1]s_approval" {
  precondition: action.type == "%[1]s"
  condition: action.amount <= %[4]d
  require_approval {
    approvers: 1
    groups: ["payments-approvers"]
    within: 4h
    message: "%[1]s over %[4]d needs approval"
  }
}
`, t, limit, blocked, approve)
		fmt.Fprintf(&g, `allow if {
	input.action.type == "%[1]s"
	input.action.amount > 0
}

deny contains "%[1]s over %[2]d" if {
	input.action.type == "%[1]s"
	not amount_at_most(%[2]d)
}

deny contains "%[1]s in an unsupported currency" if {
	input.action.type == "%[1]s"
	not currency_supported
}

deny contains "%[1]s to a blocked payee" if {
	input.action.type == "%[1]s"
	not payee_not_blocked("%[3]s")
}

approval contains "%[1]s over %[4]d needs approval" if {
	input.action.type == "%[1]s"
	not amount_at_most(%[4]d)
}

`, t, limit, blocked, approve)
	}
	// The conditions are helpers so that a missing field fails closed
	// (not f(x) holds when f is undefined), as in rulelock.
	g.WriteString(`amount_at_most(limit) if input.action.amount <= limit

currency_supported if input.action.currency in {"USD", "EUR", "GBP", "CHF"}

payee_not_blocked(prefix) if startswith(input.action.to, prefix) == false

default decision := "deny"

decision := "deny" if {
	count(deny) > 0
} else := "require_approval" if {
	count(approval) > 0
} else := "allow" if {
	allow
}
`)
	return r.String(), g.String()
}

// BenchmarkHundredRules: 100 rules over 20 action types; the action
// (type 11 of 20) matches the five rules of its type, all of which are
// evaluated, and is allowed.
func BenchmarkHundredRules(b *testing.B) {
	rules, regoSrc := hundredRules()
	p := compileRules(b, "hundred.rules", rules)
	if n := len(p.Rules()); n != 100 {
		b.Fatalf("%d rules, want 100", n)
	}
	fields := map[string]any{"type": "payroll_run", "amount": 2500.0, "to": "acct-42", "currency": "EUR"}
	req := &policy.Request{
		Action: newAction(b, fields),
		Agent:  policy.Agent{ID: "agent-1", Roles: []string{"payments"}},
		Now:    benchNow,
	}
	input := map[string]any{
		"action": fields,
		"agent":  map[string]any{"id": "agent-1", "roles": []any{"payments"}},
	}
	runPair(b, p, req, prepareRego(b, "hundred.rego", regoSrc), input, policy.Allow)
}

// --- (c) the counterparty rule over a 50-entry history ------------------

// counterpartyRules are payments.rules' two rules for bank detail changes,
// verbatim, under a default-deny header.
const counterpartyRules = `policy "counterparty" {
  default: deny
}

rule "AllowBankDetailChanges" {
  precondition: action.type == "update_counterparty_bank_details"
  allow
}

// Case study rule 2: no change to a counterparty's bank details without a
// successful verification of that counterparty earlier in the session.
rule "VerifyBeforeBankDetailChange" {
  precondition: action.type == "update_counterparty_bank_details"
  condition: session.succeeded("verify_counterparty", {"counterparty": action.counterparty})
  deny: "Bank details change only after verify_counterparty succeeded for the same counterparty in this session"
}
`

// counterpartyRego is the same in Rego, with session.succeeded's meaning:
// an earlier entry, allowed (allow or approved) and successful, of type
// verify_counterparty for the same counterparty, at or before now. Times
// are given to OPA as Unix nanoseconds so that it need not parse them.
const counterpartyRego = `package bench

allowed_decisions := {"allow", "approved"}

verified(cp) if {
	some h in input.session.history
	h.action.type == "verify_counterparty"
	h.action.counterparty == cp
	allowed_decisions[h.decision]
	h.outcome == "success"
	h.time_ns <= input.now_ns
}

allow if input.action.type == "update_counterparty_bank_details"

deny contains "Bank details change only after verify_counterparty succeeded for the same counterparty in this session" if {
	input.action.type == "update_counterparty_bank_details"
	not verified(input.action.counterparty)
}

default decision := "deny"

decision := "deny" if {
	count(deny) > 0
} else := "allow" if {
	allow
}
`

// BenchmarkCounterparty: a bank-details change for cp-7 whose one
// successful verification is the third of 50 history entries. rulelock's
// session.succeeded scans the history from the newest entry, so this is
// close to its worst case (47 entries passed over); the other 49 entries
// are transfers, trades and verifications of other counterparties.
func BenchmarkCounterparty(b *testing.B) {
	p := compileRules(b, "counterparty.rules", counterpartyRules)
	const n, match = 50, 2
	var hist []policy.HistoryEntry
	var regoHist []any
	for i := range n {
		var a map[string]any
		switch {
		case i == match:
			a = map[string]any{"type": "verify_counterparty", "counterparty": "cp-7"}
		case i%3 == 0:
			a = map[string]any{"type": "verify_counterparty", "counterparty": fmt.Sprintf("cp-%d", 100+i)}
		case i%3 == 1:
			a = map[string]any{"type": "transfer", "amount": float64(100 * (i + 1)), "to": fmt.Sprintf("acct-%d", i)}
		default:
			a = map[string]any{"type": "trade", "amount": float64(1000 * (i + 1)), "counterparty": "cp-7"}
		}
		a = newAction(b, a).Fields
		t := benchNow.Add(-time.Duration(n-i) * time.Minute)
		hist = append(hist, policy.HistoryEntry{Action: a, Decision: "allow", Outcome: "success", Time: t})
		regoHist = append(regoHist, map[string]any{"action": a, "decision": "allow", "outcome": "success", "time_ns": t.UnixNano()})
	}
	fields := map[string]any{"type": "update_counterparty_bank_details", "counterparty": "cp-7", "iban": "DE89370400440532013000"}
	req := &policy.Request{
		Action:  newAction(b, fields),
		Agent:   policy.Agent{ID: "agent-1", Roles: []string{"payments"}},
		Session: policy.Session{ID: "session-1", History: hist},
		Now:     benchNow,
	}
	input := map[string]any{
		"action":  fields,
		"agent":   map[string]any{"id": "agent-1", "roles": []any{"payments"}},
		"session": map[string]any{"id": "session-1", "history": regoHist},
		"now_ns":  benchNow.UnixNano(),
	}
	pq := prepareRego(b, "counterparty.rego", counterpartyRego)

	// Without the early verification both engines deny: the rule is live.
	noMatch := append([]policy.HistoryEntry(nil), hist...)
	noMatch[match].Action = map[string]any{"type": "verify_counterparty", "counterparty": "cp-8"}
	if d := p.Evaluate(&policy.Request{Action: req.Action, Agent: req.Agent, Session: policy.Session{ID: "s", History: noMatch}, Now: benchNow}); d.Decision != policy.Deny {
		b.Fatalf("rulelock without the verification decides %s, want deny", d.Decision)
	}
	regoNoMatch := append([]any(nil), regoHist...)
	regoNoMatch[match] = map[string]any{"action": noMatch[match].Action, "decision": "allow", "outcome": "success", "time_ns": hist[match].Time.UnixNano()}
	if got, err := regoDecision(context.Background(), pq, rego.EvalInput(map[string]any{"action": fields, "session": map[string]any{"history": regoNoMatch}, "now_ns": benchNow.UnixNano()})); err != nil || got != "deny" {
		b.Fatalf("opa without the verification decides %q (%v), want deny", got, err)
	}

	runPair(b, p, req, pq, input, policy.Allow)
}

// TestPolicyParity checks that the Rego versions decide as rulelock does
// beyond the one request each benchmark times.
func TestPolicyParity(t *testing.T) {
	src, err := os.ReadFile("../examples/seed/seed.rules")
	if err != nil {
		t.Fatal(err)
	}
	rules, regoSrc := hundredRules()
	cases := []struct {
		name    string
		p       *policy.Policy
		pq      rego.PreparedEvalQuery
		actions []map[string]any
	}{
		{"seed", compileRules(t, "seed.rules", string(src)), prepareRego(t, "seed.rego", seedRego), []map[string]any{
			{"type": "transfer", "amount": 20000.0, "to": "a"},
			{"type": "transfer", "amount": 10000.0, "to": "a"},
			{"type": "transfer", "amount": 500.0},
			{"type": "transfer", "to": "a"},
			{"type": "transfer", "amount": "20000"},
			{"type": "trade", "amount": 20000.0},
		}},
		{"hundred", compileRules(t, "hundred.rules", rules), prepareRego(t, "hundred.rego", regoSrc), []map[string]any{
			{"type": "payroll_run", "amount": 2500.0, "to": "acct-42", "currency": "EUR"},
			{"type": "payroll_run", "amount": 50000.0, "to": "acct-42", "currency": "EUR"},
			{"type": "payroll_run", "amount": 200000.0, "to": "acct-42", "currency": "EUR"},
			{"type": "payroll_run", "amount": 2500.0, "to": "acct-42", "currency": "JPY"},
			{"type": "payroll_run", "amount": 2500.0, "to": "blocked-10-x", "currency": "EUR"},
			{"type": "payroll_run", "amount": 2500.0, "to": "blocked-11-x", "currency": "EUR"},
			{"type": "payroll_run", "amount": 2500.0, "currency": "EUR"},
			{"type": "payroll_run", "amount": 2500.0, "to": "acct-42"},
			{"type": "payroll_run", "to": "acct-42", "currency": "EUR"},
			{"type": "payroll_run", "amount": "2500", "to": "acct-42", "currency": "EUR"},
			{"type": "payroll_run", "amount": 2500.0, "to": 42.0, "currency": "EUR"},
			{"type": "payroll_run", "amount": -1.0, "to": "acct-42", "currency": "EUR"},
			{"type": "transfer", "amount": 5000.0, "to": "acct-1", "currency": "USD"},
			{"type": "transfer", "amount": 5000.0, "to": "acct-1", "currency": "USD", "memo": "x"},
			{"type": "fee_collect", "amount": 150000.0, "to": "acct-1", "currency": "CHF"},
			{"type": "unknown_type", "amount": 1.0, "to": "acct-1", "currency": "USD"},
		}},
	}
	cp := compileRules(t, "counterparty.rules", counterpartyRules)
	cpq := prepareRego(t, "counterparty.rego", counterpartyRego)
	change := map[string]any{"type": "update_counterparty_bank_details", "counterparty": "cp-7", "iban": "DE89370400440532013000"}
	for _, h := range []struct {
		cp, decision, outcome string
		at                    time.Duration // before now
	}{
		{"cp-7", "allow", "success", time.Minute},
		{"cp-7", "approved", "success", time.Minute},
		{"cp-7", "allow", "success", 0},
		{"cp-7", "allow", "success", -time.Minute}, // after now
		{"cp-7", "allow", "failure", time.Minute},
		{"cp-7", "allow", "", time.Minute},
		{"cp-7", "deny", "success", time.Minute},
		{"cp-7", "require_approval", "success", time.Minute},
		{"cp-8", "allow", "success", time.Minute},
	} {
		verify := newAction(t, map[string]any{"type": "verify_counterparty", "counterparty": h.cp}).Fields
		at := benchNow.Add(-h.at)
		d := cp.Evaluate(&policy.Request{Action: newAction(t, change), Now: benchNow, Session: policy.Session{History: []policy.HistoryEntry{
			{Action: verify, Decision: h.decision, Outcome: h.outcome, Time: at},
		}}})
		got, err := regoDecision(context.Background(), cpq, rego.EvalInput(map[string]any{
			"action":  change,
			"session": map[string]any{"history": []any{map[string]any{"action": verify, "decision": h.decision, "outcome": h.outcome, "time_ns": at.UnixNano()}}},
			"now_ns":  benchNow.UnixNano(),
		}))
		if err != nil {
			t.Fatalf("counterparty %+v: opa: %v", h, err)
		}
		if got != string(d.Decision) {
			t.Errorf("counterparty %+v: rulelock %s, opa %s", h, d.Decision, got)
		}
	}
	for _, c := range cases {
		for _, fields := range c.actions {
			d := c.p.Evaluate(&policy.Request{Action: newAction(t, fields), Now: benchNow})
			got, err := regoDecision(context.Background(), c.pq, rego.EvalInput(map[string]any{"action": fields}))
			if err != nil {
				t.Fatalf("%s %v: opa: %v", c.name, fields, err)
			}
			if got != string(d.Decision) {
				t.Errorf("%s %v: rulelock %s (%v), opa %s", c.name, fields, d.Decision, d.Rules, got)
			}
		}
	}
}
