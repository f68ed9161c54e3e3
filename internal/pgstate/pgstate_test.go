package pgstate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/pglog"
	"github.com/rulelock/rulelock/internal/pgtest"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// testPolicy: a payee cap over all agents, and trades that one treasurer
// must approve.
const testPolicy = `policy "t" {
  default: deny
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0
  allow
}
rule "PayeeCap" {
  precondition: action.type == "transfer"
  condition: global.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 10000
  deny: "at most 10000 per payee per day, all agents together"
}
rule "TradesNeedApproval" {
  precondition: action.type == "trade"
  condition: false
  require_approval {
    approvers: 1
    groups: ["treasury"]
    message: "a treasurer signs every trade"
  }
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
`

// replica is one gateway on the shared log, with its own pool.
type replica struct {
	pool *pgxpool.Pool
	st   *State
	gw   *gateway.Gateway
}

// cluster is several replicas of one log, an upstream and the approvers.
type cluster struct {
	pg      *pgtest.Cluster
	pol     *policy.Policy
	reps    []*replica
	up      *upstream
	signers map[string]note.Signer
	reg     *approval.Registry
}

func newCluster(t testing.TB, n int) *cluster {
	t.Helper()
	return newClusterOn(t, pgtest.New(t), testPolicy, n)
}

// newClusterOn is newCluster on the PostgreSQL cluster pg, with policy src.
func newClusterOn(t testing.TB, pg *pgtest.Cluster, src string, n int) *cluster {
	t.Helper()
	c := &cluster{pg: pg}
	var err error
	c.pol, err = policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.signers, c.reg = approvers(t)
	c.up = newUpstream(t, c)
	for range n {
		c.reps = append(c.reps, c.newReplica(t, nil))
	}
	return c
}

// newReplica opens a replica whose clock is now (time.Now when nil).
func (c *cluster) newReplica(t testing.TB, now func() time.Time) *replica {
	t.Helper()
	ctx := context.Background()
	pool, err := pglog.Connect(ctx, c.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	lg, err := pglog.Open(ctx, pool, pglog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	st, err := New(ctx, pool, lg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	trade := &gateway.HTTPExecutor{Method: "POST", URL: c.up.srv.URL + "/trades", Headers: http.Header{"Authorization": {"Bearer upstream-secret"}}}
	gw, err := gateway.New(gateway.Config{Policy: c.pol, Log: st, Replicas: st, Approvers: c.reg, Now: now,
		Executors: map[string]gateway.Executor{"trade": trade}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := pglog.NewReader(pool).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rebuild(ctx, snap); err != nil {
		t.Fatal(err)
	}
	return &replica{pool: pool, st: st, gw: gw}
}

func approvers(t testing.TB) (map[string]note.Signer, *approval.Registry) {
	t.Helper()
	signers := map[string]note.Signer{}
	var as []approval.Approver
	for _, id := range []string{"alice", "bob", "carol"} {
		skey, vkey, err := note.GenerateKey(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		signers[id], _ = note.NewSigner(skey)
		as = append(as, approval.Approver{ID: id, Groups: []string{"treasury"}, Key: vkey})
	}
	reg, err := approval.NewRegistry(as)
	if err != nil {
		t.Fatal(err)
	}
	return signers, reg
}

func (c *cluster) sign(t testing.TB, approver string, r approval.Request) []byte {
	t.Helper()
	signed, err := approval.Sign(r.Statement(approval.Approve, ""), c.signers[approver])
	if err != nil {
		t.Fatal(err)
	}
	return signed
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

// park submits a trade on r and returns the parked request.
func (c *cluster) park(t testing.TB, r *replica, agent string) approval.Request {
	t.Helper()
	res, err := r.gw.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: agent}, Session: "s",
		Action: action(t, `{"type": "trade", "amount": 5000}`)}, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision.Decision != policy.RequireApproval || res.Approval == nil {
		t.Fatalf("got %+v, want a parked request", res.Decision)
	}
	return *res.Approval
}

// upstream counts the calls for each request id and checks, on each, that
// an approved decision for it is committed in the log (the mediation
// oracle).
type upstream struct {
	t     testing.TB
	srv   *httptest.Server
	c     *cluster
	mu    sync.Mutex
	calls map[string]int
	bad   []string
	hold  chan struct{} // when set, calls wait for it to close
}

func newUpstream(t testing.TB, c *cluster) *upstream {
	u := &upstream{t: t, c: c, calls: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		id := r.Header.Get("Idempotency-Key")
		ok := u.approvedInLog(id)
		u.mu.Lock()
		u.calls[id]++
		if !ok {
			u.bad = append(u.bad, id)
		}
		hold := u.hold
		u.mu.Unlock()
		if hold != nil {
			<-hold
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok": true}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) approvedInLog(id string) bool {
	// The approved decision was appended just before the call: among the
	// last few hundred entries, while at most 16 trials run at once.
	rows, err := u.c.reps[0].pool.Query(context.Background(), `SELECT payload FROM rulelock_entries
		WHERE idx >= (SELECT next FROM rulelock_sequence) - 500 AND position($1::bytea in payload) > 0`, []byte(id))
	if err != nil {
		return false
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var b []byte
		if rows.Scan(&b) != nil {
			return false
		}
		e, err := audit.DecodeEntry(b)
		if err == nil && e.Kind == audit.KindDecision && e.RequestID == id && ledger.Decision(e.Decision) == ledger.Approved {
			n++
		}
	}
	return rows.Err() == nil && n == 1
}

func (u *upstream) count(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[id]
}

// TestPayeeCapAcrossReplicas: ten concurrent transfers of 9,999 to one
// payee from three agents, spread over three replicas, under a cap of
// 10,000 over all agents: in each of 50 trials exactly one is allowed.
func TestPayeeCapAcrossReplicas(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	for trial := range 50 {
		to := fmt.Sprintf("acct-%d", trial)
		var wg sync.WaitGroup
		var mu sync.Mutex
		allowed, decided := 0.0, 0
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := c.reps[i%3]
				agent := policy.Agent{ID: fmt.Sprintf("agent-%d", i%3)}
				res, err := r.gw.Submit(ctx, &gateway.Request{Agent: agent, Session: "s",
					Action: action(t, fmt.Sprintf(`{"type": "transfer", "amount": 9999, "to": %q}`, to))}, false)
				if err != nil {
					t.Errorf("trial %d, transfer %d: %v", trial, i, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				decided++
				if res.Decision.Decision == policy.Allow {
					allowed += 9999
				}
			}()
		}
		wg.Wait()
		if decided != 10 || allowed != 9999 {
			t.Fatalf("trial %d: %d decided, %v allowed to %s; want 10 decided and exactly one 9999 allowed (Σ allowed ≤ 10000)", trial, decided, allowed, to)
		}
	}
}

// TestFinalApprovalsOnTwoReplicas: a trade parked on one replica is
// approved at once on two replicas by two treasurers, either of whom
// completes the quorum: in each of 1,000 trials the upstream is called
// exactly once, after an approved decision was committed, one approval
// executes and the other finds the request closed.
func TestFinalApprovalsOnTwoReplicas(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	const trials, parallel = 1000, 16
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for trial := range trials {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			a, b := c.reps[trial%3], c.reps[(trial+1)%3]
			r := c.park(t, c.reps[(trial+2)%3], fmt.Sprintf("agent-%d", trial))
			var executed, closed int
			var mu sync.Mutex
			var vw sync.WaitGroup
			for k, v := range []struct {
				rep      *replica
				approver string
			}{{a, "alice"}, {b, "bob"}} {
				vw.Add(1)
				go func() {
					defer vw.Done()
					res, err := v.rep.gw.Approve(ctx, v.approver, r.ID, c.sign(t, v.approver, r))
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil && res.Result != nil && res.Result.Outcome != nil:
						executed++
					case approval.Code(err) == "closed":
						closed++
					default:
						t.Errorf("trial %d, approval %d: %+v, %v", trial, k, res, err)
					}
				}()
			}
			vw.Wait()
			if executed != 1 || closed != 1 || c.up.count(r.ID) != 1 {
				t.Errorf("trial %d: %d executed, %d closed, %d upstream calls; want 1, 1, 1", trial, executed, closed, c.up.count(r.ID))
			}
		}()
	}
	wg.Wait()
	if len(c.up.bad) > 0 {
		t.Errorf("upstream called without one committed approved decision for %v", c.up.bad)
	}
	// The log the replicas wrote rebuilds: every vote and execution is
	// checked again, none twice.
	c.newReplica(t, nil)
}

// TestWaitOnAnotherReplica: a request parked on replica A is approved on A;
// a Wait on replica B (woken by LISTEN/NOTIFY) and one on replica C (with
// no listener: it reads the log every second) return it executed.
func TestWaitOnAnotherReplica(t *testing.T) {
	c := newCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, cc := c.reps[0], c.reps[1], c.reps[2]
	go b.st.Listen(ctx, b.gw.Follow)
	r := c.park(t, a, "agent-1")
	type got struct {
		res *gateway.Result
		err error
	}
	waits := make(chan got, 2)
	for _, rep := range []*replica{b, cc} {
		go func() {
			wctx, stop := context.WithTimeout(ctx, time.Minute)
			defer stop()
			res, err := rep.gw.Wait(wctx, "agent-1", r.ID)
			waits <- got{res, err}
		}()
	}
	// Both know the request parked on A before it is approved.
	for _, rep := range []*replica{b, cc} {
		for {
			res, err := rep.gw.Get("agent-1", r.ID)
			if err == nil && res.Approval != nil && res.Approval.State == approval.Pending {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, err := a.gw.Approve(ctx, "alice", r.ID, c.sign(t, "alice", r)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		w := <-waits
		if w.err != nil || w.res.Outcome == nil || w.res.Outcome.Status != gateway.StatusOK || w.res.Approval == nil || w.res.Approval.State != approval.Executed {
			t.Errorf("wait on another replica: %+v, %v; want the request executed with its outcome", w.res, w.err)
		}
	}
	if c.up.count(r.ID) != 1 {
		t.Errorf("%d upstream calls, want 1", c.up.count(r.ID))
	}
}

// TestKilledHolder: a replica that holds the global lock, or a request's
// lock while it executes, is killed (its lock connection ends): the other
// replicas proceed, since PostgreSQL releases a session's advisory locks,
// and nothing is executed twice.
func TestKilledHolder(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	a, b := c.reps[0], c.reps[1]
	transfer := func(r *replica, to string) policy.Effect {
		t.Helper()
		res, err := r.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-9"}, Session: "s",
			Action: action(t, fmt.Sprintf(`{"type": "transfer", "amount": 6000, "to": %q}`, to))}, false)
		if err != nil {
			t.Fatal(err)
		}
		return res.Decision.Decision
	}
	if got := transfer(a, "acct-k"); got != policy.Allow {
		t.Fatalf("first transfer: %s, want allow", got)
	}

	// A holds the global lock, as in the middle of a decision, and dies.
	h, err := a.st.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Lock(ctx, []string{"global"}); err != nil {
		t.Fatal(err)
	}
	decided := make(chan policy.Effect, 1)
	go func() { decided <- transfer(b, "acct-k") }()
	select {
	case got := <-decided:
		t.Fatalf("decided %s while another replica held the global lock", got)
	case <-time.After(200 * time.Millisecond):
	}
	kill(t, b.pool, h.(*holder).conn.Conn().PgConn().PID())
	if got := <-decided; got != policy.Deny {
		t.Errorf("second transfer of 6000 to one payee after the holder died: %s, want deny (cap 10000)", got)
	}
	h.Release()

	// A approves a trade and, while the upstream holds the execution, its
	// lock connection dies; B's approval finds the request decided.
	r := c.park(t, b, "agent-9")
	hold := make(chan struct{})
	var once sync.Once
	unhold := func() {
		once.Do(func() {
			c.up.mu.Lock()
			close(hold)
			c.up.hold = nil
			c.up.mu.Unlock()
		})
	}
	t.Cleanup(unhold) // before the upstream closes, on a failure too
	c.up.mu.Lock()
	c.up.hold = hold
	c.up.mu.Unlock()
	approved := make(chan error, 1)
	go func() {
		_, err := a.gw.Approve(ctx, "alice", r.ID, c.sign(t, "alice", r))
		approved <- err
	}()
	for c.up.count(r.ID) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	// The agent's lock is not held during the execution: its next trade
	// is decided (parked) meanwhile, within the lock wait's timeout.
	c.park(t, b, "agent-9")
	kill(t, b.pool, advisoryHolder(t, b.pool))
	if _, err := b.gw.Approve(ctx, "bob", r.ID, c.sign(t, "bob", r)); approval.Code(err) != "closed" {
		t.Errorf("approval on B while A executes: %v, want closed", err)
	}
	unhold()
	if err := <-approved; err != nil {
		t.Errorf("approval on A: %v", err)
	}
	if n := c.up.count(r.ID); n != 1 {
		t.Errorf("%d upstream calls, want 1", n)
	}
	res, err := b.gw.Get("agent-9", r.ID)
	if err != nil || res.Outcome == nil || res.Approval.State != approval.Executed {
		t.Errorf("B reads the request: %+v, %v; want it executed", res, err)
	}
}

// advisoryHolder is the backend that holds the one advisory lock granted.
func advisoryHolder(t *testing.T, pool *pgxpool.Pool) uint32 {
	t.Helper()
	var pid uint32
	if err := pool.QueryRow(context.Background(), "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").Scan(&pid); err != nil {
		t.Fatalf("the one holder of an advisory lock: %v", err)
	}
	return pid
}

// kill ends backend pid's session, as the death of its replica does.
func kill(t *testing.T, pool *pgxpool.Pool, pid uint32) {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate backend %d: %v, %v", pid, ok, err)
	}
}

// TestReportOnAnotherReplica: the outcome of a decide-only action decided
// on replica A is reported to replica B, once: a second report, on A, is a
// conflict, and A answers with B's outcome.
func TestReportOnAnotherReplica(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	a, b := c.reps[0], c.reps[1]
	res, err := a.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-r"}, Session: "s",
		Action: action(t, `{"type": "transfer", "amount": 10, "to": "acct-r"}`)}, true)
	if err != nil || res.Decision.Decision != policy.Allow {
		t.Fatalf("transfer: %+v, %v", res, err)
	}
	got, err := b.gw.ReportOutcome(ctx, "agent-r", res.RequestID, gateway.Outcome{Status: gateway.StatusOK})
	if err != nil || got.Outcome == nil || !got.Outcome.Reported {
		t.Fatalf("report on B: %+v, %v; want recorded", got, err)
	}
	if _, err := a.gw.ReportOutcome(ctx, "agent-r", res.RequestID, gateway.Outcome{Status: gateway.StatusError}); !errors.Is(err, gateway.ErrConflict) {
		t.Errorf("second report, on A: %v, want ErrConflict", err)
	}
	if got, err := a.gw.Get("agent-r", res.RequestID); err != nil || got.Outcome == nil || got.Outcome.Status != gateway.StatusOK {
		t.Errorf("A reads the request: %+v, %v; want B's ok outcome", got, err)
	}
}

// TestClockBehind: a replica whose clock is a minute behind another's still
// counts that one's latest transfer in its window: it decides no earlier
// than the latest entry it folded.
func TestClockBehind(t *testing.T) {
	c := newCluster(t, 1)
	behind := c.newReplica(t, func() time.Time { return time.Now().Add(-time.Minute) })
	ctx := context.Background()
	for i, r := range []*replica{c.reps[0], behind} {
		res, err := r.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: fmt.Sprintf("agent-%d", i)}, Session: "s",
			Action: action(t, `{"type": "transfer", "amount": 9999, "to": "acct-c"}`)}, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := []policy.Effect{policy.Allow, policy.Deny}[i]; res.Decision.Decision != want {
			t.Errorf("transfer %d of 9999 to one payee (replica clock %d): %s, want %s", i+1, i, res.Decision.Decision, want)
		}
	}
}

// TestExpiryOnReplicas: every replica runs the expiry sweeper; a parked
// request whose time runs out is expired once in the log, every replica
// reads it expired, and a replica started afterwards rebuilds from the log
// (Restore rejects a request expired twice).
func TestExpiryOnReplicas(t *testing.T) {
	pg := pgtest.New(t)
	c := newClusterOn(t, pg, strings.Replace(testPolicy, `message: "a treasurer signs every trade"`, "within: 1s\n    message: \"a treasurer signs every trade\"", 1), 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, r := range c.reps {
		go r.gw.RunExpiry(ctx)
	}
	req := c.park(t, c.reps[0], "agent-e")
	for _, r := range c.reps {
		wctx, stop := context.WithTimeout(ctx, time.Minute)
		res, err := r.gw.Wait(wctx, "agent-e", req.ID)
		stop()
		if err != nil || res.Approval == nil || res.Approval.State != approval.Expired {
			t.Fatalf("wait: %+v, %v; want the request expired", res, err)
		}
	}
	var n int
	if err := c.reps[0].pool.QueryRow(ctx, "SELECT count(*) FROM rulelock_entries WHERE position($1::bytea in payload) > 0 AND position('\"expired\"'::bytea in payload) > 0", []byte(req.ID)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d expiry entries for the request, want 1", n)
	}
	fresh := c.newReplica(t, nil)
	if res, err := fresh.gw.Get("agent-e", req.ID); err != nil || res.Approval == nil || res.Approval.State != approval.Expired {
		t.Errorf("a replica started afterwards: %+v, %v; want the request expired", res, err)
	}
}

// TestSensitiveCapAcrossReplicas: a cap per card number over all agents,
// where the card number is sensitive (a commitment in the log): a replica
// folds another's payment with the number its rules saw, opened with the
// salt in PostgreSQL, so the second 600 on one card is denied.
func TestSensitiveCapAcrossReplicas(t *testing.T) {
	const src = `policy "cards" {
  default: deny
}
action "pay_card" {
  amount: number
  card_number: string sensitive
}
rule "AllowCardPayments" {
  precondition: action.type == "pay_card"
  condition: action.amount > 0
  allow
}
rule "CardDailyLimit" {
  precondition: action.type == "pay_card"
  condition: global.total("pay_card", "amount", {"card_number": action.card_number}, duration("24h")) + action.amount <= 1000
  deny: "At most $1,000 per card in 24 hours"
}
`
	c := newClusterOn(t, pgtest.New(t), src, 2)
	ctx := context.Background()
	for i, want := range []policy.Effect{policy.Allow, policy.Deny} {
		res, err := c.reps[i].gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: fmt.Sprintf("agent-%d", i)}, Session: "s",
			Action: action(t, `{"type": "pay_card", "amount": 600, "card_number": "4111111111111111"}`)}, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Decision.Decision != want {
			t.Errorf("payment %d of 600 on one card, replica %d: %s, want %s", i+1, i, res.Decision.Decision, want)
		}
	}
	var logged string
	if err := c.reps[0].pool.QueryRow(ctx, "SELECT convert_from(payload, 'UTF8') FROM rulelock_entries ORDER BY idx LIMIT 1").Scan(&logged); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logged, "4111111111111111") {
		t.Errorf("the card number is in the log: %s", logged)
	}
}

// TestActivationOnReplicas: a policy activated on a replica reads a limit
// the ledger kept no index for; the replica folds the log again, with the
// other replica's decisions, and goes on counting that one's decisions made
// after.
func TestActivationOnReplicas(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.reps[0], c.reps[1]
	ctx := context.Background()
	p2, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy + `
rule "AllowPay" {
  precondition: action.type == "pay"
  allow
}
rule "PayCap" {
  precondition: action.type == "pay"
  condition: global.total("pay", "amount", {}, duration("24h")) + action.amount <= 1000
  deny: "at most 1000 paid in all"
}
`)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pay := func(r *replica, amount int) policy.Effect {
		t.Helper()
		res, err := r.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-p"}, Session: "s",
			Action: action(t, fmt.Sprintf(`{"type": "pay", "amount": %d}`, amount))}, false)
		if err != nil {
			t.Fatal(err)
		}
		return res.Decision.Decision
	}
	// Before: the policy denies pay (default deny), so nothing counts yet;
	// under p2 on A, then B.
	if got := pay(a, 600); got != policy.Deny {
		t.Fatalf("pay before the activation: %s, want deny (default)", got)
	}
	for i, r := range []*replica{a, b} {
		if err := r.gw.Activate(ctx, &gateway.Active{Policy: p2, Digest: p2.Digest(), Dev: true, Source: "test"}); err != nil {
			t.Fatalf("activate on replica %d: %v", i, err)
		}
		if i == 0 {
			if got := pay(a, 600); got != policy.Allow {
				t.Fatalf("600 on A under the new policy: %s, want allow", got)
			}
		}
	}
	for _, step := range []struct {
		r      *replica
		amount int
		want   policy.Effect
	}{{b, 500, policy.Deny}, {b, 400, policy.Allow}, {a, 1, policy.Deny}} {
		if got := pay(step.r, step.amount); got != step.want {
			t.Errorf("pay %d: %s, want %s (1000 in all)", step.amount, got, step.want)
		}
	}
}

// TestStuckReplicaIsNotReady: a replica that cannot fold an entry of the
// shared log (here: a parked request, and it has no approvers configured)
// answers nothing from the state it knows to be behind, and says so in
// Ready (/readyz), until it can.
func TestStuckReplicaIsNotReady(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	pool, err := pglog.Connect(ctx, c.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	lg, err := pglog.Open(ctx, pool, pglog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	st, err := New(ctx, pool, lg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	bare, err := gateway.New(gateway.Config{Policy: c.pol, Log: st, Replicas: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := bare.Ready(); err != nil {
		t.Fatalf("ready before: %v", err)
	}
	r := c.park(t, c.reps[0], "agent-s")
	if _, err := bare.Get("agent-s", r.ID); !errors.Is(err, gateway.ErrUnavailable) {
		t.Errorf("get on the stuck replica: %v, want ErrUnavailable", err)
	}
	if err := bare.Ready(); !errors.Is(err, gateway.ErrUnavailable) {
		t.Errorf("ready on the stuck replica: %v, want ErrUnavailable", err)
	}
	if _, err := bare.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-t"}, Session: "s",
		Action: action(t, `{"type": "transfer", "amount": 1, "to": "acct-s"}`)}, false); err == nil {
		t.Error("the stuck replica decided")
	}
}
