package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// postconditionExample returns the rules block of docs/policy-language.md's
// "### postcondition" section, so that the tests check the example as the
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

// refundGateway is a gateway under the docs' postcondition example (and
// default allow) whose "refund" actions ex executes; nil: decide-only.
func refundGateway(t *testing.T, ex gateway.Executor) (*gateway.Gateway, *audit.Log) {
	t.Helper()
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	src := "policy \"refunds\" {\n  default: allow\n}\n" + postconditionExample(t)
	p, err := policy.FromSources([]policy.Source{{Name: "refunds.rules", Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{Policy: p, Log: l, Executors: map[string]gateway.Executor{}}
	if ex != nil {
		cfg.Executors["refund"] = ex
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return gw, l
}

// verdictsString is "rule holds|violated[: message][ (error)]" per verdict.
func verdictsString(vs []policy.Verdict) string {
	var out []string
	for _, v := range vs {
		s := v.Rule + " holds"
		if !v.Holds {
			s = v.Rule + " violated: " + v.Message
		}
		if v.Error != "" {
			s += " (" + v.Error + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// TestPostconditionOnUpstreamReply runs the docs' example against a real
// upstream: result is the upstream's decoded JSON reply; a reply that is
// not JSON, or none, satisfies no postcondition; a non-2xx reply is an
// error outcome and checks none. The verdicts are in the reply, in Get and
// in the outcome entry.
func TestPostconditionOnUpstreamReply(t *testing.T) {
	const violated = "RefundMatchesRequest violated: The upstream refunded a different amount"
	tests := []struct {
		name   string
		status int
		reply  string
		want   string // verdictsString
	}{
		{"the amount asked", 200, `{"status": "refunded", "amount": 250}`, "RefundMatchesRequest holds"},
		{"another amount", 200, `{"status": "refunded", "amount": 25}`, violated},
		{"not refunded", 201, `{"status": "pending", "amount": 250}`, violated},
		{"not JSON", 200, `refunded 250`,
			violated + " (no result: the outcome has no JSON body (none, not JSON, or larger than the executor keeps))"},
		{"no body", 204, ``,
			violated + " (no result: the outcome has no JSON body (none, not JSON, or larger than the executor keeps))"},
		{"an object without the fields", 200, `{"ok": true}`, violated + " (no such key: status)"},
		{"refused", 409, `{"status": "refunded", "amount": 250}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.reply)
			}))
			defer up.Close()
			gw, l := refundGateway(t, &gateway.HTTPExecutor{Method: "POST", URL: up.URL})
			res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Action: action(t, `{"type": "refund", "amount": 250}`)}, true)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome == nil {
				t.Fatalf("got no outcome, want one: %+v", res)
			}
			if got := verdictsString(res.Postconditions); got != tt.want {
				t.Errorf("reply: got %v, want %v", got, tt.want)
			}
			got, err := gw.Get(agent42.ID, res.RequestID)
			if err != nil {
				t.Fatal(err)
			}
			if g := verdictsString(got.Postconditions); g != tt.want {
				t.Errorf("Get: got %v, want %v", g, tt.want)
			}
			raw, err := l.ReadEntry(res.OutcomeReceipt.Index)
			if err != nil {
				t.Fatal(err)
			}
			e, err := audit.DecodeEntry(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Postconditions) != len(res.Postconditions) {
				t.Fatalf("outcome entry: got %v, want %v", e.Postconditions, res.Postconditions)
			}
			for i, v := range e.Postconditions {
				if w := res.Postconditions[i]; v.Rule != w.Rule || v.Holds != w.Holds || v.Message != w.Message {
					t.Errorf("outcome entry: got %v, want %v", v, w)
				}
			}
		})
	}
}

// TestPostconditionOnReportedResult: for a decide-only action, result is
// the result the agent reports.
func TestPostconditionOnReportedResult(t *testing.T) {
	tests := []struct {
		name string
		out  gateway.Outcome
		want string
	}{
		{"the amount asked", gateway.Outcome{Status: gateway.StatusOK, Body: []byte(`{"amount":250,"status":"refunded"}`)}, "RefundMatchesRequest holds"},
		{"another amount", gateway.Outcome{Status: gateway.StatusOK, Body: []byte(`{"amount":25,"status":"refunded"}`)},
			"RefundMatchesRequest violated: The upstream refunded a different amount"},
		{"no result", gateway.Outcome{Status: gateway.StatusOK},
			"RefundMatchesRequest violated: The upstream refunded a different amount (no result: the outcome has no JSON body (none, not JSON, or larger than the executor keeps))"},
		{"an error", gateway.Outcome{Status: gateway.StatusError, Body: []byte(`{"amount":250,"status":"refunded"}`)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw, _ := refundGateway(t, nil)
			ctx := context.Background()
			res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "refund", "amount": 250}`)}, true)
			if err != nil || res.Outcome != nil {
				t.Fatalf("decide-only: %+v %v", res, err)
			}
			got, err := gw.ReportOutcome(ctx, agent42.ID, res.RequestID, tt.out)
			if err != nil {
				t.Fatal(err)
			}
			if g := verdictsString(got.Postconditions); g != tt.want {
				t.Errorf("got %v, want %v", g, tt.want)
			}
		})
	}
}
