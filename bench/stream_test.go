package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/export"
	"github.com/rulelock/rulelock/internal/search"
)

var (
	exportEntries = flag.Int("export.entries", 100_000, "entries in the log BenchmarkExport sends")
	findEntries   = flag.Int64("find.entries", 1_000_000, "entries in the log BenchmarkLogFind searches")
	findDir       = flag.String("find.dir", "", "keep BenchmarkLogFind's log and index in this directory and reuse them (a 10M-entry log takes minutes to write)")
)

// discardReceiver is an HTTP receiver that reads each batch and
// acknowledges it: the exporter's own cost, not a SIEM's.
func discardReceiver(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkExport measures export throughput: the whole log of
// -export.entries ~1 KiB decision entries, from an empty cursor, in
// batches of 2000, to an HTTP receiver on loopback (POST per batch) and to a
// file (fsync per batch), each batch's cursor written durably.
//
//	cd bench && go test -run '^$' -bench 'Export$' -benchtime 3x .
func BenchmarkExport(b *testing.B) {
	l, err := audit.Open(b.TempDir(), audit.Options{SegmentSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fill(b, l, *exportEntries)
	srv := discardReceiver(b)
	for _, to := range []string{"http", "file"} {
		b.Run("to="+to, func(b *testing.B) {
			var entries int64
			var elapsed time.Duration
			for b.Loop() {
				dir := b.TempDir()
				var sink export.Sink = &export.HTTP{URL: srv.URL}
				if to == "file" {
					f := &export.File{Path: filepath.Join(dir, "out.jsonl")}
					defer f.Close()
					sink = f
				}
				x, err := export.New(export.Options{Open: export.Live(l), Sink: sink, Cursor: filepath.Join(dir, "cursor"), StopAtEnd: true})
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := x.Run(context.Background()); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(t0)
				entries += x.Stats().Exported
			}
			b.ReportMetric(float64(entries)/elapsed.Seconds(), "entries/s")
		})
	}
}

// BenchmarkExportDecisionLatency measures what a running exporter costs
// the decisions: durable appends (the floor of every decision) by 16
// concurrent writers, without an exporter and with one following the live
// log (the default poll: one batch per second once caught up, each with a
// durable cursor write) to an HTTP receiver on loopback. The two alternate
// in rounds of -export.round appends each, on fresh logs, so that the
// shared machine's load falls on both alike; reported side by side and as
// the ratio with/without.
//
//	cd bench && go test -run '^$' -bench ExportDecisionLatency -benchtime 2x -count 2 .
func BenchmarkExportDecisionLatency(b *testing.B) {
	srv := discardReceiver(b)
	var lat [2][]time.Duration
	var elapsed [2]time.Duration
	var n [2]int
	for b.Loop() {
		for round := range 6 {
			on := round % 2
			d, l := appendRound(b, srv.URL, on == 1, *exportRound)
			lat[on] = append(lat[on], l...)
			elapsed[on] += d
			n[on] += *exportRound
		}
	}
	p := func(v []time.Duration, q int) float64 {
		slices.Sort(v)
		return float64(v[len(v)*q/100].Nanoseconds()) / 1e3
	}
	b.ReportMetric(p(lat[0], 50), "p50-µs-without")
	b.ReportMetric(p(lat[1], 50), "p50-µs-with")
	b.ReportMetric(p(lat[0], 99), "p99-µs-without")
	b.ReportMetric(p(lat[1], 99), "p99-µs-with")
	b.ReportMetric(p(lat[1], 50)/p(lat[0], 50), "p50-with/without")
	b.ReportMetric(float64(n[0])/elapsed[0].Seconds(), "entries/s-without")
	b.ReportMetric(float64(n[1])/elapsed[1].Seconds(), "entries/s-with")
}

var exportRound = flag.Int("export.round", 20000, "appends per round of BenchmarkExportDecisionLatency")

// appendRound appends n entries with 16 writers to a fresh log, with an
// exporter running when exporting, and returns the time and each append's
// latency.
func appendRound(b *testing.B, url string, exporting bool, n int) (time.Duration, []time.Duration) {
	dir := b.TempDir()
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{SegmentSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if exporting {
		x, err := export.New(export.Options{Open: export.Live(l), Sink: &export.HTTP{URL: url}, Cursor: filepath.Join(dir, "cursor")})
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- x.Run(ctx) }()
	} else {
		close(done)
	}
	defer func() { cancel(); <-done }()
	const writers = 16
	var next atomic.Int64
	lats := make([][]time.Duration, writers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				t0 := time.Now()
				if _, err := l.Append(context.Background(), auditEntry(int(i))); err != nil {
					b.Error(err)
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	return time.Since(start), slices.Concat(lats...)
}

// findLog returns a log of n generated entries and its index, in
// -find.dir when given (reused when it holds n entries).
func findLog(b *testing.B, n int64) (*audit.Log, *search.Index) {
	dir := *findDir
	if dir == "" {
		dir = b.TempDir()
	}
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{SegmentSize: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	if l.Size() < n {
		t0 := time.Now()
		genFindLog(b, l, n)
		b.Logf("wrote %d entries in %v", l.Size(), time.Since(t0))
	}
	ix := search.Open(filepath.Join(dir, "index"))
	t0 := time.Now()
	covered, err := ix.Update(context.Background(), l)
	if err != nil {
		b.Fatal(err)
	}
	if d := time.Since(t0); d > time.Second {
		b.Logf("indexed %d entries in %v (%.0f entries/s)", covered, d, float64(covered)/d.Seconds())
	}
	st, _ := os.Stat(filepath.Join(dir, "index", "times"))
	if st != nil {
		b.Logf("index of %d entries", st.Size()/8)
	}
	return l, ix
}

var findBase = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// genFindLog appends entries up to n: per request a decision (50 agents,
// 20 action types, 30 rules, mostly allow) and, for two in three, an
// outcome; one entry every 10 ms of log time.
func genFindLog(b *testing.B, l *audit.Log, n int64) {
	var next atomic.Int64
	next.Store(l.Size())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			var ps []audit.Pending
			for {
				i := next.Add(1) - 1
				if i >= n {
					break
				}
				p, err := l.Enqueue(context.Background(), findEntry(i))
				if err != nil {
					b.Error(err)
					return
				}
				if ps = append(ps, p); len(ps) == 256 {
					for _, p := range ps {
						if _, err := p.Wait(context.Background()); err != nil {
							b.Error(err)
							return
						}
					}
					ps = ps[:0]
				}
			}
			for _, p := range ps {
				p.Wait(context.Background())
			}
		})
	}
	wg.Wait()
}

var findDecisions = []string{"allow", "allow", "allow", "allow", "deny", "deny", "require_approval", "approved"}

func findEntry(i int64) *audit.Entry {
	r := rand.New(rand.NewPCG(uint64(i), 99))
	e := &audit.Entry{Time: findBase.Add(time.Duration(i) * 10 * time.Millisecond), Agent: fmt.Sprintf("agent-%d", r.IntN(50)),
		Session: fmt.Sprintf("s-%d", i/100), RequestID: fmt.Sprintf("req-%d", i/2)}
	if i%2 == 1 {
		e.Kind, e.Status, e.Closes = audit.KindOutcome, "ok", i-1
		return e
	}
	e.Kind, e.Decision = audit.KindDecision, findDecisions[r.IntN(len(findDecisions))]
	e.Action = audit.Text(fmt.Sprintf(`{"amount":%d,"to":"acct-%d","type":"type-%d"}`, r.IntN(50000), r.IntN(1000), r.IntN(20)))
	for k := r.IntN(3); k > 0; k-- {
		e.Rules = append(e.Rules, audit.Rule{Name: fmt.Sprintf("Rule%d", r.IntN(30)), Outcome: "deny"})
	}
	return e
}

// BenchmarkLogFind measures rulelock log find's search (search.Index.Find,
// every result read back from the log and matched) on a generated log of
// -find.entries entries, with the index up to date:
//
//	cd bench && go test -run '^$' -bench LogFind -find.entries 10000000 -find.dir /var/tmp/find10m -timeout 2h .
func BenchmarkLogFind(b *testing.B) {
	n := *findEntries
	l, ix := findLog(b, n)
	mid := findBase.Add(time.Duration(n/2) * 10 * time.Millisecond)
	queries := []struct {
		name string
		q    func(i int) search.Query
	}{
		{"request", func(i int) search.Query { return search.Query{RequestID: fmt.Sprintf("req-%d", int64(i*7919)%(n/2))} }},
		{"agent+decision/limit=100", func(i int) search.Query {
			return search.Query{Agent: fmt.Sprintf("agent-%d", i%50), Decision: "deny", Limit: 100}
		}},
		{"agent+rule+type+deny/all", func(i int) search.Query {
			return search.Query{Agent: fmt.Sprintf("agent-%d", i%50), Rule: fmt.Sprintf("Rule%d", i%30), Type: fmt.Sprintf("type-%d", i%20), Decision: "deny"}
		}},
		{"rule+1h/all", func(i int) search.Query {
			return search.Query{Rule: fmt.Sprintf("Rule%d", i%30), Since: mid, Until: mid.Add(time.Hour)}
		}},
		{"10min/limit=1000", func(i int) search.Query {
			return search.Query{Since: mid, Until: mid.Add(10 * time.Minute), Limit: 1000}
		}},
		{"decision=deny/last-100", func(i int) search.Query {
			return search.Query{Decision: "deny", From: n - 20000, Limit: 100}
		}},
	}
	// What rulelock log find does besides starting: open the log from
	// the index (a tail and recorded positions), update the index, search.
	logDir := filepath.Join(filepath.Dir(ix.Dir()), "log")
	b.Run("cli:open+update+request", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			s, err := ix.OpenLog(logDir)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ix.Update(context.Background(), s); err != nil {
				b.Fatal(err)
			}
			if rs, err := ix.Find(s, queries[0].q(i)); err != nil || len(rs) != 2 {
				b.Fatalf("%d results, %v", len(rs), err)
			}
			s.Close()
		}
	})
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			found := 0
			i := 0
			for b.Loop() {
				rs, err := ix.Find(l, q.q(i))
				if err != nil {
					b.Fatal(err)
				}
				found += len(rs)
				i++
			}
			b.ReportMetric(float64(found)/float64(b.N), "results/op")
		})
	}
}
