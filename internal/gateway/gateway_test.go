package gateway_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

const testPolicy = `policy "t" {
  default: deny
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0
  allow
}
rule "DailyCap" {
  precondition: action.type == "transfer"
  condition: agent.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 10000
  deny: "at most 10000 per payee per day"
}
rule "BigNeedsApproval" {
  precondition: action.type == "trade"
  condition: action.amount <= 100
  require_approval {
    approvers: 2
    groups: ["treasury"]
    message: "two treasurers sign trades over 100"
  }
}
rule "TradersOnly" {
  precondition: action.type == "trade"
  condition: "payments" in agent.roles
  deny: "only payments agents trade"
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
rule "AllowReports" {
  precondition: action.type == "report"
  allow
}
`

// upstream is a real HTTP server that records what it receives and, at the
// moment each request arrives, checks the log for its decision.
type upstream struct {
	t   *testing.T
	log *audit.Log
	srv *httptest.Server

	mu       sync.Mutex
	received []received
}

type received struct {
	key, auth, body string
	traceparent     string
	decided         bool // a durable allow decision with this id and these bytes was in the log on arrival
}

func newUpstream(t *testing.T, l *audit.Log) *upstream {
	u := &upstream{t: t, log: l}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := received{key: r.Header.Get("Idempotency-Key"), auth: r.Header.Get("Authorization"), body: string(body), traceparent: r.Header.Get("Traceparent")}
		rec.decided = u.decisionInLog(rec.key, rec.body)
		u.mu.Lock()
		u.received = append(u.received, rec)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok": true}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// traceparents are the traceparent headers the upstream received, in order.
func (u *upstream) traceparents() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, r := range u.received {
		out = append(out, r.traceparent)
	}
	return out
}

// decisionInLog reports whether the log holds exactly one allow decision
// for request id with exactly these canonical bytes.
func (u *upstream) decisionInLog(id, body string) bool {
	n := 0
	for i := int64(0); i < u.log.Size(); i++ {
		raw, err := u.log.ReadEntry(i)
		if err != nil {
			return false
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return false
		}
		if e.Kind == audit.KindDecision && e.RequestID == id && (e.Decision == "allow" || e.Decision == "approved") && e.Action.Text == body {
			n++
		}
	}
	return n == 1
}

// checkOracle asserts the mediation invariant over everything received.
func (u *upstream) checkOracle() {
	u.t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range u.received {
		if !r.decided {
			u.t.Errorf("upstream request %s arrived without a durable allow decision for its bytes %s", r.key, r.body)
		}
		if seen[r.key] {
			u.t.Errorf("decision %s reached the upstream twice", r.key)
		}
		seen[r.key] = true
		if r.auth != "Bearer upstream-secret" {
			u.t.Errorf("upstream saw Authorization %q, want the gateway's credential", r.auth)
		}
	}
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.received)
}

// clock is a test clock that only moves when told to.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	clock   *clock
	signers map[string]note.Signer
	reg     *approval.Registry
	dir     string
	log     *audit.Log
	up      *upstream
	gw      *gateway.Gateway
	pol     *policy.Policy
}

func newFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	return newFixtureFrom(t, dir, nil)
}

// newFixtureFrom opens a gateway on dir; with prev, it keeps prev's
// approvers and keys, as a restarted gateway keeps its configuration.
func newFixtureFrom(t *testing.T, dir string, prev *fixture) *fixture {
	t.Helper()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, log: l, pol: p}
	f.up = newUpstream(t, l)
	creds := http.Header{"Authorization": {"Bearer upstream-secret"}}
	pay := &gateway.HTTPExecutor{Method: "POST", URL: f.up.srv.URL + "/pay/{to}", Headers: creds}
	trade := &gateway.HTTPExecutor{Method: "POST", URL: f.up.srv.URL + "/trades", Headers: creds}
	if prev != nil {
		f.signers, f.reg = prev.signers, prev.reg
	} else {
		f.signers, f.reg = newApprovers(t)
	}
	f.clock = &clock{t: time.Now()}
	f.gw, err = gateway.New(gateway.Config{Policy: p, Log: l, Approvers: f.reg, Now: f.clock.now, Executors: map[string]gateway.Executor{"transfer": pay, "trade": trade}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newApprovers(t *testing.T) (map[string]note.Signer, *approval.Registry) {
	signers := map[string]note.Signer{}
	var approvers []approval.Approver
	for _, a := range []struct {
		id     string
		groups []string
	}{{"alice", []string{"treasury"}}, {"bob", []string{"treasury"}}, {"carol", []string{"treasury"}}, {"mallory", []string{"marketing"}}, {"agent-42", []string{"treasury"}}} {
		skey, vkey, err := note.GenerateKey(nil, a.id)
		if err != nil {
			t.Fatal(err)
		}
		signers[a.id], _ = note.NewSigner(skey)
		approvers = append(approvers, approval.Approver{ID: a.id, Groups: a.groups, Key: vkey})
	}
	reg, err := approval.NewRegistry(approvers)
	if err != nil {
		t.Fatal(err)
	}
	return signers, reg
}

func action(t testing.TB, js string) policy.Action {
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

var agent42 = policy.Agent{ID: "agent-42", Roles: []string{"payments"}}

func TestMediation(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	cases := []struct {
		action   string
		decision policy.Effect
		executed bool
	}{
		{`{"type": "transfer", "amount": 500, "to": "acct-1"}`, policy.Allow, true},
		{`{"type": "transfer", "amount": 20000, "to": "acct-2"}`, policy.Deny, false},
		{`{"type": "trade", "amount": 5000}`, policy.RequireApproval, false},
		{`{"type": "trade", "amount": 5}`, policy.Allow, true},
		{`{"type": "unknown_thing"}`, policy.Deny, false},
		{`{"type": "report", "n": 1}`, policy.Allow, false}, // decide-only: no executor
	}
	executed := 0
	for _, c := range cases {
		res, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Session: "s1", Action: action(t, c.action)}, true)
		if err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		if res.Decision.Decision != c.decision {
			t.Errorf("%s: got %s, want %s", c.action, res.Decision.Decision, c.decision)
		}
		if got := res.Outcome != nil; got != c.executed {
			t.Errorf("%s: executed %v, want %v", c.action, got, c.executed)
		}
		if c.executed {
			executed++
			if res.Outcome.Status != gateway.StatusOK || res.OutcomeReceipt == nil || res.OutcomeReceipt.Index <= res.Receipt.Index {
				t.Errorf("%s: outcome %+v receipt %+v after decision %+v", c.action, res.Outcome, res.OutcomeReceipt, res.Receipt)
			}
		}
	}
	if f.up.count() != executed {
		t.Errorf("upstream received %d requests, want %d", f.up.count(), executed)
	}
	f.up.checkOracle()
	// Every request has a decision entry; every execution an outcome entry.
	kinds := map[audit.Kind]int{}
	for i := int64(0); i < f.log.Size(); i++ {
		raw, _ := f.log.ReadEntry(i)
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		kinds[e.Kind]++
	}
	if kinds[audit.KindDecision] != len(cases) || kinds[audit.KindOutcome] != executed {
		t.Errorf("log has %v, want %d decisions and %d outcomes", kinds, len(cases), executed)
	}
}

// TestConcurrentLimit: ten concurrent transfers of 9,999 to one payee under a
// 10,000-per-day cap allow exactly one.
func TestConcurrentLimit(t *testing.T) {
	f := newFixture(t, t.TempDir())
	var wg sync.WaitGroup
	results := make([]*gateway.Result, 10)
	errs := make([]error, 10)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = f.gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "transfer", "amount": 9999, "to": "acct-7"}`)}, true)
		}()
	}
	wg.Wait()
	allowed := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.Decision.Decision == policy.Allow {
			allowed++
		}
	}
	if allowed != 1 || f.up.count() != 1 {
		t.Fatalf("allowed %d, executed %d; want exactly one of each", allowed, f.up.count())
	}
	f.up.checkOracle()
}

// TestSessionsDoNotResetLimits: a new session id does not give the agent a
// fresh limit.
func TestSessionsDoNotResetLimits(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	first, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Session: "a", Action: action(t, `{"type": "transfer", "amount": 9999, "to": "acct-7"}`)}, true)
	if err != nil || first.Decision.Decision != policy.Allow {
		t.Fatalf("first: %v %v", first, err)
	}
	second, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Session: "b", Action: action(t, `{"type": "transfer", "amount": 9999, "to": "acct-7"}`)}, true)
	if err != nil || second.Decision.Decision != policy.Deny {
		t.Fatalf("second, in another session: got %+v (%v), want deny", second.Decision, err)
	}
	// Another agent has its own limit.
	other, err := f.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-43"}, Session: "a", Action: action(t, `{"type": "transfer", "amount": 9999, "to": "acct-7"}`)}, true)
	if err != nil || other.Decision.Decision != policy.Allow {
		t.Fatalf("another agent: got %+v (%v), want allow", other.Decision, err)
	}
}

// failingLog refuses every append.
type failingLog struct{}

func (failingLog) Append(context.Context, *audit.Entry) (audit.Receipt, error) {
	return audit.Receipt{}, errors.New("disk on fire")
}

func TestNoDurableDecisionNoAction(t *testing.T) {
	called := false
	p, _ := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	gw, err := gateway.New(gateway.Config{Policy: p, Log: failingLog{}, Executors: map[string]gateway.Executor{
		"transfer": gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
			called = true
			return gateway.Outcome{Status: gateway.StatusOK}
		}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 5, "to": "x"}`)}, true)
	if !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if called {
		t.Fatal("the executor ran without a durable decision")
	}
}

// abandoningLog appends every entry but, like audit.Log when the caller's
// context ends while it waits for the sync, answers with the context's
// error: the entry is in the log although the append "failed".
type abandoningLog struct {
	mu     sync.Mutex
	allows int
}

func (l *abandoningLog) Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Kind == audit.KindDecision && e.Decision == "allow" {
		l.allows++
	}
	return audit.Receipt{}, ctx.Err()
}

// TestDepartedClientStillCounts: a decision whose client went away while it
// was being logged still counts against the agent's limits, since it may
// be in the log (and a replay of the log counts it).
func TestDepartedClientStillCounts(t *testing.T) {
	p, _ := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	l := &abandoningLog{}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	transfer := &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 9999, "to": "acct-7"}`)}
	gw.Submit(gone, transfer, false)
	gw.Submit(context.Background(), transfer, false)
	if l.allows > 1 {
		t.Fatalf("the log holds %d allowed transfers of 9,999 under a 10,000 cap", l.allows)
	}
}

// TestRebuild: after a restart the history is rebuilt from the log, and an
// allowed decision without an outcome is closed as unknown, never re-run.
func TestRebuild(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	if _, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 6000, "to": "acct-7"}`)}, true); err != nil {
		t.Fatal(err)
	}
	// Decided, and the process "dies" before executing: decide only.
	pending, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 3000, "to": "acct-7"}`)}, false)
	if err != nil || pending.Decision.Decision != policy.Allow {
		t.Fatalf("pending: %+v %v", pending, err)
	}
	f.log.Close()

	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	closed, err := gw.Rebuild(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if closed != 1 {
		t.Fatalf("closed %d decisions as unknown, want 1", closed)
	}
	got, err := gw.Get(agent42.ID, pending.RequestID)
	if err != nil || got.Outcome == nil || got.Outcome.Status != gateway.StatusUnknown {
		t.Fatalf("recovered request: %+v %v, want an unknown outcome", got, err)
	}
	// 6000 + 3000 (unknown counts) + 2000 > 10000: denied.
	res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 2000, "to": "acct-7"}`)}, false)
	if err != nil || res.Decision.Decision != policy.Deny {
		t.Fatalf("after restart: %+v %v, want deny from the rebuilt history", res, err)
	}
	// A second rebuild finds nothing more to close.
	gw2, _ := gateway.New(gateway.Config{Policy: f.pol, Log: l})
	if n, err := gw2.Rebuild(ctx, l); err != nil || n != 0 {
		t.Fatalf("second rebuild closed %d (%v), want 0", n, err)
	}
}

func TestReportOutcome(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	res, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "report", "n": 1}`)}, true)
	if err != nil || res.Outcome != nil {
		t.Fatalf("decide-only: %+v %v", res, err)
	}
	if _, err := f.gw.ReportOutcome(ctx, "agent-43", res.RequestID, gateway.Outcome{Status: gateway.StatusOK}); !errors.Is(err, gateway.ErrForbidden) {
		t.Fatalf("another agent's report: got %v, want ErrForbidden", err)
	}
	got, err := f.gw.ReportOutcome(ctx, agent42.ID, res.RequestID, gateway.Outcome{Status: gateway.StatusOK})
	if err != nil || got.Outcome == nil || !got.Outcome.Reported {
		t.Fatalf("report: %+v %v", got, err)
	}
	if _, err := f.gw.ReportOutcome(ctx, agent42.ID, res.RequestID, gateway.Outcome{Status: gateway.StatusOK}); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("second report: got %v, want ErrConflict", err)
	}
}

func TestURLTemplate(t *testing.T) {
	var paths []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.EscapedPath())
		mu.Unlock()
	}))
	defer srv.Close()
	ex := &gateway.HTTPExecutor{Method: "POST", URL: srv.URL + "/payees/{to}/pay"}
	for _, to := range []string{"acct-1", "../admin", "a/b?c"} {
		out := ex.Execute(context.Background(), gateway.Execution{RequestID: "r1", Action: action(t, `{"type": "transfer", "to": "`+to+`"}`)})
		if out.Status != gateway.StatusOK {
			t.Errorf("%s: %+v", to, out)
		}
	}
	out := ex.Execute(context.Background(), gateway.Execution{RequestID: "r1", Action: action(t, `{"type": "transfer", "to": ".."}`)})
	if out.Status != gateway.StatusError {
		t.Errorf("dot segment: got %+v, want an error before sending", out)
	}
	want := "/payees/acct-1/pay /payees/..%2Fadmin/pay /payees/a%2Fb%3Fc/pay"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("paths: got %s, want %s", got, want)
	}
}

// TestForgetAfterRetention: the gateway forgets requests that leave the
// retention window (the log keeps them), so that its memory does not grow
// with the log; a request still parked for approval is kept until it is
// final.
func TestForgetAfterRetention(t *testing.T) {
	f := newFixture(t, t.TempDir())
	ctx := context.Background()
	submit := func(js string, want policy.Effect) string {
		t.Helper()
		res, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Session: "s", Action: action(t, js)}, true)
		if err != nil || res.Decision.Decision != want {
			t.Fatalf("%s: %+v %v, want %s", js, res, err, want)
		}
		return res.RequestID
	}
	executed := submit(`{"type": "transfer", "amount": 500, "to": "acct-1"}`, policy.Allow)
	awaiting := submit(`{"type": "report", "n": 1}`, policy.Allow) // decide-only, never reported
	parked := f.park(t).RequestID
	f.clock.advance(8 * 24 * time.Hour) // past the 7-day retention
	recent := submit(`{"type": "transfer", "amount": 500, "to": "acct-1"}`, policy.Allow)

	for _, id := range []string{executed, awaiting} {
		if _, err := f.gw.Get(agent42.ID, id); !errors.Is(err, gateway.ErrNotFound) {
			t.Errorf("request %s past the retention window: got %v, want ErrNotFound", id, err)
		}
	}
	if _, err := f.gw.ReportOutcome(ctx, agent42.ID, awaiting, gateway.Outcome{Status: gateway.StatusOK}); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("outcome reported past the retention window: got %v, want ErrNotFound", err)
	}
	for _, id := range []string{recent, parked} {
		if _, err := f.gw.Get(agent42.ID, id); err != nil {
			t.Errorf("request %s: %v, want it kept", id, err)
		}
	}

	// Once the parked request is final (it expires), the next decision
	// forgets it too.
	expiry, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.gw.RunExpiry(expiry); close(done) }()
	if res, err := f.gw.Wait(ctx, agent42.ID, parked); err != nil || res.Approval == nil || res.Approval.State != approval.Expired {
		t.Fatalf("parked request after its expiry: %+v %v", res, err)
	}
	stop()
	<-done
	submit(`{"type": "transfer", "amount": 500, "to": "acct-2"}`, policy.Allow)
	if _, err := f.gw.Get(agent42.ID, parked); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("expired request past the retention window: got %v, want ErrNotFound", err)
	}
}

// TestRebuildForgetsPastRetention: a restarted gateway does not load the
// requests that are past the retention window.
func TestRebuildForgetsPastRetention(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	var ids []string
	for i := range 2 {
		if i > 0 {
			f.clock.advance(8 * 24 * time.Hour)
		}
		res, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 500, "to": "acct-1"}`)}, true)
		if err != nil || res.Decision.Decision != policy.Allow {
			t.Fatalf("%+v %v", res, err)
		}
		ids = append(ids, res.RequestID)
	}
	f.log.Close()

	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: l, Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rebuild(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Get(agent42.ID, ids[0]); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("request past the retention window after a restart: got %v, want ErrNotFound", err)
	}
	if _, err := gw.Get(agent42.ID, ids[1]); err != nil {
		t.Errorf("request within the retention window after a restart: %v", err)
	}
}

// heldLog is a QueueRecorder that acknowledges nothing until release: then
// every entry, in order, or (fail) none, as a log that failed would.
type heldLog struct {
	mu     sync.Mutex
	queued []*audit.Entry
	gate   chan struct{}
	fail   bool
}

type heldEntry struct {
	h *heldLog
	i int64
}

func (h *heldLog) Enqueue(_ context.Context, e *audit.Entry) (audit.Pending, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queued = append(h.queued, e)
	return heldEntry{h, int64(len(h.queued) - 1)}, nil
}

func (h *heldLog) Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error) {
	p, err := h.Enqueue(ctx, e)
	if err != nil {
		return audit.Receipt{}, err
	}
	return p.Wait(ctx)
}

func (p heldEntry) Wait(context.Context) (audit.Receipt, error) {
	<-p.h.gate
	if p.h.fail {
		return audit.Receipt{}, errors.New("disk failed")
	}
	return audit.Receipt{Index: p.i}, nil
}

// waitQueued waits until n entries are queued and returns them.
func (h *heldLog) waitQueued(t *testing.T, n int) []*audit.Entry {
	t.Helper()
	for range 5000 {
		h.mu.Lock()
		q := slices.Clone(h.queued)
		h.mu.Unlock()
		if len(q) >= n {
			return q
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d entries never queued", n)
	return nil
}

// TestAgentDecisionsQueueBehindUndurable: an agent's next decision is
// evaluated while its previous one is queued but not yet durable, and counts
// it (the daily cap); nothing executes before its own decision is durable,
// and when the log fails neither decision is acknowledged or executed.
func TestAgentDecisionsQueueBehindUndurable(t *testing.T) {
	f := newFixture(t, t.TempDir())
	for _, fail := range []bool{false, true} {
		h := &heldLog{gate: make(chan struct{}), fail: fail}
		var executed atomic.Int64
		ex := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
			executed.Add(1)
			return gateway.Outcome{Status: gateway.StatusOK}
		})
		gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: h, Now: f.clock.now, Executors: map[string]gateway.Executor{"transfer": ex}})
		if err != nil {
			t.Fatal(err)
		}
		type reply struct {
			res *gateway.Result
			err error
		}
		replies := make([]chan reply, 2)
		for i := range replies {
			replies[i] = make(chan reply, 1)
			go func() {
				res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 6000, "to": "acct-3"}`)}, true)
				replies[i] <- reply{res, err}
			}()
			q := h.waitQueued(t, i+1) // the second is decided while the first waits
			if want := []string{"allow", "deny"}[i]; q[i].Decision != want {
				t.Fatalf("fail=%v: decision %d queued as %s, want %s (the first counts against the cap)", fail, i, q[i].Decision, want)
			}
		}
		if n := executed.Load(); n != 0 {
			t.Fatalf("fail=%v: %d executions before any decision was durable", fail, n)
		}
		close(h.gate)
		for i, c := range replies {
			r := <-c
			switch {
			case fail && !errors.Is(r.err, gateway.ErrUnavailable):
				t.Errorf("failed log: decision %d: %+v %v, want ErrUnavailable", i, r.res, r.err)
			case !fail && (r.err != nil || r.res.Decision.Decision != []policy.Effect{policy.Allow, policy.Deny}[i]):
				t.Errorf("decision %d: %+v %v", i, r.res, r.err)
			}
		}
		if want := map[bool]int64{false: 1, true: 0}[fail]; executed.Load() != want {
			t.Errorf("fail=%v: %d executions, want %d", fail, executed.Load(), want)
		}
	}
}

// TestRefusedParkingIsNotPending: a request the policy sends for approval
// when the gateway has no approvers is denied (no_approvers) and is final:
// waiting for it returns at once, and it leaves memory with the retention
// window like any other denial (a request taken for parked would be kept
// forever, and an agent could grow the gateway's memory with them).
func TestRefusedParkingIsNotPending(t *testing.T) {
	f := newFixture(t, t.TempDir())
	gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: f.log, Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	trade := func() *gateway.Result {
		t.Helper()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "trade", "amount": 750}`)}, true)
		if err != nil || res.Decision.Decision != policy.Deny || res.Decision.Reason != "no_approvers" {
			t.Fatalf("%+v %v, want a no_approvers denial", res, err)
		}
		return res
	}
	refused := trade().RequestID
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if res, err := gw.Wait(wctx, agent42.ID, refused); err != nil || res.Decision.Reason != "no_approvers" || wctx.Err() != nil {
		t.Fatalf("Wait: %+v %v (context: %v), want the denial at once", res, err, wctx.Err())
	}
	f.clock.advance(8 * 24 * time.Hour)
	trade()
	if _, err := gw.Get(agent42.ID, refused); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("refused request past the retention window: got %v, want ErrNotFound", err)
	}
}
