package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
)

var crashRuns = flag.Int("crash.runs", 50, "SIGKILLs of the gateway in TestServeCrash")

// serveCrashEnv carries the config path to the child gateway.
const serveCrashEnv = "RULELOCK_SERVE_CRASH_CONFIG"

// crashPolicy allows transfers of a positive amount up to 1,000, with a
// running cap per payee over 24 hours; everything else is denied.
const crashPolicy = `policy "crash" {
  default: deny
}

action "transfer" {
  amount: number
  to: string
  memo?: string
}

rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0
  allow
}

rule "NoLargeTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount <= 1000
  deny: "Transfers over 1000 are not allowed"
}

rule "PayeeDailyCap" {
  precondition: action.type == "transfer"
  condition: agent.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 5000
  deny: "At most 5000 to one payee in 24 hours"
}
`

// crashPayeeCap is the cap of PayeeDailyCap.
const crashPayeeCap = 5000

// crashUpstreamSecret is the credential the gateway holds for the upstream.
const crashUpstreamSecret = "upstream-secret-9f3a"

// runsPerChain is how many crashes share one data directory before it is
// stopped gracefully, verified and replaced.
const runsPerChain = 5

// TestServeCrashChild is the gateway process of TestServeCrash: `rulelock
// serve --config $RULELOCK_SERVE_CRASH_CONFIG`, stopped by SIGTERM or SIGKILL.
func TestServeCrashChild(t *testing.T) {
	cfg := os.Getenv(serveCrashEnv)
	if cfg == "" {
		t.Skip("run by TestServeCrash")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	code := run(ctx, &env{stdin: strings.NewReader(""), stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv},
		[]string{"serve", "--config", cfg})
	stop()
	os.Exit(code)
}

// upReq is one request the upstream received.
type upReq struct {
	key, path, auth, body string
	complete              bool // the whole body arrived
}

// crashUpstream is the oracle: it records every request it receives.
type crashUpstream struct {
	mu       sync.Mutex
	byChain  map[int][]upReq
	keys     map[string]int // Idempotency-Key -> requests, across the whole test
	inflight atomic.Int64
}

func (u *crashUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	body, err := io.ReadAll(r.Body)
	rq := upReq{key: r.Header.Get("Idempotency-Key"), path: r.URL.Path, auth: r.Header.Get("Authorization"), body: string(body), complete: err == nil}
	// The path is /c<chain>/payees/<to>/transfers.
	chain := -1
	if p, ok := strings.CutPrefix(r.URL.Path, "/c"); ok {
		if n, _, ok := strings.Cut(p, "/"); ok {
			chain, _ = strconv.Atoi(n)
		}
	}
	u.mu.Lock()
	u.byChain[chain] = append(u.byChain[chain], rq)
	u.keys[rq.key]++
	u.mu.Unlock()
	if err != nil {
		return
	}
	// Slow down a little, so that kills land between execution and outcome.
	switch n := mrand.IntN(20); {
	case n == 0:
		time.Sleep(20 * time.Millisecond)
	case n < 10:
		time.Sleep(time.Duration(mrand.IntN(2000)) * time.Microsecond)
	}
	w.Header().Set("Content-Type", "application/json")
	if strings.Contains(rq.body, "-fail") {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, `{"error":"upstream refused"}`)
		return
	}
	fmt.Fprintf(w, `{"ok":true,"tx":%q}`, rq.key)
}

func (u *crashUpstream) requests(chain int) []upReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upReq(nil), u.byChain[chain]...)
}

// quiesce waits until no upstream request is being handled.
func (u *crashUpstream) quiesce(t *testing.T) {
	for i := 0; u.inflight.Load() != 0; i++ {
		if i > 500 {
			t.Fatalf("the upstream still has %d requests in flight", u.inflight.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ack is a reply the gateway gave: it acknowledged a decision.
type ack struct {
	run        int
	id         string
	decision   string // allow, deny; "" for a 400 refusal
	index      int64  // the decision entry
	outcome    string // outcome status, when the reply had one
	outIndex   int64
	body       string // what the test sent
	httpStatus int
}

// crashChild is one gateway process.
type crashChild struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

func (c *crashChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *crashChild) tail() string {
	<-c.done
	s := c.stderr.String()
	if len(s) > 3000 {
		s = "..." + s[len(s)-3000:]
	}
	return s
}

// crashChain is one data directory that goes through several crashes.
type crashChain struct {
	t       *testing.T
	n       int
	dir     string
	data    string
	cfg     string
	url     string
	token   string
	up      *crashUpstream
	acks    []ack
	unknown map[string]int // allowed decisions open at a kill -> run: recovery must close them as unknown
	child   *crashChild
	seq     atomic.Int64
	payees  []string
}

// TestServeCrash kills `rulelock serve` (a child process) with SIGKILL at
// random moments during mixed traffic, restarts it on the same data
// directory and checks invariants 1, 7 and 8 against the log and an upstream
// that records every request it receives:
//
//   - every acknowledged decision and outcome is in the log, as replied;
//   - every upstream request has an earlier durable allow decision for the
//     same request id and exactly the same canonical bytes, and no request id
//     reaches the upstream twice, across restarts;
//   - every allow decision has exactly one outcome entry after recovery, and
//     those the crash interrupted are `unknown`;
//   - the per-payee cap holds when recomputed from the log;
//   - the log verifies after a graceful stop.
func TestServeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test in -short mode")
	}
	up := &crashUpstream{byChain: map[int][]upReq{}, keys: map[string]int{}}
	srv := httptest.NewServer(up)
	defer srv.Close()

	var raw [24]byte
	rand.Read(raw[:])
	token := "rl_" + hex.EncodeToString(raw[:])

	start := time.Now()
	runs := *crashRuns
	var stats struct{ acked, allowed, upstream, unknown, startupKills int }
	for chainN, run := 0, 0; run < runs; chainN++ {
		c := newCrashChain(t, chainN, srv.URL, token, up)
		n := min(runsPerChain, runs-run)
		c.start(run)
		c.waitReady(run)
		for range n {
			c.crashOnce(run, &stats.startupKills)
			run++
		}
		s := c.finish(run - 1)
		stats.acked += len(c.acks)
		stats.allowed += s.allowed
		stats.upstream += s.upstream
		stats.unknown += s.unknown
	}
	t.Logf("%d runs in %v: %d replies acknowledged, %d allowed decisions, %d upstream requests, %d outcomes recovered as unknown, %d kills during startup",
		runs, time.Since(start).Round(time.Millisecond), stats.acked, stats.allowed, stats.upstream, stats.unknown, stats.startupKills)
	up.mu.Lock()
	for key, n := range up.keys {
		if n > 1 {
			t.Errorf("DUPLICATE EFFECT: request %s reached the upstream %d times", key, n)
		}
	}
	up.mu.Unlock()
	if stats.acked == 0 || stats.upstream == 0 {
		t.Fatal("nothing was acknowledged or executed: the test tested nothing")
	}
}

func newCrashChain(t *testing.T, n int, upstream, token string, up *crashUpstream) *crashChain {
	t.Helper()
	dir := t.TempDir()
	c := &crashChain{t: t, n: n, dir: dir, data: filepath.Join(dir, "data"), token: token, up: up, unknown: map[string]int{}}
	if err := os.WriteFile(filepath.Join(dir, "crash.rules"), []byte(crashPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	// A fixed loopback port, free now, reused by every restart.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c.url = "http://" + addr
	sum := sha256.Sum256([]byte(token))
	cfg := fmt.Sprintf(`listen: %s
data_dir: %s
policy: %s
origin: crash.rulelock.test/log
checkpoint_interval: 20ms
agents:
  - id: agent-crash
    roles: [payments]
    token_sha256: %s
executors:
  transfer:
    method: POST
    url: %s/c%d/payees/{to}/transfers
    timeout: 5s
    headers:
      Authorization:
        value: %s
        prefix: "Bearer "
`, addr, c.data, filepath.Join(dir, "crash.rules"), hex.EncodeToString(sum[:]), upstream, n, crashUpstreamSecret)
	c.cfg = filepath.Join(dir, "rulelock.yaml")
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		c.payees = append(c.payees, fmt.Sprintf("acct-%d-%d", n, i))
	}
	return c
}

// start starts a gateway process on the chain's data directory.
func (c *crashChain) start(run int) {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeCrashChild$")
	// Under -race, a process that exits sleeps 1s first (atexit_sleep_ms):
	// not needed here, where race reports go to the child's stderr.
	cmd.Env = append(os.Environ(), serveCrashEnv+"="+c.cfg, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	stderr := &syncBuffer{}
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("run %d: start the gateway: %v", run, err)
	}
	ch := &crashChild{cmd: cmd, stderr: stderr, done: make(chan struct{})}
	go func() { ch.err = cmd.Wait(); close(ch.done) }()
	c.child = ch
	c.t.Cleanup(func() {
		if !ch.exited() {
			ch.cmd.Process.Kill()
			<-ch.done
		}
	})
}

func (c *crashChain) waitReady(run int) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for retries := 0; time.Now().Before(deadline); {
		if c.child.exited() {
			// The port may be briefly taken (another process's connection):
			// that is the machine, not the gateway.
			if strings.Contains(c.child.stderr.String(), "address already in use") && retries < 50 {
				retries++
				time.Sleep(100 * time.Millisecond)
				c.start(run)
				continue
			}
			c.t.Fatalf("run %d: the gateway exited before it was ready: %v\n%s", run, c.child.err, c.child.tail())
		}
		resp, err := http.Get(c.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.child.cmd.Process.Kill()
	c.t.Fatalf("run %d: the gateway was not ready after 30s\n%s", run, c.child.tail())
}

// kill SIGKILLs the gateway and waits for it to be gone.
func (c *crashChain) kill() {
	c.child.cmd.Process.Signal(syscall.SIGKILL)
	<-c.child.done
}

// body returns a random request body and a note of what kind it is.
func (c *crashChain) body(run, worker int) string {
	n := c.seq.Add(1)
	memo := fmt.Sprintf("c%d-r%d-w%d-%d", c.n, run, worker, n)
	to := c.payees[mrand.IntN(len(c.payees))]
	amount := 1 + mrand.IntN(1000)
	switch k := mrand.IntN(100); {
	case k < 8: // the upstream refuses it: an error outcome
		memo += "-fail"
	case k < 22: // over 1000: denied
		amount = 1001 + mrand.IntN(50000)
	case k < 28: // not positive: denied by default
		amount = -mrand.IntN(100)
	case k < 40: // one hot payee: over the cap soon
		to = "hot-" + strconv.Itoa(c.n)
		amount = 400 + mrand.IntN(600)
	case k < 43: // an unknown action type: denied
		return fmt.Sprintf(`{"action": {"type": "refund", "amount": %d, "to": %q, "memo": %q}}`, amount, to, memo)
	case k < 45: // type confusion: refused before a decision (400, logged as a denial)
		return fmt.Sprintf(`{"action": {"type": "transfer", "amount": "%d", "to": %q, "memo": %q}}`, amount, to, memo)
	case k < 50: // a fractional amount: still canonical bytes
		return fmt.Sprintf(`{"session": "s-%d", "action": {"memo": %q, "to": %q, "amount": %d.25, "type": "transfer"}}`, worker, memo, to, amount-1)
	}
	return fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": %q, "memo": %q}, "session": "s-%d"}`, amount, to, memo, worker)
}

// send posts one action. It returns the acknowledgement, or ok false when
// the gateway gave no reply (it was killed).
func (c *crashChain) send(client *http.Client, run int, body string) (ack, bool, error) {
	req, _ := http.NewRequest("POST", c.url+"/v1/actions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return ack{}, false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return ack{}, false, err // the reply was cut: not acknowledged
	}
	var r struct {
		RequestID string `json:"request_id"`
		Decision  *struct {
			Decision string `json:"decision"`
		} `json:"decision"`
		Receipt struct {
			Index int64 `json:"index"`
		} `json:"receipt"`
		Outcome *struct {
			Status string `json:"status"`
		} `json:"outcome"`
		OutcomeReceipt *struct {
			Index int64 `json:"index"`
		} `json:"outcome_receipt"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return ack{}, false, fmt.Errorf("HTTP %d, reply not JSON: %q", resp.StatusCode, b)
	}
	a := ack{run: run, id: r.RequestID, index: r.Receipt.Index, body: body, httpStatus: resp.StatusCode}
	switch resp.StatusCode {
	case 200:
		if r.RequestID == "" || r.Decision == nil {
			return ack{}, false, fmt.Errorf("HTTP 200 without a request id or decision: %s", b)
		}
		a.decision = r.Decision.Decision
		if r.Outcome != nil {
			if r.OutcomeReceipt == nil {
				return ack{}, false, fmt.Errorf("an outcome without an outcome receipt: %s", b)
			}
			a.outcome, a.outIndex = r.Outcome.Status, r.OutcomeReceipt.Index
		}
	case 400:
		if r.RequestID == "" {
			return ack{}, false, fmt.Errorf("HTTP 400 without a request id: %s", b)
		}
	default:
		return ack{}, false, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return a, true, nil
}

// traffic drives workers until the gateway is signalled and gone; it
// returns the acks.
func (c *crashChain) traffic(run int, workers int, killed *atomic.Bool) []ack {
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for !killed.Load() {
				body := c.body(run, w)
				a, ok, err := c.send(client, run, body)
				if !ok {
					if killed.Load() {
						return
					}
					c.t.Errorf("run %d: %s: no acknowledgement while the gateway ran: %v", run, body, err)
					return
				}
				mu.Lock()
				acks = append(acks, a)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acks
}

// crashOnce is one run: traffic, SIGKILL at a random moment, checks on the
// log as the crash left it, restart, a little more traffic.
func (c *crashChain) crashOnce(run int, startupKills *int) {
	c.t.Helper()
	var killed atomic.Bool
	delay := time.Duration(mrand.IntN(150_000)) * time.Microsecond
	go func() {
		time.Sleep(delay)
		killed.Store(true)
		c.child.cmd.Process.Signal(syscall.SIGKILL)
	}()
	acks := c.traffic(run, 2+mrand.IntN(3), &killed)
	<-c.child.done
	c.acks = append(c.acks, acks...)
	c.checkStopped(run, "after the kill")

	c.start(run)
	if mrand.IntN(6) == 0 {
		// Kill it again while it starts (opening the log, recovering).
		time.Sleep(time.Duration(mrand.IntN(40_000)) * time.Microsecond)
		c.kill()
		*startupKills++
		c.checkStopped(run, "after a kill during startup")
		c.start(run)
	}
	c.waitReady(run)
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	for range 3 {
		body := c.body(run, 99)
		a, ok, err := c.send(client, run, body)
		if !ok {
			c.kill()
			c.t.Fatalf("run %d: after the restart: %s: %v\n%s", run, body, err, c.child.tail())
		}
		c.acks = append(c.acks, a)
	}
}

// logView is the log read back.
type logView struct {
	size      int64
	decisions map[string][]int64 // request id -> decision entries
	outcomes  map[string][]int64 // request id -> outcome entries
	entries   []*audit.Entry
	actions   map[int64]string // decision index -> canonical action text
}

// readLog reads every entry of the stopped gateway's log.
func (c *crashChain) readLog(run int, when string) *logView {
	c.t.Helper()
	l, err := audit.Open(filepath.Join(c.data, "log"), audit.Options{})
	if err != nil {
		c.t.Fatalf("run %d %s: open the log: %v", run, when, err)
	}
	defer l.Close()
	v := &logView{size: l.Size(), decisions: map[string][]int64{}, outcomes: map[string][]int64{}, actions: map[int64]string{}}
	for i := int64(0); i < v.size; i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			c.t.Fatalf("run %d %s: entry %d: %v", run, when, i, err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			c.t.Fatalf("run %d %s: entry %d: %v", run, when, i, err)
		}
		v.entries = append(v.entries, e)
		switch e.Kind {
		case audit.KindDecision:
			v.decisions[e.RequestID] = append(v.decisions[e.RequestID], i)
			text := e.Action.Text
			if text == "" && !e.Action.Digest.IsZero() {
				b, err := l.Blob(e.Action.Digest)
				if err != nil {
					c.t.Fatalf("run %d %s: entry %d: action blob: %v", run, when, i, err)
				}
				text = string(b)
			}
			v.actions[i] = text
		case audit.KindOutcome:
			v.outcomes[e.RequestID] = append(v.outcomes[e.RequestID], i)
		}
	}
	return v
}

// checkStopped checks the log of a gateway that was just killed: every
// acknowledged entry is there, and every request the upstream has seen so
// far was decided (allow, same bytes) durably before it was sent.
func (c *crashChain) checkStopped(run int, when string) {
	c.t.Helper()
	v := c.readLog(run, when)
	c.checkAcks(v, when)
	c.checkUpstream(v, run, when)
	// Allowed decisions without an outcome: the next start must close them
	// as unknown, without executing them again.
	for id, idx := range v.decisions {
		e := v.entries[idx[0]]
		if e.Decision == "allow" && len(v.outcomes[id]) == 0 {
			if _, ok := c.unknown[id]; !ok {
				c.unknown[id] = run
			}
		}
	}
	if c.t.Failed() {
		c.t.FailNow() // the later checks would repeat what failed
	}
}

// checkAcks: no acknowledged decision or outcome is lost, and the log says
// what the reply said.
func (c *crashChain) checkAcks(v *logView, when string) {
	c.t.Helper()
	for _, a := range c.acks {
		ds := v.decisions[a.id]
		if len(ds) != 1 {
			c.t.Errorf("chain %d run %d %s: acknowledged request %s (HTTP %d, %s) has %d decision entries in the log (size %d), want 1: %s",
				c.n, a.run, when, a.id, a.httpStatus, a.decision, len(ds), v.size, a.body)
			continue
		}
		e := v.entries[ds[0]]
		if ds[0] != a.index {
			c.t.Errorf("chain %d run %d %s: request %s: the reply's receipt says entry %d, the decision is entry %d", c.n, a.run, when, a.id, a.index, ds[0])
		}
		want := a.decision
		if a.httpStatus == 400 {
			want = "deny"
		}
		if e.Decision != want {
			c.t.Errorf("chain %d run %d %s: request %s: replied %q, logged %q", c.n, a.run, when, a.id, want, e.Decision)
		}
		if a.outcome == "" {
			continue
		}
		outs := v.outcomes[a.id]
		if len(outs) != 1 {
			c.t.Errorf("chain %d run %d %s: request %s: acknowledged outcome %q, but %d outcome entries in the log (size %d): %s",
				c.n, a.run, when, a.id, a.outcome, len(outs), v.size, a.body)
			continue
		}
		if outs[0] != a.outIndex || v.entries[outs[0]].Status != a.outcome {
			c.t.Errorf("chain %d run %d %s: request %s: replied outcome %q at %d, logged %q at %d",
				c.n, a.run, when, a.id, a.outcome, a.outIndex, v.entries[outs[0]].Status, outs[0])
		}
	}
}

// checkUpstream is the mediation oracle: each upstream request matches one
// durable allow decision with the same id and canonical bytes.
func (c *crashChain) checkUpstream(v *logView, run int, when string) int {
	c.t.Helper()
	reqs := c.up.requests(c.n)
	seen := map[string]int{}
	for _, r := range reqs {
		ds := v.decisions[r.key]
		if len(ds) != 1 {
			c.t.Errorf("chain %d run %d %s: MEDIATION: the upstream received request %q (%s %s) with %d decision entries in the log, want 1",
				c.n, run, when, r.key, r.path, r.body, len(ds))
			continue
		}
		e := v.entries[ds[0]]
		if e.Decision != "allow" {
			c.t.Errorf("chain %d run %d %s: MEDIATION: the upstream received request %s whose decision (entry %d) is %q", c.n, run, when, r.key, ds[0], e.Decision)
		}
		if r.complete && r.body != v.actions[ds[0]] {
			c.t.Errorf("chain %d run %d %s: MEDIATION: request %s: the upstream received %q, the decision (entry %d) is for %q",
				c.n, run, when, r.key, r.body, ds[0], v.actions[ds[0]])
		}
		var act struct{ To string }
		json.Unmarshal([]byte(v.actions[ds[0]]), &act)
		if want := fmt.Sprintf("/c%d/payees/%s/transfers", c.n, act.To); r.path != want {
			c.t.Errorf("chain %d run %d %s: request %s went to %s, want %s", c.n, run, when, r.key, r.path, want)
		}
		if r.auth != "Bearer "+crashUpstreamSecret || strings.Contains(r.body, c.token) {
			c.t.Errorf("chain %d run %d %s: request %s: upstream credentials %q (want the gateway's own)", c.n, run, when, r.key, r.auth)
		}
		seen[r.key]++
	}
	for key, n := range seen {
		if n > 1 {
			c.t.Errorf("chain %d run %d %s: DUPLICATE EFFECT: request %s reached the upstream %d times", c.n, run, when, key, n)
		}
	}
	return len(reqs)
}

type chainStats struct{ allowed, upstream, unknown int }

// finish stops the gateway gracefully and checks the whole log.
func (c *crashChain) finish(run int) chainStats {
	c.t.Helper()
	// SIGTERM under traffic: requests in flight finish, with their outcomes.
	var stopped atomic.Bool
	go func() {
		time.Sleep(time.Duration(mrand.IntN(100_000)) * time.Microsecond)
		stopped.Store(true)
		c.child.cmd.Process.Signal(syscall.SIGTERM)
	}()
	c.acks = append(c.acks, c.traffic(run, 3, &stopped)...)
	select {
	case <-c.child.done:
	case <-time.After(60 * time.Second):
		c.kill()
		c.t.Fatalf("chain %d: the gateway did not stop within 60s of SIGTERM\n%s", c.n, c.child.tail())
	}
	if c.child.err != nil {
		c.t.Fatalf("chain %d: graceful stop: %v\n%s", c.n, c.child.err, c.child.tail())
	}
	c.up.quiesce(c.t)
	when := "after the final stop"
	v := c.readLog(run, when)
	var st chainStats
	c.checkAcks(v, when)
	st.upstream = c.checkUpstream(v, run, when)

	// Every request id is decided once; every allow has exactly one outcome.
	upstream := map[string]bool{}
	for _, r := range c.up.requests(c.n) {
		if r.complete {
			upstream[r.key] = true
		}
	}
	paid := map[string]float64{}
	ids := make([]string, 0, len(v.decisions))
	for id := range v.decisions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ds := v.decisions[id]
		if len(ds) != 1 {
			c.t.Errorf("chain %d: request %s has %d decision entries (%v)", c.n, id, len(ds), ds)
			continue
		}
		d := v.entries[ds[0]]
		outs := v.outcomes[id]
		if d.Decision != "allow" {
			if len(outs) != 0 {
				c.t.Errorf("chain %d: request %s was decided %q but has outcome entries %v", c.n, id, d.Decision, outs)
			}
			continue
		}
		st.allowed++
		if len(outs) != 1 {
			c.t.Errorf("chain %d: allowed request %s (decision entry %d, open since run %d) has %d outcome entries %v, want exactly 1",
				c.n, id, ds[0], c.unknown[id], len(outs), outs)
			continue
		}
		o := v.entries[outs[0]]
		if o.Closes != ds[0] || outs[0] <= ds[0] {
			c.t.Errorf("chain %d: request %s: outcome entry %d closes %d, the decision is entry %d", c.n, id, outs[0], o.Closes, ds[0])
		}
		switch o.Status {
		case "ok", "error", "unknown":
		default:
			c.t.Errorf("chain %d: request %s: outcome status %q", c.n, id, o.Status)
		}
		if r, open := c.unknown[id]; open {
			if o.Status != "unknown" {
				c.t.Errorf("chain %d run %d: request %s had no outcome when the gateway was killed, and then got outcome %q (entry %d), want unknown: was it executed again?",
					c.n, r, id, o.Status, outs[0])
			}
			st.unknown++
		}
		if o.Status == "ok" && !upstream[id] {
			c.t.Errorf("chain %d: request %s has outcome ok (entry %d) but the upstream never received it", c.n, id, outs[0])
		}
		if o.Status != "error" {
			var act struct {
				To     string
				Amount float64
			}
			json.Unmarshal([]byte(v.actions[ds[0]]), &act)
			paid[act.To] += act.Amount
		}
	}
	for id, outs := range v.outcomes {
		if _, ok := v.decisions[id]; !ok {
			c.t.Errorf("chain %d: outcome entries %v for request %s, which has no decision", c.n, outs, id)
		}
	}
	// Invariant 6, recomputed from the log across the crashes.
	for to, sum := range paid {
		if sum > crashPayeeCap {
			c.t.Errorf("chain %d: payee %s: %v allowed and not failed, over the cap of %d", c.n, to, sum, crashPayeeCap)
		}
	}

	// Invariant 7: the log verifies, and the final checkpoint covers it.
	pub, err := os.ReadFile(filepath.Join(c.data, "log.pub"))
	if err != nil {
		c.t.Fatal(err)
	}
	key, err := audit.ParseVerifierKey(string(pub))
	if err != nil {
		c.t.Fatal(err)
	}
	rep, err := audit.VerifyDir(filepath.Join(c.data, "log"), key, audit.VerifyOptions{})
	if err != nil {
		c.t.Fatalf("chain %d (runs up to %d): the log does not verify: %v", c.n, run, err)
	}
	if rep.Entries != v.size || rep.Uncovered != 0 {
		c.t.Errorf("chain %d: verified %d entries with %d uncovered by the final checkpoint; the log has %d", c.n, rep.Entries, rep.Uncovered, v.size)
	}
	return st
}
