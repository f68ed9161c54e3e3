package bench

// The gateway over HTTP, side by side with OPA's HTTP server, in one run:
//
//	cd bench && go test -run TestLoad -v -timeout 60m . -load
//
// TestLoad is skipped without -load (or RULELOCK_LOAD=1), so that `go vet`
// and `go test` compile it and CI does not run the load. It builds the
// rulelock binary, then for each of -load.runs runs, in this order:
//
//   - decide: a fresh `rulelock serve` (child process, new data directory)
//     with the seed rule (examples/seed); POST /v1/decide, which evaluates
//     and appends a durable, signed-log entry before replying;
//   - actions: a fresh `rulelock serve` with an executor for "transfer"
//     pointing at a trivial upstream (an httptest server in this process);
//     POST /v1/actions: decide, log, execute, log the outcome (two durable
//     entries per request);
//   - opa: OPA's server (v1/runtime) with the seed rule in Rego (seedRego,
//     policy_test.go); POST /v1/data/bench/decision. No durable log of any
//     kind, and no per-request access log (log level error).
//   - floor: the durable floor of this machine for the HTTP scenarios: a
//     net/http server whose handler reads the body, appends one ~1 KiB
//     entry to an audit.Log (group commit, fdatasync) and replies; no
//     authentication, no policy, no checkpoints. What a gateway that logs
//     each decision durably before replying pays here at least, for the
//     HTTP round trip and the fdatasync.
//
// OPA and the floor run in child processes too (this test binary, started
// again with benchServerEnv), so that every server has the machine's two
// processors to itself in its runtime, apart from the load generator's,
// and its CPU time is measured alone.
//
// Each scenario gets an open-loop run (-load.rate requests/s for
// -load.duration after -load.warmup; latency from the scheduled send time)
// and a closed-loop run (-load.clients clients, as fast as they can). For
// rulelock, request n comes from agent n mod -load.agents (1,000 agents,
// one token each, by default; in the closed loop client k sends requests k,
// k+clients, …, so concurrent requests are from different agents, as in a
// deployment with many agents). The gateway serialises one agent's
// decisions up to the queueing of the decision entry (not its fdatasync);
// the "1 agent" row measures one agent's throughput.
//
// The load generator (bench/loadgen) sends ready-made request bytes on
// keep-alive connections and times each request from its scheduled send
// (open loop) or its actual send (closed loop) to the end of the reply's
// body. With -load.bin, the runs use that rulelock binary instead of one
// built from the working tree, so that two builds can be compared with the
// same generator in the same session. With -load.otlp, `rulelock serve`
// traces every request and exports the spans over OTLP/HTTP to a sink in
// this process (otlp_test.go), as OTEL_EXPORTER_OTLP_ENDPOINT configures it.
//
// It prints each run and, at the end, a Markdown table of the medians over
// the runs (docs/benchmarks.md, "Gateway over HTTP").

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/runtime"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bench/loadgen"
)

var (
	loadOn       = flag.Bool("load", false, "run TestLoad, the HTTP load benchmark (minutes)")
	loadRate     = flag.Int("load.rate", 1000, "open loop: requests per second")
	loadWarmup   = flag.Duration("load.warmup", 2*time.Second, "warm-up before each measured window")
	loadDuration = flag.Duration("load.duration", 10*time.Second, "measured window of each run")
	loadClients  = flag.Int("load.clients", 64, "closed loop: concurrent clients")
	loadAgents   = flag.Int("load.agents", 1000, "rulelock: agents (tokens) the requests are spread over, round robin")
	loadBin      = flag.String("load.bin", "", "rulelock: this binary instead of one built from the working tree (to compare builds)")
	loadRuns     = flag.Int("load.runs", 3, "runs of every scenario; the table shows medians")
	loadDecide   = flag.Bool("load.decide", false, "run only the /v1/decide scenarios (1,000 agents), for quick comparisons")
	loadCkpt     = flag.Duration("load.checkpoint", time.Second, "rulelock: checkpoint_interval")
	loadEnv      = flag.String("load.env", "", "rulelock: extra environment for `rulelock serve`, space-separated NAME=VALUE (e.g. GOGC=400)")
)

// gwAction is the request's action: allowed by the seed rule.
const gwAction = `{"type":"transfer","amount":500,"to":"acct-1"}`

// loadRow is one line of the table: an open-loop and a closed-loop result
// per run.
type loadRow struct {
	name         string
	open, closed []*loadRun
}

// loadRun is one run's result with the CPU time the server process (the
// rulelock child; 0 for OPA) and this process (load generator, upstream,
// OPA) used over the whole run, warm-up included.
type loadRun struct {
	*loadgen.Result
	serverCPU, selfCPU time.Duration
}

// perReq divides a CPU time by the replies of the whole run.
func (r *loadRun) perReq(d time.Duration) time.Duration {
	if r.Total == 0 {
		return 0
	}
	return d / time.Duration(r.Total)
}

func TestLoad(t *testing.T) {
	if !*loadOn && os.Getenv("RULELOCK_LOAD") == "" {
		t.Skip("the HTTP load benchmark runs with -load (or RULELOCK_LOAD=1)")
	}
	ctx := t.Context()
	bin := *loadBin
	if bin == "" {
		bin = buildRulelock(t)
	}
	t.Logf("rulelock binary %s; %d agents, %d closed-loop clients", bin, *loadAgents, *loadClients)

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"done"}`)
	}))
	defer upstream.Close()
	if *loadOTLP {
		s, url := startSink(t)
		otlpEndpoint = url
		defer func() {
			otlpEndpoint = ""
			t.Logf("OTLP sink: %d exports, %d bytes", s.exports.Load(), s.bytes.Load())
		}()
	}
	if *loadExport {
		s, url := startSink(t)
		exportEndpoint = url + "/ingest"
		defer func() {
			exportEndpoint = ""
			t.Logf("export sink: %d batches, %d bytes", s.exports.Load(), s.bytes.Load())
		}()
	}

	opaSrv, floorSrv := startBenchServer(t, "opa"), startBenchServer(t, "floor")
	opaURL := opaSrv.url

	tokens := make([]string, *loadAgents)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("bench-token-%03d", i)
	}
	rlTarget := func(url string, agents int, wantOutcome bool) loadgen.Target {
		return loadgen.Target{
			Request: agentRequests(url, tokens[:agents]),
			Check: func(status int, b []byte) error {
				switch {
				case status != 200:
					return fmt.Errorf("status %d: %.200s", status, b)
				case !bytes.Contains(b, []byte(`"decision":"allow"`)):
					return fmt.Errorf("not allowed: %.300s", b)
				case wantOutcome && !bytes.Contains(b, []byte(`"status":"ok"`)):
					return fmt.Errorf("no ok outcome: %.300s", b)
				}
				return nil
			},
		}
	}
	opaReq, _ := http.NewRequest("POST", opaURL+"/v1/data/bench/decision", strings.NewReader(`{"input":{"action":`+gwAction+`}}`))
	opaReq.Header.Set("Content-Type", "application/json")
	opaRaw := loadgen.RawRequest(opaReq)
	opaTarget := loadgen.Target{
		Request: func(int) []byte { return opaRaw },
		Check: func(status int, b []byte) error {
			if status != 200 || !bytes.Contains(b, []byte(`"result":"allow"`)) {
				return fmt.Errorf("status %d: %.200s", status, b)
			}
			return nil
		},
	}

	rows := []*loadRow{
		{name: "rulelock `/v1/decide` (1 durable entry)"},
		{name: fmt.Sprintf("rulelock `/v1/decide`, 1 agent (%d clients)", *loadClients)},
		{name: "rulelock `/v1/actions` + upstream (2 durable entries)"},
		{name: "OPA `/v1/data` (no log)"},
		{name: "floor: net/http + `audit.Log.Append` (1 durable entry, no policy)"},
	}
	decide, decide1, actions, opa, floor := rows[0], rows[1], rows[2], rows[3], rows[4]
	floorTg := floorTarget(floorSrv.url)
	for run := 1; run <= *loadRuns; run++ {
		// decide
		load, _ := os.ReadFile("/proc/loadavg")
		t.Logf("run %d: load average %s", run, bytes.TrimSpace(load))
		gw := startRulelock(t, bin, tokens, upstream.URL)
		pid := gw.cmd.Process.Pid
		decide.open = append(decide.open, openLoop(t, ctx, fmt.Sprintf("run %d decide", run), pid, rlTarget(gw.url+"/v1/decide", len(tokens), false)))
		decide.closed = append(decide.closed, closedLoop(t, ctx, fmt.Sprintf("run %d decide", run), pid, rlTarget(gw.url+"/v1/decide", len(tokens), false)))
		if *loadDecide {
			gw.stop(t, bin, last(decide.open).OK+last(decide.closed).OK)
			continue
		}
		decide1.closed = append(decide1.closed, closedLoop(t, ctx, fmt.Sprintf("run %d decide 1 agent", run), pid, rlTarget(gw.url+"/v1/decide", 1, false)))
		gw.stop(t, bin, last(decide.open).OK+last(decide.closed).OK+last(decide1.closed).OK)
		// actions
		gw = startRulelock(t, bin, tokens, upstream.URL)
		pid = gw.cmd.Process.Pid
		actions.open = append(actions.open, openLoop(t, ctx, fmt.Sprintf("run %d actions", run), pid, rlTarget(gw.url+"/v1/actions", len(tokens), true)))
		actions.closed = append(actions.closed, closedLoop(t, ctx, fmt.Sprintf("run %d actions", run), pid, rlTarget(gw.url+"/v1/actions", len(tokens), true)))
		gw.stop(t, bin, 2*(last(actions.open).OK+last(actions.closed).OK))
		// OPA
		pid = opaSrv.cmd.Process.Pid
		opa.open = append(opa.open, openLoop(t, ctx, fmt.Sprintf("run %d opa", run), pid, opaTarget))
		opa.closed = append(opa.closed, closedLoop(t, ctx, fmt.Sprintf("run %d opa", run), pid, opaTarget))
		// the durable floor
		pid = floorSrv.cmd.Process.Pid
		floor.open = append(floor.open, openLoop(t, ctx, fmt.Sprintf("run %d floor", run), pid, floorTg))
		floor.closed = append(floor.closed, closedLoop(t, ctx, fmt.Sprintf("run %d floor", run), pid, floorTg))
	}
	if *loadDecide {
		return
	}
	t.Logf("medians of %d runs:\n%s", *loadRuns, loadTable(rows))
	t.Logf("rulelock /v1/decide against the floor, run by run (the machine's state changes between runs more than within one):\n%s", pairedLine(decide, floor))
}

// pairedLine compares row a with row b run by run (the same run's open
// and closed loops): the differences of their open-loop p50 and p99 and the
// ratios of their closed-loop throughput and CPU per request, each as the
// median and range over the runs.
func pairedLine(a, b *loadRow) string {
	var dp50, dp99 []time.Duration
	var thr, cpu []float64
	for i := range min(len(a.open), len(b.open)) {
		q := func(r *loadRun, p float64) time.Duration { return loadgen.Quantile(r.Latency, p) }
		dp50 = append(dp50, q(a.open[i], .5)-q(b.open[i], .5))
		dp99 = append(dp99, q(a.open[i], .99)-q(b.open[i], .99))
	}
	for i := range min(len(a.closed), len(b.closed)) {
		thr = append(thr, a.closed[i].Throughput()/b.closed[i].Throughput())
		ca, cb := a.closed[i].perReq(a.closed[i].serverCPU), b.closed[i].perReq(b.closed[i].serverCPU)
		if cb > 0 {
			cpu = append(cpu, float64(ca)/float64(cb))
		}
	}
	durs := func(v []time.Duration) string {
		if len(v) == 0 {
			return "—"
		}
		return fmt.Sprintf("%+d µs (%+d to %+d)", median(v).Microseconds(), slices.Min(v).Microseconds(), slices.Max(v).Microseconds())
	}
	ratios := func(v []float64) string {
		if len(v) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f× (%.2f to %.2f)", median(v), slices.Min(v), slices.Max(v))
	}
	return fmt.Sprintf("p50 %s, p99 %s, throughput %s, CPU per request %s", durs(dp50), durs(dp99), ratios(thr), ratios(cpu))
}

// floorTarget is the floor scenario's request to the server at url.
func floorTarget(url string) loadgen.Target {
	req, _ := http.NewRequest("POST", url+"/append", strings.NewReader(`{"action":`+gwAction+`}`))
	req.Header.Set("Content-Type", "application/json")
	raw := loadgen.RawRequest(req)
	return loadgen.Target{
		Request: func(int) []byte { return raw },
		Check: func(status int, b []byte) error {
			if status != 200 || !bytes.HasPrefix(b, []byte(`{"index":`)) {
				return fmt.Errorf("status %d: %.200s", status, b)
			}
			return nil
		},
	}
}

// agentRequests returns the i-th request to url as the raw bytes of a POST
// of gwAction with the token of agent i mod len(tokens): the requests go
// round robin over the agents.
func agentRequests(url string, tokens []string) func(i int) []byte {
	raw := make([][]byte, len(tokens))
	for k, tok := range tokens {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"action":`+gwAction+`}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		raw[k] = loadgen.RawRequest(req)
	}
	return func(i int) []byte { return raw[i%len(raw)] }
}

// hostOf returns the host:port of target's URL.
func hostOf(target loadgen.Target) string {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(target.Request(0))))
	if err != nil {
		panic(err)
	}
	return req.Host
}

func openLoop(t *testing.T, ctx context.Context, name string, pid int, tg loadgen.Target) *loadRun {
	c := loadgen.NewClient(hostOf(tg))
	defer c.Close()
	srv0, self0 := serverCPU(pid), cpuTime(0)
	r := &loadRun{Result: loadgen.OpenLoop(ctx, c, tg, *loadRate, *loadWarmup, *loadDuration, 4096)}
	r.serverCPU, r.selfCPU = serverCPU(pid)-srv0, cpuTime(0)-self0
	q := loadgen.Quantile
	t.Logf("%-24s open   %d req/s: sent %d ok %d errors %d conns %d  p50 %v p99 %v p99.9 %v max %v | from actual send p50 %v p99 %v | send lag p50 %v p99 %v max %v | CPU/req server %v bench %v %q",
		name, *loadRate, r.Sent, r.OK, r.Errors, c.Dials(), us(q(r.Latency, .5)), us(q(r.Latency, .99)), us(q(r.Latency, .999)), us(q(r.Latency, 1)),
		us(q(r.Service, .5)), us(q(r.Service, .99)), us(q(r.Lag, .5)), us(q(r.Lag, .99)), us(q(r.Lag, 1)),
		us(r.perReq(r.serverCPU)), us(r.perReq(r.selfCPU)), r.Sample)
	return r
}

func closedLoop(t *testing.T, ctx context.Context, name string, pid int, tg loadgen.Target) *loadRun {
	c := loadgen.NewClient(hostOf(tg))
	defer c.Close()
	srv0, self0 := serverCPU(pid), cpuTime(0)
	r := &loadRun{Result: loadgen.ClosedLoop(ctx, c, tg, *loadClients, *loadWarmup, *loadDuration)}
	r.serverCPU, r.selfCPU = serverCPU(pid)-srv0, cpuTime(0)-self0
	q := loadgen.Quantile
	t.Logf("%-24s closed %d clients: %.0f/s  ok %d errors %d conns %d  p50 %v p99 %v | CPU/req server %v bench %v (%.2f + %.2f cores) %q",
		name, *loadClients, r.Throughput(), r.OK, r.Errors, c.Dials(), us(q(r.Latency, .5)), us(q(r.Latency, .99)),
		us(r.perReq(r.serverCPU)), us(r.perReq(r.selfCPU)),
		r.serverCPU.Seconds()/(*loadWarmup+*loadDuration).Seconds(), r.selfCPU.Seconds()/(*loadWarmup+*loadDuration).Seconds(), r.Sample)
	return r
}

// serverCPU is cpuTime of the server process pid, 0 for none (a server in
// this process: TestProfileGateway).
func serverCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	return cpuTime(pid)
}

// cpuTime returns the user+system CPU time process pid has used so far,
// this process for pid 0, from /proc (0 where there is none).
func cpuTime(pid int) time.Duration {
	name := "/proc/self/stat"
	if pid != 0 {
		name = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return 0
	}
	// Fields after the command's closing parenthesis, from field 3
	// (state); utime and stime are fields 14 and 15, in clock ticks
	// (USER_HZ, 100 on Linux).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func last(rs []*loadRun) *loadRun { return rs[len(rs)-1] }

// us rounds a duration for printing.
func us(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// median of the values (the lower middle one of an even count).
func median[T int | float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// loadTable is the Markdown table of the medians, metric by metric.
// The server CPU per request is the server process's (each server runs in
// its own).
func loadTable(rows []*loadRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | open loop %d req/s: p50 | p99 | p99.9 | errors | closed loop %d clients: replies/s | p50 | p99 | errors | server CPU per request |\n", *loadRate, *loadClients)
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	med := func(rs []*loadRun, f func(*loadRun) time.Duration) string {
		if len(rs) == 0 {
			return "—"
		}
		var v []time.Duration
		for _, r := range rs {
			v = append(v, f(r))
		}
		return fmtDur(median(v))
	}
	errs := func(rs []*loadRun) string {
		if len(rs) == 0 {
			return "—"
		}
		n := 0
		for _, r := range rs {
			n += r.Errors
		}
		return fmt.Sprint(n)
	}
	for _, row := range rows {
		thr := "—"
		if len(row.closed) > 0 {
			var v []float64
			for _, r := range row.closed {
				v = append(v, r.Throughput())
			}
			thr = fmt.Sprintf("%.0f", median(v))
		}
		cpu := med(row.closed, func(r *loadRun) time.Duration { return r.perReq(r.serverCPU) })
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.name,
			med(row.open, func(r *loadRun) time.Duration { return loadgen.Quantile(r.Latency, .5) }),
			med(row.open, func(r *loadRun) time.Duration { return loadgen.Quantile(r.Latency, .99) }),
			med(row.open, func(r *loadRun) time.Duration { return loadgen.Quantile(r.Latency, .999) }),
			errs(row.open), thr,
			med(row.closed, func(r *loadRun) time.Duration { return loadgen.Quantile(r.Latency, .5) }),
			med(row.closed, func(r *loadRun) time.Duration { return loadgen.Quantile(r.Latency, .99) }),
			errs(row.closed), cpu)
	}
	b.WriteString("(errors: the sum over the runs; CPU: closed loop, whole run, per reply)\n")
	return b.String()
}

func fmtDur(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// buildRulelock builds the rulelock binary from the repository root.
func buildRulelock(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rulelock")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/rulelock")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/rulelock: %v\n%s", err, out)
	}
	return bin
}

// serverProc is a server in a child process: `rulelock serve`, or this
// test binary serving OPA or the floor (benchServerEnv).
type serverProc struct {
	url, data string
	cmd       *exec.Cmd
	done      chan error
	stderr    *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRulelock starts `rulelock serve --config FILE` on a free loopback
// port with a new data directory: the seed rule, one agent per token, an
// executor for "transfer" at upstream, and waits for /readyz.
func startRulelock(t *testing.T, bin string, tokens []string, upstream string) *serverProc {
	t.Helper()
	dir := t.TempDir()
	seed, err := filepath.Abs("../examples/seed")
	if err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen: 127.0.0.1:0\ndata_dir: %s\npolicy: %s\norigin: bench.rulelock/log\ncheckpoint_interval: %s\n",
		filepath.Join(dir, "data"), seed, *loadCkpt)
	cfg.WriteString("agents:\n")
	for i, tok := range tokens {
		sum := sha256.Sum256([]byte(tok))
		fmt.Fprintf(&cfg, "  - id: agent-%03d\n    roles: [payments]\n    token_sha256: %s\n", i, hex.EncodeToString(sum[:]))
	}
	fmt.Fprintf(&cfg, "executors:\n  transfer:\n    method: POST\n    url: %s/v1/payees/{to}/transfers\n    timeout: 10s\n", upstream)
	if exportEndpoint != "" {
		fmt.Fprintf(&cfg, "export:\n  to: %s\n", exportEndpoint)
	}
	path := filepath.Join(dir, "rulelock.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Dir = dir
	if *loadEnv != "" {
		cmd.Env = append(os.Environ(), strings.Fields(*loadEnv)...)
	}
	if otlpEndpoint != "" {
		cmd.Env = append(append(os.Environ(), strings.Fields(*loadEnv)...), "OTEL_EXPORTER_OTLP_ENDPOINT="+otlpEndpoint)
	}
	g := startServer(t, cmd, "rulelock: listening on ")
	g.data = filepath.Join(dir, "data")
	for i := 0; ; i++ {
		resp, err := http.Get(g.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i == 300 {
			g.cmd.Process.Kill()
			t.Fatalf("rulelock never became ready\n%s", g.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

// startServer starts cmd and waits for the line on its standard error that
// begins with prefix and ends with the address it listens on.
func startServer(t *testing.T, cmd *exec.Cmd, prefix string) *serverProc {
	t.Helper()
	g := &serverProc{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	pipe, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			g.stderr.mu.Lock()
			g.stderr.b.WriteString(line + "\n")
			g.stderr.mu.Unlock()
			if a, ok := strings.CutPrefix(line, prefix); ok {
				addr <- a
			}
		}
		g.done <- g.cmd.Wait()
	}()
	select {
	case g.url = <-addr:
	case err := <-g.done:
		t.Fatalf("%s exited: %v\n%s", cmd.Path, err, g.stderr)
	case <-time.After(30 * time.Second):
		g.cmd.Process.Kill()
		t.Fatalf("%s did not start\n%s", cmd.Path, g.stderr)
	}
	return g
}

// stop shuts the gateway down gracefully (SIGINT), then checks with
// `rulelock verify` that its log verifies and holds at least want entries.
func (g *serverProc) stop(t *testing.T, bin string, want int) {
	t.Helper()
	g.interrupt(t)
	out, err := exec.Command(bin, "verify", filepath.Join(g.data, "log"), "--key", filepath.Join(g.data, "log.pub")).CombinedOutput()
	var n int
	if _, serr := fmt.Sscanf(string(out), "ok: %d entries", &n); err != nil || serr != nil || n < want {
		t.Errorf("rulelock verify: %v: want at least %d entries:\n%s", err, want, out)
	}
	t.Logf("rulelock verify: %s", bytes.TrimSpace(out))
}

// interrupt stops the server with SIGINT and waits for it to exit.
func (g *serverProc) interrupt(t *testing.T) {
	t.Helper()
	g.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-g.done:
		if err != nil {
			t.Errorf("%s: %v\n%s", g.cmd.Path, err, g.stderr)
		}
	case <-time.After(60 * time.Second):
		g.cmd.Process.Kill()
		t.Errorf("%s did not stop\n%s", g.cmd.Path, g.stderr)
	}
}

// benchServerEnv, set to "opa" or "floor" in the environment, makes the
// test binary serve that scenario on a free loopback port until SIGINT (see
// TestMain). The servers compared with rulelock run in a process of their
// own, as `rulelock serve` does: each has both processors to itself in its
// runtime, and its CPU time is measured alone.
const benchServerEnv = "RULELOCK_BENCH_SERVER"

// startBenchServer runs kind's server in a child process, stopped when the
// test ends.
func startBenchServer(t *testing.T, kind string) *serverProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+kind)
	g := startServer(t, cmd, "bench: listening on ")
	t.Cleanup(func() { g.interrupt(t) })
	return g
}

// serveBench is the child process of startBenchServer.
func serveBench(kind string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "rulelock-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var url string
	var wait func() error
	switch kind {
	case "opa":
		url, wait, err = serveOPA(ctx, dir)
	case "floor":
		url, wait, err = serveFloor(ctx, dir)
	default:
		err = fmt.Errorf("unknown server %q", kind)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: listening on %s\n", url)
	<-ctx.Done()
	return wait()
}

// serveOPA serves OPA's HTTP server on a free loopback port with the seed
// rule in Rego until ctx ends; wait returns when it has stopped.
func serveOPA(ctx context.Context, dir string) (url string, wait func() error, err error) {
	rego := filepath.Join(dir, "seed.rego")
	if err := os.WriteFile(rego, []byte(seedRego), 0o600); err != nil {
		return "", nil, err
	}
	p := runtime.NewParams()
	p.Addrs = &[]string{"127.0.0.1:0"}
	p.Paths = []string{rego}
	p.Logging = runtime.LoggingConfig{Level: "error"}
	p.Output = io.Discard
	rt, err := runtime.NewRuntime(ctx, p)
	if err != nil {
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() { done <- rt.Serve(ctx) }()
	wait = func() error { <-done; return nil }
	for range 1000 {
		if a := rt.Addrs(); len(a) > 0 {
			url := "http://" + a[0]
			if resp, err := http.Get(url + "/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return url, wait, nil
				}
			}
		}
		select {
		case err := <-done:
			return "", nil, fmt.Errorf("OPA stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return "", nil, errors.New("OPA did not start")
}

// serveFloor serves the floor scenario (see the top of the file) on a free
// loopback port until ctx ends: each reply carries its entry's index.
func serveFloor(ctx context.Context, dir string) (url string, wait func() error, err error) {
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.Close()
		return "", nil, err
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc, err := l.Append(r.Context(), auditEntry(int(n.Add(1))))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"index":%d}`, rc.Index)
	})}
	go srv.Serve(ln)
	wait = func() error {
		srv.Shutdown(context.Background())
		return l.Close()
	}
	return "http://" + ln.Addr().String(), wait, nil
}
