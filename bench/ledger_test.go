package bench

// The ledger (issue 13): state is a fold of the log, and the stateful
// helpers (session|agent|principal|global .count/.total/.succeeded) are
// answered from indexes. docs/benchmarks.md, "Ledger (issue 13)", has the
// numbers and how they were run:
//
//   - BenchmarkLedgerScale: one decision of an agent with 1,000,000 retained
//     decisions against one of an agent with 50, in the same gateway:
//
//     cd bench && go test -run '^$' -bench LedgerScale -benchtime 100000x -count 6 .
//
//   - BenchmarkLedgerDecide: in-process decisions (gateway.Submit,
//     decide-only) under the seed rule and the payments policy, from one
//     goroutine (latency: p50-ns, p99-ns) and from 64 (throughput: ns/op):
//
//     cd bench && go test -run '^$' -bench LedgerDecide -count 6 .
//
//   - TestLedgerRSS (with -rss): the resident memory of rulelock and of OPA
//     after 100,000 decisions, each in a process of its own.
//
// The benchmarks compile against the code before the ledger too (commit
// a8cd9eb) once MaxHistory is raised and agent.total is session.total
// there, so that before and after run side by side (see the docs).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

var (
	ledgerRetained = flag.Int("ledger.retained", 1_000_000, "BenchmarkLedgerScale: the big agent's retained decisions")
	ledgerAmount   = flag.Float64("ledger.amount", 1, "BenchmarkLedgerScale: the amount of each retained decision (1.25: not an integer)")
	rssOn          = flag.Bool("rss", false, "run TestLedgerRSS (a minute or two)")
	rssRounds      = flag.Int("rss.rounds", 3, "TestLedgerRSS: rounds of every process")
	rssDecisions   = flag.Int("rss.decisions", 100_000, "TestLedgerRSS: decisions per process")
)

// encodingRecorder is a gateway.Recorder that encodes each entry as the
// audit log does and keeps nothing: the decision path's CPU without the
// write, the fsync and the group commit.
type encodingRecorder struct{ n atomic.Int64 }

func (r *encodingRecorder) Append(_ context.Context, e *audit.Entry) (audit.Receipt, error) {
	if _, err := e.Encode(); err != nil {
		return audit.Receipt{}, err
	}
	return audit.Receipt{Index: r.n.Add(1) - 1}, nil
}

// simClock is a simulated clock that advances by step at every tick.
type simClock struct {
	start time.Time
	step  time.Duration
	n     atomic.Int64
}

func (c *simClock) now() time.Time { return c.start.Add(time.Duration(c.n.Load()) * c.step) }
func (c *simClock) tick()          { c.n.Add(1) }

// scaleCap is the agent's payee limit in BenchmarkLedgerScale: far above
// what the retained decisions add up to, an exact integer for the sums.
const scaleCap = 1_000_000_000_000

// scalePolicy is payments.rules' PayeeDailyLimit in the agent's scope.
var scalePolicy = `policy "scale" {
  default: deny
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0
  allow
}
rule "AgentPayeeDailyLimit" {
  precondition: action.type == "transfer"
  condition: agent.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= ` + strconv.Itoa(scaleCap) + `
  deny: "over the payee limit"
}
`

// scale is BenchmarkLedgerScale's gateway, built once per process: the
// benchmark runs -count times in one process.
var scale struct {
	once sync.Once
	gw   *gateway.Gateway
	c    *simClock
	err  error
	took time.Duration
}

var (
	scaleBig   = policy.Agent{ID: "agent-big", Roles: []string{"payments"}}
	scaleSmall = policy.Agent{ID: "agent-small", Roles: []string{"payments"}}
)

// BenchmarkLedgerScale measures one decision of an agent with
// -ledger.retained (1,000,000) retained decisions against one of an agent
// with 50, in the same gateway (same heap, same policy): the helper
// agent.total(..., duration("24h")) sums over every retained decision of
// the agent, all to one payee and within the window, so it is one series
// of 1,000,000 points. The decisions are built through the real gateway
// (gateway.Submit, decide-only, allowed transfers of -ledger.amount ($1),
// one every 50 ms of simulated time; the last one brings the total to
// exactly the cap, which checks the sum). With an amount that is not an
// integer (-ledger.amount 1.25) the series sums its window point by point
// (see internal/ledger's series), and building it is quadratic: use fewer
// retained decisions. Each measured decision is a $1 transfer, denied by the
// limit after the helper has summed the window: it adds nothing to the
// ledger, so the agents keep their sizes whatever b.N is (the gateway
// keeps each denied request's small record), at the time of the last
// retained decision.
func BenchmarkLedgerScale(b *testing.B) {
	scale.once.Do(func() {
		p, err := policy.FromSources([]policy.Source{{Name: "scale.rules", Data: []byte(scalePolicy)}}, policy.Options{})
		if err != nil {
			scale.err = err
			return
		}
		scale.c = &simClock{start: benchNow, step: 50 * time.Millisecond}
		scale.gw, err = gateway.New(gateway.Config{Policy: p, Log: &encodingRecorder{}, Now: scale.c.now})
		if err != nil {
			scale.err = err
			return
		}
		start := time.Now()
		if scale.err = scaleFill(scale.gw, scale.c, scaleBig, *ledgerRetained); scale.err == nil {
			scale.err = scaleFill(scale.gw, scale.c, scaleSmall, 50)
		}
		scale.took = time.Since(start)
	})
	if scale.err != nil {
		b.Fatal(scale.err)
	}
	b.Logf("%d + 50 decisions built in %v", *ledgerRetained, scale.took.Round(time.Millisecond))
	for _, a := range []struct {
		name  string
		agent policy.Agent
	}{{"retained=50", scaleSmall}, {fmt.Sprintf("retained=%d", *ledgerRetained), scaleBig}} {
		b.Run(a.name, func(b *testing.B) {
			act := newAction(b, map[string]any{"type": "transfer", "amount": 1.0, "to": "acct-1"})
			req := &gateway.Request{Agent: a.agent, Session: "s", Action: act}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				// The clock stands still: -count runs each sub-benchmark
				// again, and the retained decisions must stay in the window.
				res, err := scale.gw.Submit(ctx, req, false)
				if err != nil {
					b.Fatal(err)
				}
				if res.Decision.Decision != policy.Deny {
					b.Fatalf("got %s, want deny by the limit", res.Decision.Decision)
				}
			}
		})
	}
}

// scaleFill makes n allowed decisions for agent whose amounts add up to
// scaleCap: n-1 transfers of -ledger.amount, then one that reaches the cap exactly
// (allowed only if the helper's sum is right).
func scaleFill(gw *gateway.Gateway, c *simClock, agent policy.Agent, n int) error {
	one, err := policy.NewAction(map[string]any{"type": "transfer", "amount": *ledgerAmount, "to": "acct-1"})
	if err != nil {
		return err
	}
	last, err := policy.NewAction(map[string]any{"type": "transfer", "amount": scaleCap - float64(n-1)**ledgerAmount, "to": "acct-1"})
	if err != nil {
		return err
	}
	ctx := context.Background()
	for i := range n {
		req := &gateway.Request{Agent: agent, Session: "s", Action: one}
		if i == n-1 {
			req.Action = last
		}
		c.tick()
		res, err := gw.Submit(ctx, req, false)
		if err != nil {
			return err
		}
		if res.Decision.Decision != policy.Allow {
			return fmt.Errorf("%s's decision %d: %s (%v %v), want allow", agent.ID, i, res.Decision.Decision, res.Decision.Rules, res.Decision.Errors)
		}
	}
	return nil
}

// BenchmarkLedgerDecide is the gateway's decision in-process
// (gateway.Submit, decide-only, the entry encoded as the log does and
// dropped) under the seed rule (stateless) and the payments policy
// (examples/payments: its payee limit reads a 24-hour total, now
// global.total, before the ledger session.total), for allowed transfers of
// $500 to 1,000 payees from 64 agents, one decision every 5 s of simulated
// time (about 120,000 decisions within the 7-day retention: the ledger and
// the requests are kept as in a deployment).
//
// goroutines=1: one decision at a time; p50-ns and p99-ns are the
// decisions' own latencies. goroutines=64: 64 concurrent callers on
// GOMAXPROCS processors (one agent each); ns/op is the inverse of the
// throughput.
func BenchmarkLedgerDecide(b *testing.B) {
	for _, name := range []string{"seed", "payments"} {
		p := examplePolicy(b, name)
		for _, g := range []int{1, 64} {
			b.Run(fmt.Sprintf("policy=%s/goroutines=%d", name, g), func(b *testing.B) {
				benchmarkLedgerDecide(b, p, g)
			})
		}
	}
}

func benchmarkLedgerDecide(b *testing.B, p *policy.Policy, goroutines int) {
	c := &simClock{start: benchNow, step: 5 * time.Second}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: &encodingRecorder{}, Now: c.now})
	if err != nil {
		b.Fatal(err)
	}
	const agents, payees = 64, 1000
	acts := make([]policy.Action, payees)
	for i := range acts {
		acts[i] = newAction(b, map[string]any{"type": "transfer", "amount": 500.0, "to": fmt.Sprintf("acct-%d", i)})
	}
	var next, denied atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	agentsOf := make([]policy.Agent, agents)
	for i := range agentsOf {
		agentsOf[i] = policy.Agent{ID: fmt.Sprintf("agent-%03d", i), Roles: []string{"payments"}}
	}
	// Decision i is agent i mod 64's: one goroutine takes turns with every
	// agent; 64 goroutines have one agent each.
	worker := func(more func() bool) {
		var mine []time.Duration
		for i := int(next.Add(1)); more(); i += goroutines {
			c.tick()
			req := &gateway.Request{Agent: agentsOf[i%agents], Session: "s", Action: acts[i%payees]}
			t0 := time.Now()
			res, err := gw.Submit(context.Background(), req, false)
			mine = append(mine, time.Since(t0))
			if err != nil {
				b.Error(err)
				return
			}
			if res.Decision.Decision != policy.Allow {
				denied.Add(1)
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	}
	b.ReportAllocs()
	if goroutines == 1 {
		b.ResetTimer()
		n := 0
		worker(func() bool { n++; return n <= b.N })
	} else {
		b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) { worker(pb.Next) })
	}
	b.StopTimer()
	if d := denied.Load(); d > 0 {
		b.Fatalf("%d of %d decisions were not allow", d, b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

// rssEnv, set to one of rssKinds, makes the test binary a TestLedgerRSS
// child (see TestMain): it makes -rss.decisions decisions, then prints its
// memory as one JSON line and exits.
const rssEnv = "RULELOCK_BENCH_RSS"

// rssReport is what a TestLedgerRSS child prints.
type rssReport struct {
	Kind      string
	Decisions int
	Allowed   int
	RSS0      int64 // VmRSS before the decisions, after a GC that returned free memory to the OS
	RSS       int64 // VmRSS after them, likewise
	HWM       int64 // VmHWM: the peak resident memory
	Heap0     uint64
	Heap      uint64 // HeapAlloc after the GC
}

// rssKinds are TestLedgerRSS's in-process children: an idle process
// (the test binary's own footprint, with OPA's and rulelock's package
// initialisation), rulelock's gateway with the seed rule and with the
// payments policy, and OPA with the seed rule in Rego.
var rssKinds = []string{"idle", "rulelock-seed", "rulelock-payments", "opa-seed"}

// TestLedgerRSS measures the resident memory (VmRSS) after -rss.decisions
// decisions of rulelock and of OPA, each in a process of its own, in two
// ways:
//
//   - In-process engines: this test binary started again as a child for
//     each kind (rssKinds). The child measures itself after runtime.GC and
//     debug.FreeOSMemory, before and after the decisions, so that what it
//     reports is what it keeps, not garbage that the collector has not
//     returned yet. rulelock: gateway.Gateway with a real audit.Log (group
//     commit, fdatasync) in a temporary directory, decide-only transfers of
//     $500 to 1,000 payees from 1,000 agents, 64 callers, one decision every
//     second of simulated time (all within the 7-day retention: the ledger
//     and the requests keep every one). OPA: a prepared query on the same
//     actions (EvalInput), 64 callers. The kinds run in turn, -rss.rounds
//     rounds.
//
//   - Servers: `rulelock serve` (the real binary, seed rule, durable log,
//     checkpoints every second) and OPA's server (v1/runtime, seed rule in
//     Rego), each sent -rss.decisions decisions over HTTP by 64 clients;
//     then, after 2 s idle, VmRSS and VmHWM from /proc/PID/status. No GC
//     can be forced in them; both are Go programs with the default GOGC.
//
//     cd bench && go test -run TestLedgerRSS -v -timeout 30m . -rss
func TestLedgerRSS(t *testing.T) {
	if !*rssOn {
		t.Skip("runs with -rss")
	}
	got := map[string][]rssReport{}
	for round := range *rssRounds {
		for _, kind := range rssKinds {
			cmd := exec.Command(os.Args[0], "-test.run=^$", "-rss.decisions="+strconv.Itoa(*rssDecisions))
			cmd.Env = append(os.Environ(), rssEnv+"="+kind)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v\n%s", kind, err, out)
			}
			var r rssReport
			if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
				t.Fatalf("%s: %v: %s", kind, err, out)
			}
			t.Logf("round %d %-18s RSS %6.1f MB (before the decisions %6.1f MB, peak %6.1f MB), heap %6.1f MB (before %6.1f MB), allowed %d of %d",
				round+1, kind, mb(r.RSS), mb(r.RSS0), mb(r.HWM), mb(int64(r.Heap)), mb(int64(r.Heap0)), r.Allowed, r.Decisions)
			got[kind] = append(got[kind], r)
		}
	}
	med := func(kind string, f func(rssReport) int64) float64 {
		var v []float64
		for _, r := range got[kind] {
			v = append(v, mb(f(r)))
		}
		return median(v)
	}
	rss := func(r rssReport) int64 { return r.RSS }
	grew := func(r rssReport) int64 { return r.RSS - r.RSS0 }
	heap := func(r rssReport) int64 { return int64(r.Heap) - int64(r.Heap0) }
	var tb strings.Builder
	fmt.Fprintf(&tb, "| process | RSS after %d decisions | RSS growth | live heap growth | RSS ÷ OPA's |\n|---|---|---|---|---|\n", *rssDecisions)
	for _, k := range rssKinds {
		fmt.Fprintf(&tb, "| %s | %.1f MB | %.1f MB | %.1f MB | %.2f× |\n", k, med(k, rss), med(k, grew), med(k, heap), med(k, rss)/med("opa-seed", rss))
	}
	t.Logf("in-process engines, medians of %d rounds:\n%s", *rssRounds, tb.String())

	// The servers.
	bin := *loadBin
	if bin == "" {
		bin = buildRulelock(t)
	}
	tokens := make([]string, 1000)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("bench-token-%03d", i)
	}
	var servers [2][3][]float64 // rulelock, OPA; ready, after, peak
	for round := range *rssRounds {
		gw := startRulelock(t, bin, tokens, "http://127.0.0.1:1")
		rl := serverRSS(t, gw.cmd.Process.Pid, func(i int) (*http.Request, error) {
			req, err := http.NewRequest("POST", gw.url+"/v1/decide", strings.NewReader(`{"action":`+gwAction+`}`))
			if err == nil {
				req.Header.Set("Authorization", "Bearer "+tokens[i%len(tokens)])
			}
			return req, err
		}, `"decision":"allow"`)
		gw.stop(t, bin, *rssDecisions)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchServerEnv+"=opa")
		opaSrv := startServer(t, cmd, "bench: listening on ")
		opa := serverRSS(t, opaSrv.cmd.Process.Pid, func(int) (*http.Request, error) {
			return http.NewRequest("POST", opaSrv.url+"/v1/data/bench/decision", strings.NewReader(`{"input":{"action":`+gwAction+`}}`))
		}, `"result":"allow"`)
		opaSrv.interrupt(t)
		t.Logf("round %d servers: rulelock serve RSS %.1f MB (ready %.1f MB, peak %.1f MB); OPA server RSS %.1f MB (ready %.1f MB, peak %.1f MB); rulelock ÷ OPA %.2f×",
			round+1, mb(rl[1]), mb(rl[0]), mb(rl[2]), mb(opa[1]), mb(opa[0]), mb(opa[2]), float64(rl[1])/float64(opa[1]))
		for i := range 3 {
			servers[0][i] = append(servers[0][i], mb(rl[i]))
			servers[1][i] = append(servers[1][i], mb(opa[i]))
		}
	}
	tb.Reset()
	fmt.Fprintf(&tb, "| server | RSS when ready | RSS after %d decisions | peak (VmHWM) | RSS ÷ OPA's |\n|---|---|---|---|---|\n", *rssDecisions)
	for i, name := range []string{"rulelock serve (seed rule, durable log)", "OPA server (seed rule)"} {
		fmt.Fprintf(&tb, "| %s | %.1f MB | %.1f MB | %.1f MB | %.2f× |\n", name, median(servers[i][0]), median(servers[i][1]), median(servers[i][2]),
			median(servers[i][1])/median(servers[1][1]))
	}
	t.Logf("servers, medians of %d rounds:\n%s", *rssRounds, tb.String())
}

// serverRSS sends -rss.decisions requests (64 at a time) to the server pid
// and returns its VmRSS when ready, its VmRSS 2 s after the last reply, and
// its VmHWM.
func serverRSS(t *testing.T, pid int, mkReq func(i int) (*http.Request, error), want string) [3]int64 {
	t.Helper()
	before := procStatus(t, pid, "VmRSS")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < *rssDecisions; i = int(next.Add(1)) - 1 {
				req, err := mkReq(i)
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				var body bytes.Buffer
				body.ReadFrom(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(body.String(), want) {
					errs <- fmt.Errorf("status %d: %.200s", resp.StatusCode, body.String())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	return [3]int64{before, procStatus(t, pid, "VmRSS"), procStatus(t, pid, "VmHWM")}
}

// procStatus reads a memory line of /proc/PID/status (0: this process), in
// bytes.
func procStatus(tb testing.TB, pid int, field string) int64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		if tb != nil {
			tb.Fatal(err)
		}
		panic(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	panic("no " + field + " in " + path)
}

func mb(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// settle collects garbage and returns the freed memory to the OS, then
// reads VmRSS and HeapAlloc.
func settle() (rss int64, heap uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return procStatus(nil, 0, "VmRSS"), m.HeapAlloc
}

// rssChild is the TestLedgerRSS child of kind.
func rssChild(kind string) error {
	n := *rssDecisions
	const callers, agents, payees = 64, 1000, 1000
	actions := make([]map[string]any, payees)
	for i := range actions {
		actions[i] = map[string]any{"type": "transfer", "amount": 500.0, "to": fmt.Sprintf("acct-%d", i)}
	}
	var decide func(i int) (bool, error)
	var done func() error
	switch kind {
	case "idle":
		decide = func(int) (bool, error) { return true, nil }
	case "rulelock-seed", "rulelock-payments":
		srcs, err := policy.ReadSources(os.DirFS(filepath.Join("..", "examples", strings.TrimPrefix(kind, "rulelock-"))))
		if err != nil {
			return err
		}
		p, err := policy.FromSources(srcs, policy.Options{})
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "rulelock-rss-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		l, err := audit.Open(dir, audit.Options{})
		if err != nil {
			return err
		}
		done = l.Close
		c := &simClock{start: benchNow, step: time.Second}
		gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Now: c.now})
		if err != nil {
			return err
		}
		acts := make([]policy.Action, payees)
		for i := range acts {
			if acts[i], err = policy.NewAction(actions[i]); err != nil {
				return err
			}
		}
		agentsOf := make([]policy.Agent, agents)
		for i := range agentsOf {
			agentsOf[i] = policy.Agent{ID: fmt.Sprintf("agent-%03d", i), Roles: []string{"payments"}}
		}
		decide = func(i int) (bool, error) {
			c.tick()
			res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agentsOf[i%agents], Session: "s", Action: acts[i%payees]}, false)
			if err != nil {
				return false, err
			}
			return res.Decision.Decision == policy.Allow, nil
		}
		defer runtime.KeepAlive(gw)
	case "opa-seed":
		pq, err := rego.New(rego.Query("data.bench.decision"), rego.Module("seed.rego", seedRego)).PrepareForEval(context.Background())
		if err != nil {
			return err
		}
		decide = func(i int) (bool, error) {
			d, err := regoDecision(context.Background(), pq, rego.EvalInput(map[string]any{"action": actions[i%payees]}))
			return d == "allow", err
		}
		defer runtime.KeepAlive(&pq)
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	r := rssReport{Kind: kind, Decisions: n}
	r.RSS0, r.Heap0 = settle()
	var next, allowed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				ok, err := decide(i)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	r.Allowed = int(allowed.Load())
	r.RSS, r.Heap = settle()
	r.HWM = procStatus(nil, 0, "VmHWM")
	if done != nil {
		if err := done(); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}
