package replay_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// recorded is a log the gateway wrote: agents sending transfers to a few
// payees concurrently under the payments policy, whose payee rule sums the
// agent's last 24 hours, on a clock that runs over several days.
type recorded struct {
	data string
	log  *audit.Log
	pol  *policy.Policy
}

func record(t *testing.T, agents, perAgent int) *recorded {
	t.Helper()
	data := t.TempDir()
	src, err := os.ReadFile("../../examples/payments/payments.rules")
	if err != nil {
		t.Fatal(err)
	}
	srcs := []policy.Source{{Name: "payments.rules", Data: src}}
	p, err := policy.FromSources(srcs, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := (lifecycle.Archive{Dir: filepath.Join(data, "bundles")}).StoreDev(p, srcs); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var ticks atomic.Int64
	now := func() time.Time {
		return time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(ticks.Add(1)) * 7 * time.Minute)
	}
	ok := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
		return gateway.Outcome{Status: gateway.StatusOK}
	})
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Now: now,
		Executors: map[string]gateway.Executor{"transfer": ok, "verify_counterparty": ok}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(a), 1))
			agent := policy.Agent{ID: fmt.Sprintf("agent-%d", a), Roles: []string{"payments"}}
			for i := range perAgent {
				js := fmt.Sprintf(`{"type":"transfer","amount":%d,"to":"acct-%d"}`, 1000+rng.IntN(9000), rng.IntN(3))
				switch i % 10 {
				case 3:
					js = fmt.Sprintf(`{"type":"update_counterparty_bank_details","counterparty":"c%d","iban":"X"}`, rng.IntN(2))
				case 7:
					js = fmt.Sprintf(`{"type":"verify_counterparty","counterparty":"c%d"}`, rng.IntN(2))
				}
				if _, err := gw.Submit(ctx, &gateway.Request{Agent: agent, Session: "s", Action: mustAction(t, js)}, true); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return &recorded{data: data, log: l, pol: p}
}

func mustAction(t *testing.T, js string) policy.Action {
	t.Helper()
	v, err := strictjson.Decode([]byte(js), strictjson.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := policy.NewAction(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestVerifyWorkers: the concurrent replay finds what the sequential one
// finds, and a clean log replays clean.
func TestVerifyWorkers(t *testing.T) {
	r := record(t, 8, 300)
	var sums []*replay.Summary
	for _, w := range []int{1, 2, 7} {
		sum, err := replay.Verify(r.log, replay.Options{Bundles: filepath.Join(r.data, "bundles"), Workers: w, AllowDevelopment: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(sum.Findings) > 0 || sum.Decisions != 8*300 {
			t.Fatalf("workers=%d: %d decisions, findings %v; want %d, none", w, sum.Decisions, sum.Findings, 8*300)
		}
		sums = append(sums, sum)
	}
	for _, s := range sums[1:] {
		if diff := cmp.Diff(sums[0], s, cmpopts.IgnoreFields(replay.Summary{}, "Seconds")); diff != "" {
			t.Errorf("summaries differ (-sequential +concurrent):\n%s", diff)
		}
	}
}

// TestVerifyFindsStatefulMismatch forges decisions that only a replay with
// the right history catches: a transfer recorded as allowed that the payee
// rule denies given the agent's earlier transfers, and a denial the policy
// would have allowed (to a payee the agent never paid). The forged entries
// are timed after every entry of the log, as a gateway appending them
// would have timed them.
func TestVerifyFindsStatefulMismatch(t *testing.T) {
	r := record(t, 4, 200)
	last, latest := lastDecision(t, r.log, "agent-2")
	forge := forger(t, r.log, last)
	// $10,000 (the most one transfer may be without approval) six times
	// to acct-0 within minutes of each other and after the whole log: the
	// sixth goes over $50,000 whatever was sent to acct-0 before (the
	// recorded history decides only whether an earlier one does too: it
	// depends on how the agents interleaved).
	allow := []audit.Rule{{Name: "AllowTransfers", Outcome: "allow"}}
	at := latest.Add(time.Minute)
	for range 5 {
		forge(at, 10000, "acct-0", "allow", allow)
	}
	overCap := forge(at, 10000, "acct-0", "allow", allow)
	wrongDeny := forge(at, 1, "acct-9", "deny", []audit.Rule{{Name: "PayeeDailyLimit", Outcome: "deny"}})
	wantFindings(t, r, overCap, wrongDeny)
}

// TestVerifyFindsBackdatedOverCap: forged allows timed an hour before an
// earlier entry (a clock set back, or a forger hiding them from the
// window) still count for the limit: six transfers of $10,000 to a payee
// no recorded transfer paid, the first after the whole log and the other
// five an hour before it, the sixth over the $50,000 cap. A window never
// ends before an action the limit already counted, live as in the replay
// (TestLimitWallClockSetBack in internal/gateway).
func TestVerifyFindsBackdatedOverCap(t *testing.T) {
	r := record(t, 2, 50)
	last, latest := lastDecision(t, r.log, "agent-1")
	forge := forger(t, r.log, last)
	allow := []audit.Rule{{Name: "AllowTransfers", Outcome: "allow"}}
	forge(latest.Add(time.Minute), 10000, "acct-7", "allow", allow)
	back := latest.Add(-time.Hour)
	for range 4 {
		forge(back, 10000, "acct-7", "allow", allow)
	}
	overCap := forge(back, 10000, "acct-7", "allow", allow)
	wrongDeny := forge(back, 1, "acct-9", "deny", []audit.Rule{{Name: "PayeeDailyLimit", Outcome: "deny"}})
	wantFindings(t, r, overCap, wrongDeny)
}

// lastDecision returns the last decision of agent in l and the latest time
// of any entry in l.
func lastDecision(t *testing.T, l *audit.Log, agent string) (*audit.Entry, time.Time) {
	t.Helper()
	var last *audit.Entry
	var latest time.Time
	for i := range l.Size() {
		raw, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == audit.KindDecision && e.Agent == agent {
			last = e
		}
		if e.Time.After(latest) {
			latest = e.Time
		}
	}
	if last == nil {
		t.Fatalf("no decision of %s in the log", agent)
	}
	return last, latest
}

// forger returns a function that appends to l a copy of the decision like,
// timed at, for a transfer of amount to payee, recorded as decision with
// rules, and returns its index.
func forger(t *testing.T, l *audit.Log, like *audit.Entry) func(at time.Time, amount int, to, decision string, rules []audit.Rule) int64 {
	n := 0
	return func(at time.Time, amount int, to, decision string, rules []audit.Rule) int64 {
		t.Helper()
		f := *like
		n++
		f.RequestID = fmt.Sprintf("rforged%d", n)
		f.Time = at
		f.Action = audit.Text(fmt.Sprintf(`{"amount":%d,"to":%q,"type":"transfer"}`, amount, to))
		f.ActionSHA256 = audit.Digest{}
		f.Decision, f.Rules, f.Message = decision, rules, ""
		rc, err := l.Append(context.Background(), &f)
		if err != nil {
			t.Fatal(err)
		}
		return rc.Index
	}
}

// wantFindings verifies r's log sequentially and concurrently and wants a
// replay_mismatch at overCap and at wrongDeny, and the six forged allows
// open.
func wantFindings(t *testing.T, r *recorded, overCap, wrongDeny int64) {
	t.Helper()
	for _, w := range []int{1, 3} {
		sum, err := replay.Verify(r.log, replay.Options{Bundles: filepath.Join(r.data, "bundles"), Workers: w, AllowDevelopment: true})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range sum.Findings {
			got = append(got, fmt.Sprintf("%d %s", f.Index, f.Class))
		}
		// Outcomes are missing for the forged allows too, which verify
		// counts as open, not as findings.
		want := []string{fmt.Sprintf("%d replay_mismatch", overCap), fmt.Sprintf("%d replay_mismatch", wrongDeny)}
		if !slicesHave(got, want) {
			t.Errorf("workers=%d: findings %v, want %v among them", w, got, want)
		}
		if sum.Open < 6 {
			t.Errorf("workers=%d: %d open decisions, want at least the 6 forged allows", w, sum.Open)
		}
	}
}

func slicesHave(got, want []string) bool {
	seen := map[string]bool{}
	for _, g := range got {
		seen[g] = true
	}
	for _, w := range want {
		if !seen[w] {
			return false
		}
	}
	return true
}

// TestWhatIfWorkers: a stricter payee cap changes some decisions, the same
// ones whatever the concurrency, in log order.
func TestWhatIfWorkers(t *testing.T) {
	r := record(t, 6, 250)
	src, _ := os.ReadFile("../../examples/payments/payments.rules")
	strict := strings.Replace(string(src), "<= 50000", "<= 20000", 1)
	cand, err := policy.FromSources([]policy.Source{{Name: "strict.rules", Data: []byte(strict)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	same, err := replay.WhatIf(r.log, r.pol, replay.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(same.Changed) != 0 || same.Unchanged != 6*250 {
		t.Errorf("the recorded policy: %d changed, %d unchanged; want 0, %d", len(same.Changed), same.Unchanged, 6*250)
	}
	var reps []*replay.Report
	for _, w := range []int{1, 2, 5} {
		rep, err := replay.WhatIf(r.log, cand, replay.Options{Workers: w})
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
	}
	if len(reps[0].Changed) == 0 || reps[0].Transitions["allow -> deny"] == 0 {
		t.Fatalf("a stricter cap changed nothing: %+v", reps[0].Transitions)
	}
	for i := 1; i < len(reps[0].Changed); i++ {
		if reps[0].Changed[i-1].Index >= reps[0].Changed[i].Index {
			t.Fatal("changes are not in log order")
		}
	}
	for _, rep := range reps[1:] {
		if diff := cmp.Diff(reps[0], rep); diff != "" {
			t.Errorf("reports differ (-sequential +concurrent):\n%s", diff)
		}
	}
}

// TestVerifyDevelopmentPolicy: a development-mode activation (no signers)
// is a development_policy finding at its index unless AllowDevelopment;
// its decisions are replayed either way.
func TestVerifyDevelopmentPolicy(t *testing.T) {
	r := record(t, 1, 5)
	opts := replay.Options{Bundles: filepath.Join(r.data, "bundles"), Workers: 1}
	sum, err := replay.Verify(r.log, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []replay.Finding{{Index: 0, Class: replay.DevelopmentPolicy}}
	if diff := cmp.Diff(want, sum.Findings, cmpopts.IgnoreFields(replay.Finding{}, "Detail")); diff != "" || sum.Decisions != 5 {
		t.Errorf("without AllowDevelopment: %d decisions, findings (-want +got):\n%s", sum.Decisions, diff)
	}
	opts.AllowDevelopment = true
	if sum, err = replay.Verify(r.log, opts); err != nil || len(sum.Findings) != 0 || sum.Decisions != 5 {
		t.Errorf("with AllowDevelopment: %d decisions, findings %v (%v); want 5, none", sum.Decisions, sum.Findings, err)
	}
}
