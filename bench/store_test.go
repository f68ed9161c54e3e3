package bench

// The gateway with its log in PostgreSQL (`rulelock serve --store`, issue
// 17) side by side with the embedded log, in one run:
//
//	cd bench && go test -run TestStoreLoad -v -timeout 60m . -storeload
//
// TestStoreLoad is skipped without -storeload. It builds the rulelock
// binary, starts one throwaway PostgreSQL 15 cluster (internal/pgtest:
// synchronous_commit on, fsync on, a Unix socket), and for each of
// -load.runs runs measures POST /v1/decide (decide + one durable entry
// before the reply, 1,000 agents round robin, the seed rule) on:
//
//   - embedded: one `rulelock serve` with the embedded log (group commit,
//     fdatasync), as "Gateway over HTTP";
//   - store ×1, ×2, ×3: that many `rulelock serve --store` replicas on the
//     one database (a fresh database per run), the load spread evenly over
//     them: each replica gets rate/N of the open loop and clients/N of the
//     closed loop, and the results are merged.
//
// Open loop at -load.rate requests/s (p50/p99 from the scheduled send),
// closed loop at -load.clients clients (decisions/s). CPU per decision is
// the user+system time of every rulelock process plus PostgreSQL's (the
// postmaster, its live backends and those that exited), over the closed
// loop's run, divided by its replies.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bench/loadgen"
	"github.com/rulelock/rulelock/internal/pglog"
	"github.com/rulelock/rulelock/internal/pgtest"
)

var (
	storeLoadOn    = flag.Bool("storeload", false, "run TestStoreLoad: the embedded log against 1, 2, 3 replicas on PostgreSQL (minutes)")
	storeLoadLocks = flag.Int("storeload.locks", 0, "TestStoreLoad: store_lock_connections of each replica (0: the default)")
	storeLoadBase  = flag.String("storeload.base", "", "TestStoreLoad: also measure 1 replica of this rulelock binary (e.g. one built before a change), in the same runs")
)

func TestStoreLoad(t *testing.T) {
	if !*storeLoadOn {
		t.Skip("the PostgreSQL load benchmark runs with -storeload")
	}
	ctx := t.Context()
	bin := *loadBin
	if bin == "" {
		bin = buildRulelock(t)
	}
	pg := pgtest.New(t)
	skey, _, err := note.GenerateKey(rand.Reader, "bench.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, *loadAgents)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("bench-token-%03d", i)
	}
	target := func(url string) loadgen.Target {
		return loadgen.Target{
			Request: agentRequests(url+"/v1/decide", tokens),
			Check: func(status int, b []byte) error {
				if status != 200 || !bytes.Contains(b, []byte(`"decision":"allow"`)) {
					return fmt.Errorf("status %d: %.200s", status, b)
				}
				return nil
			},
		}
	}
	rows := []*loadRow{{name: "embedded log"}, {name: "PostgreSQL, 1 replica"}, {name: "PostgreSQL, 2 replicas"}, {name: "PostgreSQL, 3 replicas"}}
	var base *loadRow
	if *storeLoadBase != "" {
		base = &loadRow{name: "PostgreSQL, 1 replica, " + filepath.Base(*storeLoadBase)}
	}
	for run := 1; run <= *loadRuns; run++ {
		load, _ := os.ReadFile("/proc/loadavg")
		t.Logf("run %d: load average %s", run, bytes.TrimSpace(load))
		gw := startRulelock(t, bin, tokens, "http://127.0.0.1:9")
		procs := []*serverProc{gw}
		o, c := spread(t, ctx, fmt.Sprintf("run %d embedded", run), procs, 0, target)
		rows[0].open, rows[0].closed = append(rows[0].open, o), append(rows[0].closed, c)
		gw.interrupt(t)
		if base != nil {
			dsn := freshDatabase(t, pg, fmt.Sprintf("bench_%d_base", run))
			r := startStoreReplica(t, *storeLoadBase, tokens, dsn, skey, 0)
			o, c := spread(t, ctx, fmt.Sprintf("run %d store x1 base", run), []*serverProc{r}, pg.Pid(), target)
			base.open, base.closed = append(base.open, o), append(base.closed, c)
			r.interrupt(t)
		}
		for n := 1; n <= 3; n++ {
			dsn := freshDatabase(t, pg, fmt.Sprintf("bench_%d_%d", run, n))
			var reps []*serverProc
			for i := range n {
				reps = append(reps, startStoreReplica(t, bin, tokens, dsn, skey, i))
			}
			o, c := spread(t, ctx, fmt.Sprintf("run %d store x%d", run, n), reps, pg.Pid(), target)
			rows[n].open, rows[n].closed = append(rows[n].open, o), append(rows[n].closed, c)
			for _, r := range reps {
				r.interrupt(t)
			}
		}
	}
	t.Logf("medians of %d runs (CPU per decision: rulelock processes + PostgreSQL):\n%s", *loadRuns, loadTable(rows))
	t.Logf("PostgreSQL 1 replica against the embedded log, run by run:\n%s", pairedLine(rows[1], rows[0]))
	if base != nil {
		t.Logf("%s:\n%s", base.name, loadTable([]*loadRow{base}))
		t.Logf("PostgreSQL 1 replica against %s, run by run:\n%s", base.name, pairedLine(rows[1], base))
	}
}

// freshDatabase creates database name on pg and returns its DSN.
func freshDatabase(t *testing.T, pg *pgtest.Cluster, name string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(pg.DSN(), "dbname=postgres", "dbname="+name, 1)
}

// startStoreReplica starts replica i of `rulelock serve --store dsn`, as
// startRulelock starts the embedded gateway, with the shared log key.
func startStoreReplica(t *testing.T, bin string, tokens []string, dsn, skey string, i int) *serverProc {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seed, err := filepath.Abs("../examples/seed")
	if err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen: 127.0.0.1:0\ndata_dir: %s\nstore: %q\npolicy: %s\norigin: bench.rulelock/log\ncheckpoint_interval: %s\n",
		data, dsn, seed, *loadCkpt)
	if *storeLoadLocks > 0 {
		fmt.Fprintf(&cfg, "store_lock_connections: %d\n", *storeLoadLocks)
	}
	cfg.WriteString("agents:\n")
	for k, tok := range tokens {
		sum := sha256.Sum256([]byte(tok))
		fmt.Fprintf(&cfg, "  - id: agent-%03d\n    roles: [payments]\n    token_sha256: %s\n", k, hex.EncodeToString(sum[:]))
	}
	path := filepath.Join(dir, "rulelock.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startServer(t, exec.Command(bin, "serve", "--config", path), "rulelock: listening on ")
	g.data = data
	waitHTTP(t, g.url+"/readyz")
	return g
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	for range 500 {
		resp, err := httpGet(url)
		if err == nil && resp == 200 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200", url)
}

// spread runs the open and the closed loop against the servers at once,
// each getting an even share of the rate and of the clients, and merges
// the results. pgPid, when not 0, is PostgreSQL's, whose CPU counts too.
func spread(t *testing.T, ctx context.Context, name string, procs []*serverProc, pgPid int, target func(string) loadgen.Target) (open, closed *loadRun) {
	n := len(procs)
	cpu := func() time.Duration {
		var d time.Duration
		for _, p := range procs {
			d += cpuTime(p.cmd.Process.Pid)
		}
		if pgPid != 0 {
			d += treeCPU(pgPid)
		}
		return d
	}
	each := func(f func(c *loadgen.Client, tg loadgen.Target) *loadgen.Result) *loadRun {
		res := make([]*loadgen.Result, n)
		cpu0, self0 := cpu(), cpuTime(0)
		var wg sync.WaitGroup
		for i, p := range procs {
			wg.Go(func() {
				tg := target(p.url)
				c := loadgen.NewClient(hostOf(tg))
				defer c.Close()
				res[i] = f(c, tg)
			})
		}
		wg.Wait()
		r := &loadRun{Result: merge(res), serverCPU: cpu() - cpu0, selfCPU: cpuTime(0) - self0}
		return r
	}
	q := loadgen.Quantile
	open = each(func(c *loadgen.Client, tg loadgen.Target) *loadgen.Result {
		return loadgen.OpenLoop(ctx, c, tg, *loadRate/n, *loadWarmup, *loadDuration, 4096)
	})
	t.Logf("%-22s open   %d req/s: sent %d ok %d errors %d  p50 %v p99 %v | CPU/decision %v %q", name, *loadRate, open.Sent, open.OK, open.Errors,
		us(q(open.Latency, .5)), us(q(open.Latency, .99)), us(open.perReq(open.serverCPU)), open.Sample)
	closed = each(func(c *loadgen.Client, tg loadgen.Target) *loadgen.Result {
		return loadgen.ClosedLoop(ctx, c, tg, *loadClients/n, *loadWarmup, *loadDuration)
	})
	t.Logf("%-22s closed %d clients: %.0f/s ok %d errors %d  p50 %v p99 %v | CPU/decision %v (%.2f cores) %q", name, *loadClients, closed.Throughput(), closed.OK, closed.Errors,
		us(q(closed.Latency, .5)), us(q(closed.Latency, .99)), us(closed.perReq(closed.serverCPU)),
		closed.serverCPU.Seconds()/(*loadWarmup+*loadDuration).Seconds(), closed.Sample)
	return open, closed
}

// merge adds up results measured over the same window.
func merge(rs []*loadgen.Result) *loadgen.Result {
	m := &loadgen.Result{Window: rs[0].Window}
	for _, r := range rs {
		m.Sent += r.Sent
		m.Total += r.Total
		m.OK += r.OK
		m.Errors += r.Errors
		m.Sample = append(m.Sample, r.Sample...)
		m.Latency = append(m.Latency, r.Latency...)
		m.Service = append(m.Service, r.Service...)
		m.Lag = append(m.Lag, r.Lag...)
	}
	slices.Sort(m.Latency)
	slices.Sort(m.Service)
	slices.Sort(m.Lag)
	return m
}

// treeCPU is the CPU time of process pid, of its live children, and of the
// children it has waited for (cutime, cstime): PostgreSQL's postmaster
// and backends.
func treeCPU(pid int) time.Duration {
	d := cpuTime(pid) + childrenCPU(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		var ppid int
		if len(f) > 1 {
			fmt.Sscan(f[1], &ppid)
		}
		if ppid == pid {
			var child int
			fmt.Sscan(e.Name(), &child)
			d += cpuTime(child)
		}
	}
	return d
}

// childrenCPU is the cutime + cstime of process pid.
func childrenCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0
	}
	var cu, cs int64
	fmt.Sscan(f[13], &cu)
	fmt.Sscan(f[14], &cs)
	return time.Duration(cu+cs) * 10 * time.Millisecond
}

// httpGet returns the status of GET url.
func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// BenchmarkCommitFloor is the durability floor under both logs, one caller
// at a time (ns/op is the latency of one durable append, nothing to batch
// with): the embedded log's Append (write + fdatasync), a bare PostgreSQL
// commit (an UPDATE of one row, synchronous_commit on), and pglog's Append
// (the sequencing transaction). What /v1/decide's p50 at a low rate pays
// at least, on each log.
//
//	cd bench && go test -run '^$' -bench CommitFloor -benchtime 300x -count 5 .
func BenchmarkCommitFloor(b *testing.B) {
	e := &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(), Message: "floor"}
	ctx := context.Background()
	b.Run("embedded-append", func(b *testing.B) {
		l, err := audit.Open(b.TempDir(), audit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		for b.Loop() {
			if _, err := l.Append(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	pg := pgtest.New(b)
	pool, err := pglog.Connect(ctx, pg.DSN())
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	l, err := pglog.Open(ctx, pool, pglog.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.Run("postgres-commit", func(b *testing.B) {
		for b.Loop() {
			if _, err := pool.Exec(ctx, "UPDATE rulelock_checkpoint SET size = size WHERE id = 0"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pglog-append", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.Append(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
