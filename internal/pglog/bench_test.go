package pglog

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/rulelock/rulelock/internal/pgtest"
)

// BenchmarkAppend measures durable appends per second to one PostgreSQL
// (a throwaway cluster on this machine, synchronous_commit on) from 1 and
// from 3 replicas (separate pools and batchers), with 16 and 48 concurrent
// callers in all, and from one caller alone (no batching possible).
//
//	go test -run '^$' -bench Append -benchtime 3s ./internal/pglog
func BenchmarkAppend(b *testing.B) {
	c := pgtest.New(b)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		rep := newReplica(b, c.DSN())
		for i := 0; b.Loop(); i++ {
			if _, err := rep.log.Append(ctx, entry("serial", i)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	})
	for _, x := range [][2]int{{1, 16}, {3, 16}, {1, 48}, {3, 48}} {
		n, callers := x[0], x[1]
		b.Run(fmt.Sprintf("replicas=%d/callers=%d", n, callers), func(b *testing.B) {
			var reps []*replica
			for range n {
				reps = append(reps, newReplica(b, c.DSN()))
			}
			var k atomic.Int64
			b.SetParallelism(callers / max(1, testingProcs()))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := k.Add(1)
				rep := reps[int(w)%n]
				for i := 0; pb.Next(); i++ {
					if _, err := rep.log.Append(ctx, entry(fmt.Sprint(w), i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }
