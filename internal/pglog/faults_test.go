package pglog

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/pgtest"
)

func appendN(t *testing.T, l *Log, who string, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(context.Background(), entry(who, i)); err != nil {
			t.Fatal(err)
		}
	}
}

func dial(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestIntegratorsRace: two integrators that both read the tree at size 10
// (no lock between them: the compare-and-swap alone must hold) — the one
// that publishes second fails with ErrConflict and publishes nothing; then
// both integrate concurrently, over and over, while entries arrive. Every
// checkpoint extends the one before it and the export verifies.
func TestIntegratorsRace(t *testing.T) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	rep := newReplica(t, c.DSN())
	ctx := context.Background()
	a, b := dial(t, c.DSN()), dial(t, c.DSN())
	appendN(t, rep.log, "x", 10)

	read, bDone := make(chan struct{}), make(chan struct{})
	errA := make(chan error, 1)
	go func() {
		_, err := integrate(ctx, a, signer, 100, func() { close(read); <-bDone })
		errA <- err
	}()
	<-read
	appendN(t, rep.log, "y", 5)
	if n, err := integrate(ctx, b, signer, 100, nil); n != 15 || err != nil {
		t.Fatalf("integrator b: %d, %v; want 15 entries", n, err)
	}
	close(bDone)
	if err := <-errA; !errors.Is(err, ErrConflict) {
		t.Fatalf("integrator a, publishing after b: %v, want ErrConflict", err)
	}
	if got := published(t, rep.pool); got != 15 {
		t.Fatalf("published size %d, want 15", got)
	}

	// Now both, concurrently, while a writer appends.
	var wg sync.WaitGroup
	var done atomic.Bool
	var conflicts atomic.Int64
	for _, conn := range []*pgx.Conn{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				_, err := integrate(ctx, conn, signer, 7, nil)
				if errors.Is(err, ErrConflict) {
					conflicts.Add(1)
				} else if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	appendN(t, rep.log, "z", 300)
	waitPublished(t, rep.pool, 315)
	done.Store(true)
	wg.Wait()
	t.Logf("%d conflicts while racing", conflicts.Load())
	checkHistory(t, rep.pool, verifier)
	if _, err := exportAndVerify(t, rep.pool, verifier); err != nil {
		t.Fatalf("verify export: %v", err)
	}
}

// TestTamper: an entry changed in PostgreSQL after it was integrated is
// caught by the verifier of the export (modified_entry at its index); a
// changed hash tile fails verification, and stops the integrator
// (ErrCorrupt) when it is one the next tree builds on; an entry changed
// before integration stops the integrator.
func TestTamper(t *testing.T) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	rep := newReplica(t, c.DSN())
	ctx := context.Background()
	conn := dial(t, c.DSN())
	appendN(t, rep.log, "x", 300)
	if _, err := integrate(ctx, conn, signer, 1000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := exportAndVerify(t, rep.pool, verifier); err != nil {
		t.Fatalf("verify export before tampering: %v", err)
	}

	// A valid entry, in canonical encoding, in place of entry 7.
	forged, err := entry("mallory", 7).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_entries SET payload = $1 WHERE idx = 7", forged); err != nil {
		t.Fatal(err)
	}
	_, err = exportAndVerify(t, rep.pool, verifier)
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || ve.Class != audit.ModifiedEntry || ve.Index != 7 {
		t.Fatalf("verify export with entry 7 changed: %v, want modified_entry at 7", err)
	}
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_entries SET payload = $1 WHERE idx = 7", mustEncode(t, entry("x", 7))); err != nil {
		t.Fatal(err)
	}
	if _, err := exportAndVerify(t, rep.pool, verifier); err != nil {
		t.Fatalf("verify export after restoring entry 7: %v", err)
	}

	// A hash in the first level-0 tile flipped.
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_tiles SET data = set_byte(data, 40, get_byte(data, 40) # 1) WHERE level = 0 AND idx = 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := exportAndVerify(t, rep.pool, verifier); err == nil {
		t.Fatal("verify export with a tile changed: no error")
	}
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_tiles SET data = set_byte(data, 40, get_byte(data, 40) # 1) WHERE level = 0 AND idx = 0"); err != nil {
		t.Fatal(err)
	}
	// The integrator recomputes the root from the tiles it builds on, the
	// right edge of the tree (the verifier checks all of them): a hash
	// flipped in the last, partial level-0 tile stops it.
	appendN(t, rep.log, "y", 3)
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_tiles SET data = set_byte(data, 40, get_byte(data, 40) # 1) WHERE level = 0 AND idx = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := integrate(ctx, conn, signer, 1000, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("integrate over a changed tile: %v, want ErrCorrupt", err)
	}
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_tiles SET data = set_byte(data, 40, get_byte(data, 40) # 1) WHERE level = 0 AND idx = 1"); err != nil {
		t.Fatal(err)
	}

	// An entry changed before integration.
	if _, err := rep.pool.Exec(ctx, "UPDATE rulelock_entries SET payload = $1 WHERE idx = 301", forged); err != nil {
		t.Fatal(err)
	}
	if _, err := integrate(ctx, conn, signer, 1000, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("integrate over a changed entry: %v, want ErrCorrupt", err)
	}
	if got := published(t, rep.pool); got != 300 {
		t.Fatalf("published size %d after refused integrations, want 300", got)
	}
}

func mustEncode(t *testing.T, e *audit.Entry) []byte {
	t.Helper()
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStop: PostgreSQL stops cleanly mid-traffic, then starts again.
func TestStop(t *testing.T) { testOutage(t, (*pgtest.Cluster).Stop) }

// TestKill: PostgreSQL is killed (SIGKILL, every backend) mid-traffic, then
// recovers.
func TestKill(t *testing.T) { testOutage(t, (*pgtest.Cluster).Kill) }

// testOutage: while writers append, PostgreSQL goes away. Appends fail with
// an error and Ready reports it; once PostgreSQL is back, the same Log
// (no restart of the Go side) appends again, from the first append on. Every acknowledged entry is
// in the log at the index its receipt named, the indexes have no gap, and
// the integrator, which also survived, publishes a tree that verifies.
func testOutage(t *testing.T, fault func(*pgtest.Cluster)) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	rep := newReplica(t, c.DSN())
	ctx, cancel := context.WithCancel(context.Background())
	in := NewIntegrator(connConfig(t, c.DSN()), signer, IntegratorOptions{Interval: 10 * time.Millisecond})
	ran := make(chan struct{})
	go func() { defer close(ran); in.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	var mu sync.Mutex
	acked := map[int64]audit.Receipt{}
	var failed atomic.Int64
	var stop atomic.Bool
	// An append that starts while PostgreSQL is down must fail (one that
	// started before may be acknowledged late: it committed).
	const up, down, back, restarted = 0, 1, 2, 3
	var phase atomic.Int32
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				p := phase.Load()
				r, err := rep.log.Append(ctx, entry(string(rune('a'+w)), i))
				if err == nil && p == down && phase.Load() == down {
					t.Errorf("entry %d acknowledged while PostgreSQL was down", r.Index)
				}
				if err != nil && p == restarted {
					t.Errorf("append after PostgreSQL was back: %v", err)
				}
				if err != nil {
					failed.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				mu.Lock()
				acked[r.Index] = r
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for count() < 200 {
		time.Sleep(time.Millisecond)
	}
	fault(c)
	phase.Store(down)
	for f := failed.Load(); failed.Load() < f+20; {
		time.Sleep(time.Millisecond)
	}
	if err := rep.log.Ready(ctx); err == nil {
		t.Error("Ready with PostgreSQL down: nil")
	}
	before := count()
	phase.Store(back)
	c.Start()
	phase.Store(restarted)
	for count() < before+200 {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if err := rep.log.Ready(ctx); err != nil {
		t.Errorf("Ready after PostgreSQL returned: %v", err)
	}
	t.Logf("%d appends acknowledged, %d failed", count(), failed.Load())

	var next int64
	if err := rep.pool.QueryRow(ctx, "SELECT next FROM rulelock_sequence").Scan(&next); err != nil {
		t.Fatal(err)
	}
	rows, err := rep.pool.Query(ctx, "SELECT idx, leaf FROM rulelock_entries ORDER BY idx")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for rows.Next() {
		var idx int64
		var leaf []byte
		if err := rows.Scan(&idx, &leaf); err != nil {
			t.Fatal(err)
		}
		if idx != n {
			t.Fatalf("entry %d follows entry %d: a gap", idx, n-1)
		}
		if r, ok := acked[idx]; ok && string(r.LeafHash[:]) != string(leaf) {
			t.Errorf("entry %d is not the one acknowledged", idx)
		}
		n++
	}
	if n != next {
		t.Errorf("%d entries, sequence at %d", n, next)
	}
	for idx := range acked {
		if idx >= n {
			t.Errorf("acknowledged entry %d lost", idx)
		}
	}
	waitPublished(t, rep.pool, n)
	if _, err := exportAndVerify(t, rep.pool, verifier); err != nil {
		t.Fatalf("verify export: %v", err)
	}
}
