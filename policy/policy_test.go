package policy_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"weak"

	"github.com/rulelock/rulelock/policy"
)

const seed = `rule "NoHighValueTransfers" {
precondition: action.type == "transfer"
condition: action.amount <= 10000
deny: "Transfers over $10,000 require human approval"
}
`

func mustPolicy(t testing.TB, opts policy.Options, src string) *policy.Policy {
	t.Helper()
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(src)}}, opts)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return p
}

func mustRequest(t testing.TB, js string) *policy.Request {
	t.Helper()
	r, err := policy.DecodeRequest([]byte(js))
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	return r
}

func TestSeedParsesVerbatim(t *testing.T) {
	f, err := policy.Parse("seed.rules", []byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Decls) != 1 {
		t.Fatalf("got %d declarations, want 1", len(f.Decls))
	}
	r, ok := f.Decls[0].(*policy.Rule)
	if !ok {
		t.Fatalf("got %T, want *policy.Rule", f.Decls[0])
	}
	got := []string{r.Name, r.Precondition.Text, r.Condition.Text, string(r.Outcome), r.Message}
	want := []string{"NoHighValueTransfers", `action.type == "transfer"`, "action.amount <= 10000", "deny", "Transfers over $10,000 require human approval"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %q, want %q", got[i], want[i])
		}
	}
	if r.Precondition.Pos.Line != 2 || r.Precondition.Pos.Col != 15 {
		t.Errorf("precondition at %v, want 2:15", r.Precondition.Pos)
	}
}

func TestStaticCostRejected(t *testing.T) {
	_, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(`rule "Cubic" {
  precondition: action.type == "scan"
  condition: action.items.all(a, action.items.all(b, action.items.all(c, a + b + c >= 0.0)))
  deny: "x"
}
`)}}, policy.Options{})
	if err == nil || !strings.Contains(err.Error(), "p.rules:3:14: rule \"Cubic\" is too expensive") {
		t.Fatalf("got %v, want a too-expensive error at p.rules:3:14", err)
	}
}

func TestRuntimeCostExceeded(t *testing.T) {
	p := mustPolicy(t, policy.Options{CostLimit: 1000, StaticCostLimit: 1 << 62}, `policy "p" {
  default: allow
}
rule "Quadratic" {
  precondition: action.type == "scan"
  condition: action.items.all(a, action.items.all(b, a + b >= 0.0))
  allow
}
`)
	items := make([]string, 100)
	for i := range items {
		items[i] = fmt.Sprint(i)
	}
	d := p.Evaluate(mustRequest(t, `{"action": {"type": "scan", "items": [`+strings.Join(items, ",")+`]}, "now": "2026-11-22T10:00:00Z"}`))
	if d.Decision != policy.Deny || d.Reason != policy.ReasonCostExceeded {
		t.Fatalf("got %s/%s, want deny/cost_exceeded", d.Decision, d.Reason)
	}
	// The same rule over a short list stays within the limit and allows.
	d = p.Evaluate(mustRequest(t, `{"action": {"type": "scan", "items": [1, 2, 3]}, "now": "2026-11-22T10:00:00Z"}`))
	if d.Decision != policy.Allow {
		t.Fatalf("got %s (%v), want allow", d.Decision, d.Errors)
	}
}

func TestDeterministic(t *testing.T) {
	p := mustPolicy(t, policy.Options{}, `rule "Window" {
  precondition: action.type == "transfer"
  condition: session.total("transfer", "amount", {"to": action.to}, duration("1h")) + action.amount <= 100
  deny: "limit"
}
rule "Allow" {
  precondition: action.type == "transfer"
  allow
}
`)
	req := `{"action": {"type": "transfer", "amount": 60, "to": "x"}, "now": "2026-11-22T10:00:00Z",
	 "session": {"id": "s", "history": [{"action": {"type": "transfer", "amount": 50, "to": "x"}, "decision": "allow", "outcome": "success", "time": "2026-11-22T09:30:00Z"}]}}`
	var first []byte
	for i := 0; i < 20; i++ {
		b, _ := json.Marshal(p.Evaluate(mustRequest(t, req)))
		if first == nil {
			first = b
			continue
		}
		if string(b) != string(first) {
			t.Fatalf("evaluation %d differs:\n%s\n%s", i, b, first)
		}
	}
	var d policy.Decision
	json.Unmarshal(first, &d)
	if d.Decision != policy.Deny {
		t.Fatalf("got %s, want deny (50 earlier + 60 > 100)", d.Decision)
	}
	// An hour later the earlier transfer is outside the window.
	later := strings.Replace(req, `"now": "2026-11-22T10:00:00Z"`, `"now": "2026-11-22T10:31:00Z"`, 1)
	if d := p.Evaluate(mustRequest(t, later)); d.Decision != policy.Allow {
		t.Fatalf("got %s, want allow once the window passed", d.Decision)
	}
}

// TestIndex checks that only the rules for the action's type are evaluated.
func TestIndex(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "rule \"R%d\" {\n  precondition: action.type == \"t%d\"\n  condition: action.amount <= %d\n  deny: \"x\"\n}\n", i, i%20, 1000+i)
	}
	b.WriteString("rule \"Everywhere\" {\n  condition: action.amount >= 0\n  deny: \"negative\"\n}\n")
	p := mustPolicy(t, policy.Options{}, b.String())
	_, trace := p.Explain(mustRequest(t, `{"action": {"type": "t7", "amount": 5}, "now": "2026-11-22T10:00:00Z"}`))
	var got []string
	for _, s := range trace {
		got = append(got, s.Rule)
	}
	want := "R7 R27 R47 R67 R87 Everywhere"
	if strings.Join(got, " ") != want {
		t.Fatalf("evaluated %v, want %s", got, want)
	}
}

// TestPostcondition checks the example of docs/policy-language.md
// ("### postcondition") against results, and that a result nobody can read
// (policy.NoResult) satisfies no postcondition that reads it.
func TestPostcondition(t *testing.T) {
	p := mustPolicy(t, policy.Options{}, `rule "RefundMatchesRequest" {
  precondition: action.type == "refund"
  postcondition: result.status == "refunded" && result.amount == action.amount
  deny: "The upstream refunded a different amount"
}
rule "NoUpstreamError" {
  mode: shadow
  precondition: action.type == "refund"
  postcondition: !has(result.error)
  deny: "The upstream reported an error"
}
`)
	req := mustRequest(t, `{"action": {"type": "refund", "amount": 250}, "now": "2026-11-22T10:00:00Z"}`)
	tests := []struct {
		name   string
		result any
		want   string // each verdict: rule holds|violated[: error]
	}{
		{"the amount asked", map[string]any{"status": "refunded", "amount": 250.0},
			"RefundMatchesRequest holds, NoUpstreamError holds"},
		{"another amount", map[string]any{"status": "refunded", "amount": 25.0},
			"RefundMatchesRequest violated, NoUpstreamError holds"},
		{"an error", map[string]any{"status": "failed", "error": "card expired"},
			"RefundMatchesRequest violated, NoUpstreamError violated"},
		{"not an object", "refunded",
			"RefundMatchesRequest violated: no such key: status, NoUpstreamError holds"},
		{"no result", policy.NoResult{Reason: "the reply is not JSON"},
			"RefundMatchesRequest violated: no result: the reply is not JSON, NoUpstreamError violated: no result: the reply is not JSON"},
	}
	for _, tt := range tests {
		var got []string
		for _, v := range p.CheckResult(req, tt.result) {
			s := v.Rule + " holds"
			if !v.Holds {
				s = v.Rule + " violated"
				if v.Message == "" {
					t.Errorf("%s: %s violated without its message", tt.name, v.Rule)
				}
			}
			if v.Error != "" {
				s += ": " + v.Error
			}
			if v.Shadow != (v.Rule == "NoUpstreamError") {
				t.Errorf("%s: %s shadow %v", tt.name, v.Rule, v.Shadow)
			}
			got = append(got, s)
		}
		if g := strings.Join(got, ", "); g != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, g, tt.want)
		}
	}
	// Postcondition rules do not take part in the decision.
	if d := p.Evaluate(req); d.Decision != policy.Deny || d.Reason != policy.ReasonDefaultDeny || len(d.Rules) != 0 {
		t.Errorf("got %+v, want the default deny with no rule", d)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"rule \"x\" {\n  precondition: action.type == \"a\" && action.type == \"b\"\n  deny: \"x\"\n}\n", "p.rules:2:17: precondition of \"x\" can never hold"},
		{"rule \"x\" {\n  condition: action.amount\n  deny: \"x\"\n}\n", ""},
		{"rule \"x\" {\n  condition: 1 + 2\n  deny: \"x\"\n}\n", "p.rules:2:14: expression must be a bool, but it is int"},
		{"rule \"x\" {\n  deny: \"x\"\n  allow\n}\n", "p.rules:3:3: a rule has one outcome"},
		{"rule \"x\" {\n  condition: true\n}\n", "p.rules:1:1: rule \"x\" has no outcome"},
		{"invariant \"x\" {\n  precondition: true\n  deny: \"x\"\n}\n", "p.rules:2:17: invariant \"x\" applies to every action"},
		{"rule \"x\" {\n  allow\n}\n", "p.rules:1:1: allow rule \"x\" would allow every action"},
		{"policy \"p\" {\n  default: maybe\n}\n", "p.rules:2:12: default must be allow or deny"},
		{"action \"t\" {\n  n: integer\n}\n", "p.rules:2:6: unknown field type \"integer\""},
		{"rule \"x\" {\n  require_approval {\n    approvers: 0\n  }\n}\n", "p.rules:3:16: approvers must be a whole number from 1 to 16"},
		{"rule \"x\" {\n  deny: \"unterminated\n}\n", "p.rules:2:9: string not terminated"},
		{"rule \"x\" {\n  condition: now()\n  deny: \"x\"\n}\n", "p.rules:2:17: undeclared reference to 'now'"},
		// The stateful helpers' indexes must be known when compiling.
		{"rule \"x\" {\n  condition: agent.count(action.type, {}, duration(\"1h\")) < 3\n  deny: \"x\"\n}\n", "p.rules:2:26: agent.count: the action type must be a string literal"},
		{"rule \"x\" {\n  condition: global.total(\"t\", \"n\", action.m, duration(\"1h\")) < 3.0\n  deny: \"x\"\n}\n", "p.rules:2:37: global.total: the match must be a map literal"},
		{"rule \"x\" {\n  condition: session.count(\"t\", {action.k: 1}, duration(\"1h\")) < 3\n  deny: \"x\"\n}\n", "p.rules:2:33: session.count: the match must be a map literal"},
		{"rule \"x\" {\n  condition: principal.count(\"t\", {}, duration(action.w)) < 3\n  deny: \"x\"\n}\n", "p.rules:2:39: principal.count: the window must be a literal"},
		{"rule \"x\" {\n  postcondition: global.succeeded(\"t\", {})\n  deny: \"x\"\n}\n", "p.rules:2:18: global.succeeded: a postcondition sees the result, not earlier actions"},
		{"rule \"x\" {\n  condition: global.count(\"t\", {\"to\": action.to}, duration(\"1h\")) < 3\n  deny: \"x\"\n}\n", ""},
	}
	for _, tt := range tests {
		_, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(tt.src)}}, policy.Options{})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tt.want == "" {
			if err != nil {
				t.Errorf("%q: got %v, want no error", tt.src, err)
			}
			continue
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%q:\ngot  %v\nwant %s...", tt.src, got, tt.want)
		}
	}
}

// TestNoNetworkImports enforces that the policy engine stays embeddable: it
// imports nothing network-facing and not the audit log. (net/url and
// net/netip are parsers that cel-go uses; they open no connection.)
func TestNoNetworkImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/rulelock/rulelock/policy").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "net" || strings.HasPrefix(dep, "net/http") || dep == "net/rpc" || dep == "net/smtp" || dep == "crypto/tls" || strings.HasPrefix(dep, "google.golang.org/grpc"),
			strings.HasPrefix(dep, "github.com/rulelock/rulelock/audit"):
			t.Errorf("policy depends on %s", dep)
		}
	}
}

// TestRegressions pins down bugs found in review.
func TestRegressions(t *testing.T) {
	t.Run("in [] never holds", func(t *testing.T) {
		_, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte("rule \"x\" {\n  precondition: action.type in []\n  allow\n}\n")}}, policy.Options{})
		if err == nil || !strings.Contains(err.Error(), "can never hold") {
			t.Fatalf("got %v, want a can-never-hold error (it used to allow every action)", err)
		}
	})
	t.Run("digest ignores the directory", func(t *testing.T) {
		a := mustPolicyNamed(t, "a/p.rules", seed)
		b := mustPolicyNamed(t, "/elsewhere/p.rules", seed)
		if a.Digest() != b.Digest() {
			t.Fatalf("digests differ: %s %s", a.Digest(), b.Digest())
		}
	})
	t.Run("history entries need a time", func(t *testing.T) {
		_, err := policy.DecodeRequest([]byte(`{"action": {"type": "x"}, "now": "2026-11-22T10:00:00Z", "session": {"history": [{"action": {"type": "verify_counterparty", "counterparty": "acme"}, "decision": "allow", "outcome": "success"}]}}`))
		if err == nil || !strings.Contains(err.Error(), "time is required") {
			t.Fatalf("got %v, want time is required", err)
		}
	})
	t.Run("schema errors are deterministic", func(t *testing.T) {
		p := mustPolicy(t, policy.Options{}, "action \"t\" {\n  a: string\n}\n")
		first := ""
		for i := 0; i < 30; i++ {
			d := p.Evaluate(mustRequest(t, `{"action": {"type": "t", "z": 1, "y": 2, "x": 3, "a": "s"}, "now": "2026-11-22T10:00:00Z"}`))
			if first == "" {
				first = d.Errors[0].Message
			} else if d.Errors[0].Message != first {
				t.Fatalf("message changed: %q then %q", first, d.Errors[0].Message)
			}
		}
	})
	t.Run("raw strings and # comments in expressions", func(t *testing.T) {
		p := mustPolicy(t, policy.Options{}, "rule \"x\" {\n  precondition: action.type == \"t\" # only t\n  condition: action.path != r\"C:\\\" # a raw string ends at the quote\n  allow\n}\n")
		if d := p.Evaluate(mustRequest(t, `{"action": {"type": "t", "path": "D:"}, "now": "2026-11-22T10:00:00Z"}`)); d.Decision != policy.Allow {
			t.Fatalf("got %s %v", d.Decision, d.Errors)
		}
	})
	t.Run("data documents are sized as they are", func(t *testing.T) {
		_, err := policy.FromSources([]policy.Source{
			{Name: "p.rules", Data: []byte("rule \"x\" {\n  precondition: action.type == \"t\"\n  condition: data.payees.exists(p, data.payees.exists(q, p + q == action.to))\n  deny: \"no\"\n}\n")},
			{Name: "payees.json", Data: []byte(`["a", "b"]`)},
		}, policy.Options{})
		if err != nil {
			t.Fatalf("a quadratic loop over a 2-element data list is cheap: %v", err)
		}
	})
	t.Run("type errors name the character", func(t *testing.T) {
		_, err := policy.DecodeRequest([]byte(`{"action": {"type": "trans\u200bfer"}, "now": "2026-11-22T10:00:00Z"}`))
		if err == nil || !strings.Contains(err.Error(), "U+200B") {
			t.Fatalf("got %v, want the error to name U+200B", err)
		}
	})
}

func mustPolicyNamed(t *testing.T, name, src string) *policy.Policy {
	t.Helper()
	p, err := policy.FromSources([]policy.Source{{Name: name, Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWindowHistoryOrder: the window helpers count the same entries whether
// the history is in time order (searched) or not (scanned).
func TestWindowHistoryOrder(t *testing.T) {
	p := mustPolicy(t, policy.Options{}, `policy "w" { default: allow }
rule "Window" {
  precondition: action.type == "transfer"
  condition: session.total("transfer", "amount", {"to": action.to}, duration("1h")) + action.amount <= 100
  deny: "limit"
}
`)
	h := func(amount int, at string) string {
		return fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": "x"}, "decision": "allow", "outcome": "success", "time": "2026-11-22T%sZ"}`, amount, at)
	}
	// Inside the hour (09:00, 10:00]: 30 at 09:30 and 20 at 09:59; outside: 500
	// at 08:00, 500 at 09:00 exactly, 500 at 10:01 (after now).
	entries := []string{h(500, "08:00:00"), h(500, "09:00:00"), h(30, "09:30:00"), h(20, "09:59:00"), h(500, "10:01:00")}
	for _, order := range [][]int{{0, 1, 2, 3, 4}, {4, 2, 0, 3, 1}, {3, 4, 1, 2, 0}} {
		var hist []string
		for _, i := range order {
			hist = append(hist, entries[i])
		}
		for amount, want := range map[int]policy.Effect{50: policy.Allow, 51: policy.Deny} {
			req := fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": "x"}, "now": "2026-11-22T10:00:00Z", "session": {"id": "s", "history": [%s]}}`,
				amount, strings.Join(hist, ","))
			if d := p.Evaluate(mustRequest(t, req)); d.Decision != want {
				t.Errorf("history order %v, amount %d: %s, want %s (50 inside the window)", order, amount, d.Decision, want)
			}
			// A history built without Type (by hand) is looked up in Action.
			r := mustRequest(t, req)
			for i := range r.Session.History {
				if r.Session.History[i].Type != "transfer" {
					t.Fatalf("decoded history entry %d: Type %q", i, r.Session.History[i].Type)
				}
				r.Session.History[i].Type = ""
			}
			if d := p.Evaluate(r); d.Decision != want {
				t.Errorf("history order %v without Type, amount %d: %s, want %s", order, amount, d.Decision, want)
			}
		}
	}
}

// TestDecisionDoesNotKeepRequest: a decision kept after the evaluation does
// not keep the request alive (its instruction, reasoning and history can be
// large, and a gateway keeps decisions for its whole retention window).
func TestDecisionDoesNotKeepRequest(t *testing.T) {
	p := mustPolicy(t, policy.Options{}, seed+`rule "Reasoned" {
precondition: action.type == "transfer"
condition: session.history.size() >= 0
allow
}
`)
	var kept []*policy.Decision
	var reqs []weak.Pointer[policy.Request]
	for range 3 {
		req := mustRequest(t, `{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}, "now": "2026-11-22T10:00:00Z"}`)
		req.Reasoning = strings.Repeat("because ", 1<<16)
		req.Session.History = make([]policy.HistoryEntry, 100)
		d := p.Evaluate(req)
		if d.Decision != policy.Allow {
			t.Fatalf("%+v", d)
		}
		kept = append(kept, d)
		reqs = append(reqs, weak.Make(req))
	}
	runtime.GC()
	for i, w := range reqs {
		if w.Value() != nil {
			t.Errorf("request %d is still reachable from its decision", i)
		}
	}
	runtime.KeepAlive(kept)
}
