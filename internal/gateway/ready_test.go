package gateway_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/testenv"
	"github.com/rulelock/rulelock/policy"
)

// TestMaxUnsignedFailsClosed breaks checkpoint signing for real (the
// checkpoints directory stops taking files) while the log still takes
// entries: actions go on while the oldest unsigned entry is younger than
// max_unsigned, are refused with ErrUnsigned (nothing decided, nothing
// executed, Ready false with the reason) once it is older, and are
// accepted again, without a restart, once signing resumes. On main the
// gateway kept deciding and executing with no checkpoint at all.
func TestMaxUnsignedFailsClosed(t *testing.T) {
	dir := t.TempDir()
	skey, _, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	pol, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signers, reg := newApprovers(t)
	f := &fixture{signers: signers}
	synctest.Test(t, func(t *testing.T) {
		l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		var executed atomic.Int64
		pay := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
			executed.Add(1)
			return gateway.Outcome{Status: gateway.StatusOK}
		})
		gw, err := gateway.New(gateway.Config{Policy: pol, Log: l, Executors: map[string]gateway.Executor{"transfer": pay},
			Approvers: reg, Checkpoints: cp, MaxUnsigned: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go cp.Run(ctx, time.Second)
		req := &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "transfer", "amount": 5, "to": "acct-1"}`)}
		accepted := func(when string) {
			t.Helper()
			if err := gw.Ready(); err != nil {
				t.Fatalf("%s: Ready: %v", when, err)
			}
			n := executed.Load()
			res, err := gw.Submit(ctx, req, true)
			if err != nil || res.Outcome == nil || executed.Load() != n+1 {
				t.Fatalf("%s: submit: %+v, %v; want allowed and executed", when, res, err)
			}
		}

		accepted("signing works")
		parked, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "trade", "amount": 500}`)}, true)
		if err != nil || parked.Approval == nil {
			t.Fatalf("trade: %+v %v, want parked", parked, err)
		}
		r := *parked.Approval
		time.Sleep(2 * time.Second)
		synctest.Wait()
		mend, how := testenv.BreakDir(t, filepath.Join(dir, "checkpoints"))
		t.Logf("checkpoints directory: %s", how)
		accepted("signing just broke")
		time.Sleep(50 * time.Second)
		synctest.Wait()
		accepted("entries unsigned for 50s")

		time.Sleep(15 * time.Second)
		synctest.Wait()
		err = gw.Ready()
		if !errors.Is(err, gateway.ErrUnsigned) || !strings.Contains(err.Error(), "max_unsigned 1m0s") {
			t.Fatalf("past max_unsigned: Ready: %v, want ErrUnsigned with the limit", err)
		}
		size, n := l.Size(), executed.Load()
		for _, execute := range []bool{true, false} {
			if res, err := gw.Submit(ctx, req, execute); !errors.Is(err, gateway.ErrUnsigned) {
				t.Fatalf("past max_unsigned: submit: %+v, %v; want ErrUnsigned", res, err)
			}
		}
		// An approval may complete a quorum and execute: refused too.
		if _, err := gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); !errors.Is(err, gateway.ErrUnsigned) {
			t.Fatalf("past max_unsigned: approve: %v, want ErrUnsigned", err)
		}
		if executed.Load() != n || l.Size() != size {
			t.Fatalf("past max_unsigned: %d executions and %d entries added, want none", executed.Load()-n, l.Size()-size)
		}

		mend()
		time.Sleep(11 * time.Second) // the retry after at most one backoff
		synctest.Wait()
		if st := cp.Status(); st.Err != nil || st.Size != l.Size() {
			t.Fatalf("after the fault cleared: %+v, want every entry signed (log size %d)", st, l.Size())
		}
		accepted("signing resumed")
		if _, err := gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); err != nil {
			t.Fatalf("approve after signing resumed: %v", err)
		}
		cancel()
	})
}

// TestReadyAfterLogFailure: once the audit log has failed (here its
// segment directory stopped taking files, so the next segment could not be
// created) it refuses every append until reopened, so Ready must say so
// and Submit must refuse before deciding. On main /readyz answered 200
// while every action got 503.
func TestReadyAfterLogFailure(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1}) // the smallest segments: 64 KiB
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pol, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: pol, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Ready(); err != nil {
		t.Fatalf("Ready on a fresh log: %v", err)
	}
	mend, how := testenv.BreakDir(t, filepath.Join(dir, "log"))
	defer mend()
	t.Logf("segment directory: %s", how)
	req := &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "report"}`), Instruction: strings.Repeat("x", 2000)}
	var failed error
	for i := 0; i < 200 && failed == nil; i++ {
		_, failed = gw.Submit(ctx, req, false)
	}
	if failed == nil || l.Err() == nil {
		t.Fatalf("no log failure after 400 KB of entries into 64 KiB segments: %v", failed)
	}
	if err := gw.Ready(); !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("Ready after the log failed: %v, want ErrUnavailable", err)
	}
	if _, err := gw.Submit(ctx, req, false); !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("submit after the log failed: %v, want ErrUnavailable", err)
	}
}

// BenchmarkReady is what every Submit now pays to ask whether it may act:
// the active policy, the log's error and the checkpointer's unsigned age.
func BenchmarkReady(b *testing.B) {
	l, err := audit.Open(b.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	skey, _, _ := note.GenerateKey(nil, "test.rulelock/log")
	signer, _ := note.NewSigner(skey)
	cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cp.Run(ctx, time.Hour)
	pol, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: pol, Log: l, Checkpoints: cp})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := gw.Ready(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
