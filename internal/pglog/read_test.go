package pglog

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/pgtest"
)

var (
	_ gateway.Recorder    = (*Log)(nil)
	_ gateway.LogReader   = (*Snapshot)(nil)
	_ gateway.Checkpoints = (*Integrator)(nil)
)

// TestRead: a receipt from the PostgreSQL log verifies alone; a snapshot
// reads back every entry and the long field stored by digest; a sensitive
// field is a commitment whose sealed value and salt are stored apart.
func TestRead(t *testing.T) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	rep := newReplica(t, c.DSN())
	ctx := context.Background()
	appendN(t, rep.log, "x", 5)
	long := strings.Repeat("reasoning ", 1000)
	e := entry("y", 5)
	e.Reasoning = audit.Text(long)
	e.Instruction = audit.Sensitive("pay acct-9")
	r5, err := rep.log.Append(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	rd := NewReader(rep.pool)
	if _, err := rd.Receipt(ctx, 5); err == nil {
		t.Fatal("receipt before any checkpoint: no error")
	}
	if _, err := integrate(ctx, dial(t, c.DSN()), signer, 100, nil); err != nil {
		t.Fatal(err)
	}
	rc, err := rd.Receipt(ctx, r5.Index)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := audit.VerifyReceipt(rc, verifier)
	if err != nil {
		t.Fatalf("verify receipt: %v", err)
	}
	if got.Reasoning.Digest.IsZero() || got.Instruction.Commitment.IsZero() {
		t.Errorf("entry 5: reasoning %+v, instruction %+v; want a digest and a commitment", got.Reasoning, got.Instruction)
	}

	snap, err := rd.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Size() != 6 {
		t.Fatalf("snapshot size %d, want 6", snap.Size())
	}
	var n int
	if err := gateway.EachEntry(snap, func(i int64, raw []byte, e *audit.Entry) error { n++; return nil }); err != nil || n != 6 {
		t.Fatalf("EachEntry: %d entries, %v", n, err)
	}
	b, err := snap.Blob(got.Reasoning.Digest)
	if err != nil || string(b) != long {
		t.Errorf("blob of the reasoning: %d bytes, %v", len(b), err)
	}
	var sealed, salts int
	if err := rep.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM rulelock_sensitive WHERE idx = 5 AND field = 'instruction'), (SELECT count(*) FROM rulelock_salts WHERE idx = 5)").Scan(&sealed, &salts); err != nil {
		t.Fatal(err)
	}
	if sealed != 1 || salts != 1 {
		t.Errorf("sensitive instruction: %d sealed values, %d salts; want 1 and 1", sealed, salts)
	}
}

// TestUnsigned: how long the oldest uncovered entry has waited, from the
// observations of the published and sequenced sizes (a fake clock).
func TestUnsigned(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	now := t0
	cfg, err := pgx.ParseConfig("host=/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	in := NewIntegrator(cfg, nil, IntegratorOptions{Now: func() time.Time { return now }})
	at := func(sec int, size, next int64, want int) {
		t.Helper()
		now = t0.Add(time.Duration(sec) * time.Second)
		in.observe(size, next, now)
		if got := in.Unsigned(); got != time.Duration(want)*time.Second {
			t.Errorf("at %ds (published %d, sequenced %d): Unsigned %v, want %ds", sec, size, next, got, want)
		}
	}
	at(0, 0, 0, 0)
	at(1, 0, 5, 1)  // arrived after 0s
	at(2, 0, 9, 2)  // still from 0s
	at(3, 5, 9, 2)  // 0..4 covered; 5..8 were not sequenced at 1s: from 1s
	at(4, 9, 12, 1) // 9..11 were not sequenced at 3s: from 3s
	at(5, 12, 12, 0)
	at(6, 12, 12, 0)
	at(7, 12, 13, 1) // from 6s
}
