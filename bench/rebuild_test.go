package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
)

// BenchmarkGatewayRebuild measures what a restarted `rulelock serve` does
// before it is ready, on a copy of the replay benchmarks' log
// (-replay.entries, written by the real gateway): audit.Open (every frame
// and the hash chain checked) then gateway.Rebuild (every entry decoded;
// histories, requests and parked approvals restored), with the clock at the
// log's last entry, as after a restart right away:
//
//	cd bench && go test -run '^$' -bench GatewayRebuild -benchtime 1x -count 5 .
func BenchmarkGatewayRebuild(b *testing.B) {
	data := replayData(b, *replayEntries)
	reg := replayRegistry(b, data)
	pol := examplePolicy(b, "payments")
	dir := filepath.Join(b.TempDir(), "log")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(data, "log"))); err != nil {
		b.Fatal(err)
	}
	var last time.Time
	{
		l, err := audit.Open(dir, audit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		raw, err := l.ReadEntry(l.Size() - 1)
		if err != nil {
			b.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			b.Fatal(err)
		}
		last = e.Time
		l.Close()
	}
	var open, rebuild time.Duration
	var entries int64
	for b.Loop() {
		t0 := time.Now()
		l, err := audit.Open(dir, audit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		gw, err := gateway.New(gateway.Config{Policy: pol, Log: l, Approvers: reg, Now: func() time.Time { return last }})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := gw.Rebuild(context.Background(), l); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		open += t1.Sub(t0)
		rebuild += t2.Sub(t1)
		entries += l.Size()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(open.Seconds()/float64(b.N), "open-s")
	b.ReportMetric(rebuild.Seconds()/float64(b.N), "rebuild-s")
	b.ReportMetric(float64(entries)/(open+rebuild).Seconds(), "entries/s")
}
