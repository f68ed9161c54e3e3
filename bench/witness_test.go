package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/witness"
)

// BenchmarkCheckpointWitnessed is the latency of one checkpoint (sign,
// store, export tiles) after 16 new entries, without witnesses and with
// one and three real C2SP tlog-witnesses (internal/witness.Server, which
// syncs its state before answering) on loopback HTTP, all asked at once.
func BenchmarkCheckpointWitnessed(b *testing.B) {
	for _, n := range []int{0, 1, 3} {
		b.Run(fmt.Sprintf("witnesses=%d", n), func(b *testing.B) {
			signer, v := benchKey(b)
			var ws []audit.CheckpointWitness
			for i := range n {
				skey, vkey, err := witness.GenerateKey(rand.Reader, fmt.Sprintf("bench.witness/%d", i))
				if err != nil {
					b.Fatal(err)
				}
				c, _ := witness.NewCosigner(skey, nil)
				srv, err := witness.NewServer(c, []note.Verifier{v}, b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				ts := httptest.NewServer(srv)
				defer ts.Close()
				key, _ := audit.ParseCosignerKey(vkey)
				ws = append(ws, audit.CheckpointWitness{Key: key, Witness: &witness.Client{URL: ts.URL, HTTP: ts.Client()}})
			}
			dir := b.TempDir()
			l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{TilesDir: filepath.Join(dir, "tiles"), Witnesses: ws})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			next := 0
			grow := func() {
				for range 16 {
					if _, err := l.Append(ctx, auditEntry(next)); err != nil {
						b.Fatal(err)
					}
					next++
				}
			}
			grow()
			if _, err := cp.Checkpoint(); err != nil { // the first contact
				b.Fatal(err)
			}
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				grow()
				b.StartTimer()
				t0 := time.Now()
				if _, err := cp.Checkpoint(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}
