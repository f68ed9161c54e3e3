package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

const scopePolicy = `policy "scopes" {
  default: deny
}
rule "Allow" {
  precondition: action.type in ["transfer", "report"]
  allow
}
rule "GlobalCap" {
  precondition: action.type == "transfer" && action.to == "payee-g"
  condition: global.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 10000
  deny: "at most 10000 per payee per day, all agents together"
}
rule "PrincipalCap" {
  precondition: action.type == "transfer" && action.to == "payee-p"
  condition: principal.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 10000
  deny: "at most 10000 per payee per day for the agents of one principal"
}
rule "ReportCap" {
  precondition: action.type == "report"
  condition: agent.count("report", {}, duration("24h")) < 1
  deny: "one report a day"
}
`

// TestLimitsAcrossAgents: ten concurrent transfers of 9,999 to one payee
// from three agents, under a cap of 10,000 over all agents (global) and
// over the agents of one principal: in each of 50 trials at most one is
// allowed, and the log and the executions agree.
func TestLimitsAcrossAgents(t *testing.T) {
	p := compile(t, scopePolicy)
	agents := []policy.Agent{{ID: "a1", Principal: "treasury"}, {ID: "a2", Principal: "treasury"}, {ID: "a3", Principal: "treasury"}}
	for _, payee := range []string{"payee-g", "payee-p"} {
		for trial := range 50 {
			l := openLog(t)
			gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			total := 0
			for i := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agents[i%3], Session: fmt.Sprint("s", i),
						Action: action(t, fmt.Sprintf(`{"type": "transfer", "amount": 9999, "to": %q}`, payee))}, true)
					if err != nil {
						t.Error(err)
						return
					}
					if res.Decision.Decision == policy.Allow {
						mu.Lock()
						total += 9999
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			l.Close()
			if total > 10000 || total == 0 {
				t.Fatalf("%s, trial %d: %d allowed in all, want 9999 (cap 10000)", payee, trial, total)
			}
		}
	}
}

// TestReportedFailureDoesNotReleaseLimit: a decide-only action counts
// against the limits whatever the agent reports of it: reporting an error
// after each allowed action does not let the agent act again.
func TestReportedFailureDoesNotReleaseLimit(t *testing.T) {
	p := compile(t, scopePolicy)
	l := openLog(t)
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	agent := policy.Agent{ID: "a1"}
	first, err := gw.Submit(ctx, &gateway.Request{Agent: agent, Action: action(t, `{"type": "report", "n": 1}`)}, true)
	if err != nil || first.Decision.Decision != policy.Allow {
		t.Fatalf("first report: %+v %v", first, err)
	}
	if _, err := gw.ReportOutcome(ctx, agent.ID, first.RequestID, gateway.Outcome{Status: gateway.StatusError}); err != nil {
		t.Fatal(err)
	}
	second, err := gw.Submit(ctx, &gateway.Request{Agent: agent, Action: action(t, `{"type": "report", "n": 2}`)}, true)
	if err != nil || second.Decision.Decision != policy.Deny {
		t.Fatalf("second report after a reported error: got %+v (%v), want deny", second.Decision, err)
	}
	// A restarted gateway folds the log to the same state.
	gw2, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw2.Rebuild(ctx, l); err != nil {
		t.Fatal(err)
	}
	third, err := gw2.Submit(ctx, &gateway.Request{Agent: agent, Action: action(t, `{"type": "report", "n": 3}`)}, true)
	if err != nil || third.Decision.Decision != policy.Deny {
		t.Fatalf("after a restart: got %+v (%v), want deny", third.Decision, err)
	}
}

// TestActivationFillsNewIndexes: a policy activated at run time that reads
// an index the ledger did not keep counts the actions decided before it
// (the gateway folds the log again), so a new limit holds from its first
// decision.
func TestActivationFillsNewIndexes(t *testing.T) {
	allow := compile(t, "policy \"a\" {\n  default: allow\n}\n")
	capped := compile(t, scopePolicy)
	l := openLog(t)
	gw, err := gateway.New(gateway.Config{Policy: allow, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	transfer := func(agent string) *gateway.Result {
		t.Helper()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: agent}, Action: action(t, `{"type": "transfer", "amount": 9999, "to": "payee-g"}`)}, false)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if d := transfer("a1").Decision.Decision; d != policy.Allow {
		t.Fatalf("before the cap: %s, want allow", d)
	}
	if err := gw.Activate(ctx, &gateway.Active{Policy: capped, Digest: capped.Digest(), Dev: true, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	if d := transfer("a2").Decision; d.Decision != policy.Deny {
		t.Fatalf("after the cap, with 9999 already sent by another agent: %s %v, want deny", d.Decision, d.Rules)
	}
}

// TestRefusalsFoldToNothing: a request refused before it was decoded is
// in the log with what the agent sent; even when that text parses as an
// action, neither the live gateway nor a restarted one counts it in the
// session's history.
func TestRefusalsFoldToNothing(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "h.rules", Data: []byte(`policy "h" {
  default: allow
}
rule "FirstOnly" {
  condition: session.history.size() == 0
  deny: "one action per session"
}
`)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t)
	ctx := context.Background()
	agent := policy.Agent{ID: "a1"}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Refuse(ctx, agent, "bad_request", "unknown field", []byte(`{"type": "report", "n": 1}`)); err != nil {
		t.Fatal(err)
	}
	restarted, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Rebuild(ctx, l); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]*gateway.Gateway{"live": gw, "restarted": restarted} {
		res, err := g.Submit(ctx, &gateway.Request{Agent: agent, Action: action(t, `{"type": "report", "n": 2}`)}, false)
		if err != nil || res.Decision.Decision != policy.Allow {
			t.Errorf("%s: %+v %v, want allow (the refusal is not in the history)", name, res, err)
		}
	}
}

// TestMemoryBudget: over its memory budget the ledger takes no new action:
// decisions are denied memory_budget (counted), and neither the denial nor
// its request is kept, so an agent that keeps sending grows nothing.
func TestMemoryBudget(t *testing.T) {
	p := compile(t, scopePolicy)
	l := openLog(t)
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Budget: 2000})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var denied []string
	for i := range 20 {
		res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: fmt.Sprint("a", i)},
			Action: action(t, fmt.Sprintf(`{"type": "transfer", "amount": 1, "to": "payee-%d"}`, i))}, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Decision.Reason == "memory_budget" {
			denied = append(denied, res.RequestID)
		}
	}
	st := gw.Ledger()
	if len(denied) == 0 || st.OverBudget != int64(len(denied)) || st.Budget != 2000 {
		t.Fatalf("denied %d, stats %+v; want some memory_budget denials, all counted", len(denied), st)
	}
	before := st.Bytes
	for _, id := range denied {
		if _, err := gw.Get("", id); !errors.Is(err, gateway.ErrNotFound) {
			t.Errorf("denied request %s kept: %v", id, err)
		}
	}
	for range 50 {
		gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "a0"}, Action: action(t, `{"type": "transfer", "amount": 1, "to": "payee-0"}`)}, false)
	}
	if after := gw.Ledger().Bytes; after != before {
		t.Errorf("ledger bytes went from %d to %d while every action was denied", before, after)
	}
}

// TestRequestIDAliases: a request id differs from another only in bits its
// encoding does not use is not that request (ids are compared canonically),
// before and after the request is final.
func TestRequestIDAliases(t *testing.T) {
	f := newFixture(t, t.TempDir())
	res, err := f.gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Action: action(t, `{"type": "report", "n": 1}`)}, false)
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	id := res.RequestID
	last := strings.IndexByte(alphabet, id[len(id)-1])
	alias := id[:len(id)-1] + string(alphabet[last^1]) // the last character's lowest bit is unused
	if _, err := f.gw.Get(agent42.ID, id); err != nil {
		t.Fatalf("the request itself: %v", err)
	}
	if _, err := f.gw.Get(agent42.ID, alias); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("alias %s of %s: got %v, want ErrNotFound", alias, id, err)
	}
}

// compile compiles a policy of one file.
func compile(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// openLog opens a real audit log in a directory of its own, closed when
// the test ends.
func openLog(t testing.TB) *audit.Log {
	t.Helper()
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
