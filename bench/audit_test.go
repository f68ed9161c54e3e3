package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
)

// auditEntry returns a decision entry that encodes to about 1 KiB.
func auditEntry(i int) *audit.Entry {
	return &audit.Entry{
		Kind:          audit.KindDecision,
		Time:          time.Date(2026, 11, 22, 10, 0, 0, i, time.UTC),
		Agent:         "agent-42",
		Session:       "s-1",
		RequestID:     fmt.Sprintf("req-%d", i),
		Action:        audit.Text(fmt.Sprintf(`{"amount":%d,"to":"acct-9","type":"transfer"}`, i)),
		Instruction:   audit.Text("Pay invoice 1234 from Acme"),
		Reasoning:     audit.Text(strings.Repeat("The invoice is due today. ", 26)),
		Rules:         []audit.Rule{{Name: "NoHighValueTransfers", Outcome: "deny", Message: "Transfers over $10,000 require human approval"}},
		Decision:      "deny",
		BundleDigest:  "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		EngineVersion: "rulelock/0.1.0",
	}
}

func benchKey(b *testing.B) (note.Signer, note.Verifier) {
	skey, vkey, err := note.GenerateKey(nil, "bench.rulelock/audit")
	if err != nil {
		b.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v
}

// BenchmarkAuditRawFloor is the floor for a durable entry: write 1 KiB into
// a preallocated file and fdatasync it.
func BenchmarkAuditRawFloor(b *testing.B) {
	reportLatency(b, rawFloor(b, 64<<20, 1024))
}

// BenchmarkAuditRawFloorBatch is the floor for a group commit of 64
// entries: one pwrite of 64 × 1,270 bytes (what 64 writers' decision
// entries take) into a preallocated file, then fdatasync. 64 divided by its
// latency is the most entries/s 64 writers can get from this disk, whatever
// the log does.
func BenchmarkAuditRawFloorBatch(b *testing.B) {
	const entries = 64
	lat := rawFloor(b, 256<<20, entries*1270)
	reportLatency(b, lat)
	var total time.Duration
	for _, d := range lat {
		total += d
	}
	b.ReportMetric(float64(entries*len(lat))/total.Seconds(), "entries/s")
}

// rawFloor writes n bytes at a time through a preallocated file of size
// bytes, each write followed by fdatasync, and returns each one's latency.
func rawFloor(b *testing.B, size int64, n int) []time.Duration {
	f, err := os.Create(filepath.Join(b.TempDir(), "floor"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := fsx.Preallocate(f, 0, size); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, n)
	var lat []time.Duration
	b.ResetTimer()
	for i := int64(0); b.Loop(); i++ {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, i*int64(n)%(size-int64(n))); err != nil {
			b.Fatal(err)
		}
		if err := fsx.Datasync(f); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat
}

// BenchmarkAuditAppend measures Log.Append of ~1 KiB entries with 1, 16 and
// 64 concurrent writers: latency percentiles and entries/s.
func BenchmarkAuditAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, err := audit.Open(b.TempDir(), audit.Options{SegmentSize: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var next atomic.Int64
			lats := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						t0 := time.Now()
						if _, err := l.Append(context.Background(), auditEntry(int(i))); err != nil {
							b.Error(err)
							return
						}
						lats[w] = append(lats[w], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			reportLatency(b, slices.Concat(lats...))
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
		})
	}
}

// BenchmarkAuditCheckpoint measures signing and storing one checkpoint over
// a tree of about 20,000 entries that grew by one entry.
func BenchmarkAuditCheckpoint(b *testing.B) {
	l, err := audit.Open(b.TempDir(), audit.Options{SegmentSize: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fill(b, l, 20_000)
	s, _ := benchKey(b)
	cp, err := audit.NewCheckpointer(l, s, audit.CheckpointOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		if _, err := l.Append(context.Background(), auditEntry(i)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := cp.Checkpoint(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuditVerify measures rulelock verify's work (audit.VerifyDir) on
// a log of 20,000 entries of ~1 KiB: entries/s.
func BenchmarkAuditVerify(b *testing.B) {
	dir := b.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	const n = 20_000
	fill(b, l, n)
	s, v := benchKey(b)
	cp, _ := audit.NewCheckpointer(l, s, audit.CheckpointOptions{})
	if _, err := cp.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	l.Close()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		rep, err := audit.VerifyDir(dir, v, audit.VerifyOptions{})
		if err != nil || rep.Entries != n {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/time.Since(start).Seconds(), "entries/s")
}

// fill appends n entries with 64 writers.
func fill(b *testing.B, l *audit.Log, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := l.Append(context.Background(), auditEntry(int(i))); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}
