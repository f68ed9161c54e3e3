package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/pgtest"
)

// sharedPolicy: a cap per payee over all agents together (state the
// replicas share), and trades that one treasurer must approve.
const sharedPolicy = `policy "shared" {
  default: deny
}

action "transfer" {
  amount: number
  to: string
}

action "trade" {
  amount: number
  symbol: string
}

rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0
  allow
}

rule "PayeeCap" {
  precondition: action.type == "transfer"
  condition: global.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 1000
  deny: "at most 1000 per payee per day, all agents together"
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

// sharedReplicas is TestServeStoreShared's setup: three `serve --store`
// replicas with the shared policy, one agent, two approvers.
type sharedReplicas struct {
	t      *testing.T
	s      *storeSetup
	urls   []string
	stops  []func() error
	tokens map[string]string
	keys   map[string]note.Signer
}

func newSharedReplicas(t *testing.T, dsn, upstream string) *sharedReplicas {
	s := newStoreSetup(t, dsn, upstream)
	if err := os.WriteFile(filepath.Join(s.policy, "store.rules"), []byte(sharedPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &sharedReplicas{t: t, s: s, tokens: map[string]string{"agent-1": s.token}, keys: map[string]note.Signer{}}
	var extra strings.Builder
	fmt.Fprintf(&extra, "  trade:\n    method: POST\n    url: %s/trades/{symbol}\n    timeout: 2s\nfreeze:\n  unfreeze_approvers: 2\napprovers:\n", upstream)
	for _, id := range []string{"alice", "bob"} {
		skey, vkey, err := note.GenerateKey(rand.Reader, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.keys[id], err = note.NewSigner(skey); err != nil {
			t.Fatal(err)
		}
		var raw [24]byte
		rand.Read(raw[:])
		r.tokens[id] = "rl_" + hex.EncodeToString(raw[:])
		sum := httpapi.HashToken(r.tokens[id])
		fmt.Fprintf(&extra, "  - id: %s\n    groups: [treasury]\n    key: %s\n    token_sha256: %s\n", id, vkey, hex.EncodeToString(sum[:]))
	}
	for n := range 3 {
		url, stop := startReplica(t, s.replicaConfig(t, n, "127.0.0.1:0", extra.String()))
		r.urls, r.stops = append(r.urls, url), append(r.stops, stop)
	}
	t.Cleanup(r.stopAll)
	return r
}

func (r *sharedReplicas) stopAll() {
	for _, stop := range r.stops {
		if err := stop(); err != nil {
			r.t.Error(err)
		}
	}
	r.stops = nil
}

// do sends method path to replica n as who, with body (JSON) if any.
func (r *sharedReplicas) do(n int, who, method, path, body string) (int, map[string]any) {
	r.t.Helper()
	req, _ := http.NewRequest(method, r.urls[n]+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.tokens[who])
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// approve has who approve request id on replica n: the statement read from
// that replica's pending list, signed with who's key.
func (r *sharedReplicas) approve(n int, who, id string) (int, map[string]any) {
	r.t.Helper()
	status, pending := r.do(n, who, "GET", "/v1/approvals", "")
	if status != 200 {
		r.t.Fatalf("GET /v1/approvals on replica %d: %d %v", n, status, pending)
	}
	stmt := ""
	list, _ := pending["pending"].([]any)
	for _, p := range list {
		p := p.(map[string]any)
		if p["request"].(map[string]any)["id"] == id {
			stmt = p["approve_statement"].(string)
		}
	}
	if stmt == "" {
		r.t.Fatalf("replica %d does not list request %s as pending: %v", n, id, pending)
	}
	return r.signed(n, who, "/v1/requests/"+id+"/approvals", stmt)
}

// metrics returns replica n's /metrics as who.
func (r *sharedReplicas) metrics(n int, who string) string {
	r.t.Helper()
	req, _ := http.NewRequest("GET", r.urls[n]+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+r.tokens[who])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// signed posts text signed by who to path on replica n, as {"note": …}.
func (r *sharedReplicas) signed(n int, who, path, text string) (int, map[string]any) {
	r.t.Helper()
	msg, err := note.Sign(&note.Note{Text: text}, r.keys[who])
	if err != nil {
		r.t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"note": string(msg)})
	return r.do(n, who, "POST", path, string(b))
}

// TestServeStoreShared: state the replicas of `rulelock serve --store`
// share, end to end over HTTP. Concurrent transfers to one payee spread
// over three replicas stay within the all-agents cap; a trade parked on
// one replica is listed and approved on another, and a waiter on a third
// sees it executed, once; two final approvals sent at once to
// two replicas execute once; a freeze recorded on one replica refuses the
// next action on every other one, and two approvers on two replicas lift
// it. The log the replicas wrote verifies with --replay.
func TestServeStoreShared(t *testing.T) {
	c := pgtest.New(t)
	up := &countingUpstream{keys: map[string]int{}}
	srv := httptest.NewServer(up)
	defer srv.Close()
	r := newSharedReplicas(t, c.DSN(), srv.URL)

	// The payee cap: 12 transfers of 200 at once over the replicas; 5 fit.
	var mu sync.Mutex
	var allowed []string
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			status, out := r.do(i%3, "agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 200, "to": "acct-cap"}}`)
			if status != 200 {
				t.Errorf("transfer on replica %d: %d %v", i%3, status, out)
				return
			}
			if decisionOf(out) == "allow" {
				mu.Lock()
				allowed = append(allowed, out["request_id"].(string))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(allowed) != 5 {
		t.Errorf("%d transfers of 200 allowed under a cap of 1000 over three replicas, want exactly 5", len(allowed))
	}
	calls := up.calls()
	for _, id := range allowed {
		if calls[id] != 1 {
			t.Errorf("allowed transfer %s reached the upstream %d times", id, calls[id])
		}
	}

	// The never-resetting log counters of /metrics count the shared log,
	// the other replicas' decisions included, on every replica.
	for n := range 3 {
		var m string
		for range 200 {
			if m = r.metrics(n, "alice"); strings.Contains(m, "\nrulelock_log_decisions_total{decision=\"allow\"} 5\n") &&
				strings.Contains(m, "\nrulelock_log_decisions_total{decision=\"deny\"} 7\n") {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		if !strings.Contains(m, "\nrulelock_log_decisions_total{decision=\"allow\"} 5\n") || !strings.Contains(m, "\nrulelock_log_decisions_total{decision=\"deny\"} 7\n") {
			t.Errorf("replica %d's /metrics does not count the shared log's 5 allows and 7 denials:\n%s", n, m)
		}
	}

	// A trade parked on replica 0, waited for on replica 2, listed and
	// approved on replica 1.
	status, parked := r.do(0, "agent-1", "POST", "/v1/actions", `{"action": {"type": "trade", "amount": 10, "symbol": "ACME"}}`)
	if status != 200 || decisionOf(parked) != "require_approval" {
		t.Fatalf("trade: %d %v", status, parked)
	}
	id := parked["request_id"].(string)
	waited := make(chan map[string]any, 1)
	go func() {
		_, out := r.do(2, "agent-1", "GET", "/v1/requests/"+id+"?wait=20s", "")
		waited <- out
	}()
	if status, out := r.approve(1, "alice", id); status != 200 {
		t.Fatalf("alice's approval on replica 1: %d %v", status, out)
	}
	select {
	case out := <-waited:
		if o, _ := out["outcome"].(map[string]any); o == nil || o["status"] != "ok" {
			t.Errorf("the wait on replica 2 returned %v, want the executed trade", out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the wait on replica 2 never returned")
	}
	if n := up.calls()[id]; n != 1 {
		t.Errorf("the approved trade reached the upstream %d times, want 1", n)
	}

	// Two final approvals at once, on replicas 1 and 2: one execution.
	status, parked = r.do(2, "agent-1", "POST", "/v1/actions", `{"action": {"type": "trade", "amount": 20, "symbol": "INIT"}}`)
	if status != 200 || decisionOf(parked) != "require_approval" {
		t.Fatalf("trade: %d %v", status, parked)
	}
	id2 := parked["request_id"].(string)
	stmts := map[string]string{}
	for n, who := range map[int]string{1: "alice", 2: "bob"} {
		_, pending := r.do(n, who, "GET", "/v1/approvals", "")
		for _, p := range pending["pending"].([]any) {
			if p := p.(map[string]any); p["request"].(map[string]any)["id"] == id2 {
				stmts[who] = p["approve_statement"].(string)
			}
		}
	}
	var ok200 int
	for n, who := range map[int]string{1: "alice", 2: "bob"} {
		wg.Go(func() {
			status, _ := r.signed(n, who, "/v1/requests/"+id2+"/approvals", stmts[who])
			if status == 200 {
				mu.Lock()
				ok200++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok200 == 0 {
		t.Error("neither final approval was accepted")
	}
	if n := up.calls()[id2]; n != 1 {
		t.Errorf("a trade approved at once on two replicas reached the upstream %d times, want 1", n)
	}

	// A freeze on replica 0 refuses the next action on replicas 1 and 2.
	fid := freeze.NewID()
	st := freeze.Statement{ID: fid, Time: time.Now().UTC().Truncate(time.Second), Reason: "stop everything"}
	if status, out := r.signed(0, "alice", "/v1/freeze", string(st.Marshal())); status != 200 {
		t.Fatalf("freeze on replica 0: %d %v", status, out)
	}
	before := len(up.calls())
	for _, n := range []int{1, 2} {
		status, out := r.do(n, "agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "acct-frozen"}}`)
		if e, _ := out["error"].(map[string]any); status != 503 || e == nil || e["code"] != "frozen" {
			t.Errorf("an action on replica %d after the freeze on replica 0: %d %v, want 503 frozen", n, status, out)
		}
	}
	if n := len(up.calls()); n != before {
		t.Errorf("the upstream saw %d requests during the freeze", n-before)
	}
	lift := string(freeze.Statement{Lift: true, ID: fid}.Marshal())
	if status, out := r.signed(1, "alice", "/v1/unfreeze", lift); status != 200 {
		t.Fatalf("alice's unfreeze on replica 1: %d %v", status, out)
	}
	if status, out := r.signed(2, "bob", "/v1/unfreeze", lift); status != 200 {
		t.Fatalf("bob's unfreeze on replica 2: %d %v", status, out)
	}
	for n := range 3 {
		status, out := r.do(n, "agent-1", "POST", "/v1/actions", fmt.Sprintf(`{"action": {"type": "transfer", "amount": 1, "to": "acct-after-%d"}}`, n))
		if status != 200 || decisionOf(out) != "allow" {
			t.Errorf("an action on replica %d after the unfreeze: %d %v", n, status, out)
		}
	}
	r.stopAll()

	// The log the three replicas wrote verifies and replays.
	dir := filepath.Join(t.TempDir(), "export")
	if out, code, stderr := cliCode(t, r.s.dir, "log", "export", "--store", c.DSN(), "--out", dir); code != 0 {
		t.Fatalf("log export: exit %d %s %s", code, out, stderr)
	}
	out, code, stderr := cliCode(t, r.s.dir, "verify", "--key", r.s.vkey, "--replay", "--allow-development",
		"--bundles", filepath.Join(r.s.dir, "replica-0", "bundles"), "--config", filepath.Join(r.s.dir, "replica-0.yaml"), dir)
	if code != 0 || !strings.Contains(out, "0 findings") {
		t.Fatalf("verify --replay of the export: exit %d\n%s%s", code, out, stderr)
	}
}
