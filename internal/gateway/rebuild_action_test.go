package gateway_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestRebuildRefusesActionMismatch: a restarted gateway refuses a log with
// a decision whose action text is not the canonical form (its hash matches
// the text): the fold never uses an action other than the one the log's
// hash names, and the gateway does not start on it.
func TestRebuildRefusesActionMismatch(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	res, err := f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 600, "to": "acct-7"}`)}, false)
	if err != nil || res.Decision.Decision != policy.Allow {
		t.Fatalf("submit: %+v %v", res, err)
	}
	raw, err := f.log.ReadEntry(res.Receipt.Index)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.DecodeEntry(raw)
	if err != nil {
		t.Fatal(err)
	}
	e.RequestID += "x"
	e.Action, e.ActionSHA256 = audit.Text(`{"type":"transfer","amount":600,"to":"acct-7"}`), audit.Digest{}
	forged, err := f.log.Append(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	f.log.Close()

	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	_, err = gw.Rebuild(ctx, l)
	var bad *gateway.EntryError
	if !errors.Is(err, audit.ErrActionMismatch) || !errors.As(err, &bad) || bad.Index != forged.Index {
		t.Fatalf("rebuild: %v, want %v at entry %d", err, audit.ErrActionMismatch, forged.Index)
	}
}
