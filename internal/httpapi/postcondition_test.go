package httpapi_test

import (
	"os"
	"strings"
	"testing"
)

// postconditionExample returns the rules block of docs/policy-language.md's
// "### postcondition" section, so that the test runs the example as the
// reader sees it.
func postconditionExample(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/policy-language.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### postcondition\n")
	_, block, ok2 := strings.Cut(section, "```rules\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/policy-language.md has no rules block under ### postcondition")
	}
	return block
}

// TestPostconditionVerdicts runs the docs' postcondition example against a
// real upstream: the verdict is in the reply of POST /v1/actions and of
// GET /v1/requests/{id}, and counted in /metrics.
func TestPostconditionVerdicts(t *testing.T) {
	src := rules + `rule "AllowRefunds" {
  precondition: action.type == "refund"
  allow
}
` + postconditionExample(t)
	const refund = `{"action": {"type": "refund", "amount": 250}}`
	tests := []struct {
		name    string
		reply   string
		holds   bool
		message string
		counted string // the /metrics line
	}{
		{"the amount asked", `{"status": "refunded", "amount": 250}`, true, "",
			`rulelock_postconditions_total{rule="RefundMatchesRequest",verdict="holds"} 1`},
		{"another amount", `{"status": "refunded", "amount": 25}`, false, "The upstream refunded a different amount",
			`rulelock_postconditions_total{rule="RefundMatchesRequest",verdict="violated"} 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startWith(t, src, tt.reply)
			r := e.do(t, "POST", "/v1/actions", "token-a", "application/json", refund)
			if r.status != 200 || e.upstream.Load() != 1 {
				t.Fatalf("got %d %s, upstream %d", r.status, r.raw, e.upstream.Load())
			}
			id, _ := r.body["request_id"].(string)
			got := e.do(t, "GET", "/v1/requests/"+id, "token-a", "", "")
			for _, rep := range []reply{r, got} {
				ps, _ := rep.body["postconditions"].([]any)
				if len(ps) != 1 {
					t.Fatalf("postconditions: got %v, want one verdict: %s", rep.body["postconditions"], rep.raw)
				}
				v, _ := ps[0].(map[string]any)
				msg, _ := v["message"].(string)
				if v["rule"] != "RefundMatchesRequest" || v["holds"] != tt.holds || msg != tt.message || v["shadow"] != false {
					t.Errorf("verdict: got %v, want RefundMatchesRequest holds %v message %q", v, tt.holds, tt.message)
				}
			}
			m := e.do(t, "GET", "/metrics", "token-a", "", "")
			var lines []string
			for _, l := range strings.Split(m.raw, "\n") {
				if strings.HasPrefix(l, "rulelock_postconditions_total{") {
					lines = append(lines, l)
				}
			}
			if g := strings.Join(lines, "\n"); g != tt.counted {
				t.Errorf("/metrics: got %v, want %v", g, tt.counted)
			}
		})
	}
}

// TestReportedPostconditionVerdicts: for a decide-only action the
// postconditions judge the result the agent reports, and the verdicts are
// in the report's reply and in /metrics.
func TestReportedPostconditionVerdicts(t *testing.T) {
	e := startWith(t, `rule "AllowNotes" {
  precondition: action.type == "note"
  allow
}
rule "NoteFiled" {
  precondition: action.type == "note"
  postcondition: result.filed == true
  deny: "The note was not filed"
}
`, `{}`)
	r := e.do(t, "POST", "/v1/actions", "token-a", "application/json", `{"action": {"type": "note"}}`)
	id, _ := r.body["request_id"].(string)
	if r.status != 200 || r.body["outcome"] != nil || id == "" {
		t.Fatalf("decide-only: got %d %s", r.status, r.raw)
	}
	got := e.do(t, "POST", "/v1/requests/"+id+"/outcome", "token-a", "application/json", `{"status": "ok", "result": {"filed": false}}`)
	ps, _ := got.body["postconditions"].([]any)
	if len(ps) != 1 || ps[0].(map[string]any)["holds"] != false {
		t.Errorf("report: got %s, want NoteFiled violated", got.raw)
	}
	m := e.do(t, "GET", "/metrics", "token-a", "", "")
	if want := `rulelock_postconditions_total{rule="NoteFiled",verdict="violated"} 1`; !strings.Contains(m.raw, want+"\n") {
		t.Errorf("/metrics lacks %v", want)
	}
}
