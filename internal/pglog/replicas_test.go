package pglog

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/pgtest"
)

// TestThreeReplicas: three replicas (separate pools, separate integrators)
// append concurrently; the integrator's connection is killed half-way. The
// acknowledged entries have contiguous indexes with no gap and no
// duplicate, another replica takes over integration, every checkpoint
// extends the one before, and the export verifies with the unchanged
// verifier, also against a checkpoint saved before the takeover.
func TestThreeReplicas(t *testing.T) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reps []*replica
	var ins []*Integrator
	var stops []context.CancelFunc
	var wg sync.WaitGroup
	for range 3 {
		reps = append(reps, newReplica(t, c.DSN()))
		in := NewIntegrator(connConfig(t, c.DSN()), signer, IntegratorOptions{Interval: 10 * time.Millisecond, MaxBatch: 64})
		ins = append(ins, in)
		ictx, stop := context.WithCancel(ctx)
		stops = append(stops, stop)
		wg.Add(1)
		go func() { defer wg.Done(); in.Run(ictx) }()
	}
	defer wg.Wait()
	defer cancel()

	const writers, each = 8, 40
	var mu sync.Mutex
	got := map[int64]tlog.Hash{}
	var aw sync.WaitGroup
	appendAll := func(half int) {
		for r, rep := range reps {
			for w := range writers {
				aw.Add(1)
				go func() {
					defer aw.Done()
					for i := range each / 2 {
						who := fmt.Sprintf("r%d-w%d", r, w)
						rc, err := rep.log.Append(ctx, entry(who, half*each+i))
						if err != nil {
							t.Errorf("append: %v", err)
							return
						}
						mu.Lock()
						if _, dup := got[rc.Index]; dup {
							t.Errorf("index %d acknowledged twice", rc.Index)
						}
						got[rc.Index] = rc.LeafHash
						mu.Unlock()
					}
				}()
			}
		}
		aw.Wait()
	}
	appendAll(0)
	n := int64(len(got))
	waitPublished(t, reps[0].pool, n)
	// A verifier saves this checkpoint; the later log must extend it.
	saved, err := NewReader(reps[0].pool).Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The integrator's replica dies: its connection is killed (PostgreSQL
	// releases the lock) and it does not come back.
	first := -1
	for i, in := range ins {
		if in.Leading() {
			first = i
		}
	}
	if first < 0 {
		t.Fatal("no integrator leading")
	}
	var killed bool
	if err := reps[0].pool.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND objid::bigint = $1 AND granted`, int64(integratorLock&0xffffffff)).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate the integrator's connection: %v, %v", killed, err)
	}
	stops[first]()
	appendAll(1)
	n = int64(len(got))
	waitPublished(t, reps[0].pool, n)

	for i := range n {
		if _, ok := got[i]; !ok {
			t.Errorf("index %d never acknowledged (a gap)", i)
		}
	}
	rows, err := reps[1].pool.Query(ctx, "SELECT idx, payload FROM rulelock_entries ORDER BY idx")
	if err != nil {
		t.Fatal(err)
	}
	var rowsN int64
	for rows.Next() {
		var idx int64
		var payload []byte
		if err := rows.Scan(&idx, &payload); err != nil {
			t.Fatal(err)
		}
		if h := tlog.RecordHash(payload); h != got[idx] {
			t.Errorf("entry %d: leaf hash %v, receipt said %v", idx, h, got[idx])
		}
		rowsN++
	}
	if rowsN != n {
		t.Errorf("%d entries in the table, %d acknowledged", rowsN, n)
	}
	if k := checkHistory(t, reps[2].pool, verifier); k < 2 {
		t.Errorf("%d checkpoints, want at least 2 (before and after the takeover)", k)
	}
	dir := t.TempDir()
	if _, err := NewReader(reps[2].pool).Export(ctx, dir); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyTiles(dir, verifier, audit.VerifyOptions{Since: saved})
	if err != nil {
		t.Fatalf("verify export since the checkpoint saved before the takeover: %v", err)
	}
	if rep.Entries != n {
		t.Errorf("verified %d entries, want %d", rep.Entries, n)
	}
	var leaders []int
	for i, in := range ins {
		if in.Leading() {
			leaders = append(leaders, i)
		}
	}
	if len(leaders) != 1 || leaders[0] == first {
		t.Errorf("integrators leading: %v, want one that is not %d (the one that died)", leaders, first)
	}
}
