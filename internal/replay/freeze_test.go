package replay_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

// TestVerifyFrozenDenials: a log with a freeze and its lifting replays
// clean; a deny frozen decision inside the freeze is the gateway's and
// replays clean; the same denial outside any freeze is reported.
func TestVerifyFrozenDenials(t *testing.T) {
	data := t.TempDir()
	p := archived(t, data, tradePolicy)
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	signers, reg := approvers(t)
	now := time.Now().UTC().Truncate(time.Second)
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "v1"}); err != nil {
		t.Fatal(err)
	}
	res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "a1"}, Action: mustAction(t, `{"type": "trade", "amount": 5}`)}, false)
	if err != nil || res.Decision.Decision != policy.Allow {
		t.Fatalf("submit: %+v %v", res, err)
	}
	id := freeze.NewID()
	signed, _ := freeze.Sign(freeze.Statement{ID: id, Time: now, Reason: "stop"}, signers["alice"])
	if _, err := gw.Freeze(ctx, "alice", signed); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"alice", "bob"} {
		vote, _ := freeze.Sign(freeze.Statement{Lift: true, ID: id}, signers[who])
		if _, err := gw.Unfreeze(ctx, who, vote); err != nil {
			t.Fatal(err)
		}
	}
	opts := replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, AllowDevelopment: true}
	if sum, err := replay.Verify(l, opts); err != nil || len(sum.Findings) != 0 {
		t.Fatalf("honest log: %+v, %v", sum, err)
	}

	// rewrite copies the log with the allowed decision denied frozen,
	// where it was (before the freeze) or moved just after the freeze note.
	rewrite := func(moveIntoFreeze bool) *audit.Log {
		fl, err := audit.Open(filepath.Join(t.TempDir(), "log"), audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fl.Close() })
		var held *audit.Entry
		err = gateway.EachEntry(l, func(i int64, raw []byte, e *audit.Entry) error {
			if e.Kind == audit.KindDecision && e.RequestID == res.RequestID {
				e.Decision, e.Message = "deny", string(ledger.Frozen)
				if moveIntoFreeze {
					held = e
					return nil
				}
			}
			if _, err := fl.Append(ctx, e); err != nil {
				return err
			}
			if n, ok := ledger.ParseFreezeNote(e); ok && n.Word == ledger.NoteFreeze && held != nil {
				_, err := fl.Append(ctx, held)
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}
	if sum, err := replay.Verify(rewrite(true), opts); err != nil || len(sum.Findings) != 0 {
		t.Errorf("a frozen denial inside the freeze: %+v, %v; want no finding", sum.Findings, err)
	}
	sum, err := replay.Verify(rewrite(false), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Findings) != 1 || sum.Findings[0].Class != replay.ReplayMismatch || !strings.Contains(sum.Findings[0].Detail, "no freeze is in force") {
		t.Errorf("a frozen denial outside any freeze: %+v, want one replay mismatch", sum.Findings)
	}
}
