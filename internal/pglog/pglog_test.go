package pglog

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

const origin = "rulelock.test/pglog"

func keys(t *testing.T) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// replica is one gateway replica's view of the database: its own pool and
// Log.
type replica struct {
	pool *pgxpool.Pool
	log  *Log
}

func newReplica(t testing.TB, dsn string) *replica {
	t.Helper()
	ctx := context.Background()
	pool, err := Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l, err := Open(ctx, pool, Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &replica{pool: pool, log: l}
}

func entry(who string, i int) *audit.Entry {
	return &audit.Entry{Kind: audit.KindNote, Time: time.Date(2026, 12, 2, 0, 0, 0, i, time.UTC), Agent: who, Message: fmt.Sprintf("%s %d", who, i)}
}

func connConfig(t *testing.T, dsn string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// published returns the size of the published tree.
func published(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), "SELECT size FROM rulelock_checkpoint").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitPublished waits until the published tree has n entries (the
// integrators run in the background; the test does not time them).
func waitPublished(t *testing.T, pool *pgxpool.Pool, n int64) {
	t.Helper()
	for published(t, pool) < n {
		time.Sleep(5 * time.Millisecond)
	}
	if got := published(t, pool); got != n {
		t.Fatalf("published size %d, want %d", got, n)
	}
}

// exportAndVerify exports the log and verifies it with the unchanged
// verifier of `rulelock verify`.
func exportAndVerify(t *testing.T, pool *pgxpool.Pool, v note.Verifier) (*audit.Report, error) {
	t.Helper()
	dir := t.TempDir()
	if _, err := NewReader(pool).Export(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if !audit.IsTilesDir(dir) {
		t.Fatalf("export %s is not a tiles directory", dir)
	}
	return audit.VerifyTiles(dir, v, audit.VerifyOptions{})
}

// checkHistory checks that every published checkpoint verifies and that
// each one's tree extends the one before it (a consistency proof from the
// stored tiles), so the log never forked.
func checkHistory(t *testing.T, pool *pgxpool.Pool, v note.Verifier) int {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, "SELECT size, root, note FROM rulelock_checkpoints ORDER BY size")
	if err != nil {
		t.Fatal(err)
	}
	type cp struct {
		size int64
		root tlog.Hash
	}
	var cps []cp
	for rows.Next() {
		var c cp
		var root, msg []byte
		if err := rows.Scan(&c.size, &root, &msg); err != nil {
			t.Fatal(err)
		}
		copy(c.root[:], root)
		n, err := note.Open(msg, note.VerifierList(v))
		if err != nil {
			t.Fatalf("checkpoint %d: %v", c.size, err)
		}
		got, err := audit.ParseCheckpoint([]byte(n.Text))
		if err != nil || got.Size != c.size || got.Root != c.root {
			t.Fatalf("checkpoint %d: note says %+v, %v", c.size, got, err)
		}
		cps = append(cps, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	r := newTileReader(ctx, pool)
	for i := 1; i < len(cps); i++ {
		a, b := cps[i-1], cps[i]
		p, err := tlog.ProveTree(b.size, a.size, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, b.size, b.root, a.size, a.root); err != nil {
			t.Errorf("checkpoint %d does not extend checkpoint %d: %v", b.size, a.size, err)
		}
	}
	return len(cps)
}
