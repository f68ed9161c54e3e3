package gateway_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// recorderAttestor is the gateway's Attestor over a real attest.Recorder
// and the log, as cmd/rulelock wires it.
type recorderAttestor struct {
	rec *attest.Recorder
	log *audit.Log
}

func (a recorderAttestor) Activated(ctx context.Context, digest string) error {
	return a.rec.Activated(ctx, a.log, digest)
}

func (a recorderAttestor) Attested(now time.Time) error { return a.rec.Attested(now) }

// TestUnattestedFailsClosed attests with a real TPM (swtpm) that goes
// away mid-run: from the failed attestation of a bundle activation on,
// nothing is decided or executed (Ready, Submit and Approve return
// ErrUnattested, no entry is written by Submit, the executor is never
// called), although the bundle is in force; once an attestation succeeds
// actions are accepted again, without a restart or a second activation.
func TestUnattestedFailsClosed(t *testing.T) {
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec, err := attest.NewRecorder(tp, attest.RecorderOptions{Origin: "test.rulelock/log", Engine: "sha256:" + hex64('e'),
		MaxGap: time.Hour, Checkpoint: func() []byte { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signers, reg := newApprovers(t)
	f := &fixture{signers: signers}
	var executed atomic.Int64
	pay := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
		executed.Add(1)
		return gateway.Outcome{Status: gateway.StatusOK}
	})
	gw, err := gateway.New(gateway.Config{Log: l, Executors: map[string]gateway.Executor{"transfer": pay},
		Approvers: reg, Attest: recorderAttestor{rec, l}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Record(ctx, l); err != nil { // at start
		t.Fatal(err)
	}
	if err := gw.Activate(ctx, &gateway.Active{Policy: pol, Digest: "sha256:" + hex64('1'), Version: 1}); err != nil {
		t.Fatal(err)
	}
	req := &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "transfer", "amount": 5, "to": "acct-1"}`)}
	if res, err := gw.Submit(ctx, req, true); err != nil || res.Outcome == nil || executed.Load() != 1 {
		t.Fatalf("attested: %+v, %v; want allowed and executed", res, err)
	}
	parked, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "trade", "amount": 500}`)}, true)
	if err != nil || parked.Approval == nil {
		t.Fatalf("trade: %+v %v, want parked", parked, err)
	}
	r := *parked.Approval

	sw.Unplug()
	p2 := &gateway.Active{Policy: pol, Digest: "sha256:" + hex64('2'), Version: 2}
	if err := gw.Activate(ctx, p2); err != nil {
		t.Fatalf("activate while the TPM is away: %v (the activation is logged; its attestation is retried)", err)
	}
	if gw.Active() != p2 {
		t.Fatal("the activated bundle is not in force")
	}
	err = gw.Ready()
	if !errors.Is(err, gateway.ErrUnattested) {
		t.Fatalf("Ready: %v, want ErrUnattested", err)
	}
	if code, _ := gateway.Refusal(err); code != "attestation_failed" {
		t.Errorf("refusal code %q, want attestation_failed", code)
	}
	t.Logf("Ready: %v", err)
	size := l.Size()
	// The activation entry, then the note of the failed attestation.
	for i, want := range []audit.Kind{audit.KindPolicyActivation, audit.KindNote} {
		b, err := l.ReadEntry(size - 2 + int64(i))
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(b)
		if err != nil || e.Kind != want || e.Kind == audit.KindNote && !strings.HasPrefix(e.Message, attest.NoteFailed+": ") {
			t.Fatalf("entry %d: %+v %v, want %s", size-2+int64(i), e, err, want)
		}
	}
	for _, execute := range []bool{true, false} {
		if res, err := gw.Submit(ctx, req, execute); !errors.Is(err, gateway.ErrUnattested) {
			t.Fatalf("unattested: submit: %+v, %v; want ErrUnattested", res, err)
		}
	}
	if _, err := gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); !errors.Is(err, gateway.ErrUnattested) {
		t.Fatalf("unattested: approve: %v, want ErrUnattested", err)
	}
	if l.Size() != size || executed.Load() != 1 {
		t.Fatalf("unattested: %d entries written, %d executions; want none", l.Size()-size, executed.Load()-1)
	}
	if err := rec.Record(ctx, l); err == nil {
		t.Fatal("a retry attested on an unplugged TPM")
	}

	sw.Plug()
	if err := rec.Record(ctx, l); err != nil { // the retry: measures and attests bundle 2
		t.Fatal(err)
	}
	if err := gw.Ready(); err != nil {
		t.Fatalf("attested again: Ready: %v", err)
	}
	if res, err := gw.Submit(ctx, req, true); err != nil || res.Outcome == nil || executed.Load() != 2 || res.Decision.Policy != p2.Digest {
		t.Fatalf("attested again: %+v, %v; want allowed under bundle 2 and executed", res, err)
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
