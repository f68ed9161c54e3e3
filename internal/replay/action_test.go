package replay_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

// substituted is the log with the bytes of one entry replaced: what a
// replay reads from a log an insider rewrote (and signed again).
type substituted struct {
	*audit.Log
	index int64
	raw   []byte
}

func (s substituted) ReadEntries(lo, hi int64) ([][]byte, error) {
	out, err := s.Log.ReadEntries(lo, hi)
	if err == nil && lo <= s.index && s.index < hi {
		out[s.index-lo] = s.raw
	}
	return out, err
}

// TestVerifyActionMismatch: a decision whose stored action is not the
// canonical action its action_sha256 names is an action_mismatch finding,
// never evaluated as if it were: an action text that is not canonical (its
// hash matches the text), and an action stored as a blob whose
// action_sha256 names another action.
func TestVerifyActionMismatch(t *testing.T) {
	var r *recorded
	forge := func(t *testing.T, action string) int64 {
		var last *audit.Entry
		for i := range r.log.Size() {
			raw, _ := r.log.ReadEntry(i)
			if e, _ := audit.DecodeEntry(raw); e.Kind == audit.KindDecision {
				last = e
			}
		}
		f := *last
		f.RequestID = fmt.Sprintf("rforged%d", r.log.Size())
		f.Time = last.Time.Add(time.Minute)
		f.Action, f.ActionSHA256 = audit.Text(action), audit.Digest{}
		rc, err := r.log.Append(context.Background(), &f)
		if err != nil {
			t.Fatal(err)
		}
		return rc.Index
	}
	canonical := `{"amount":10,"memo":"` + strings.Repeat("m", 5000) + `","to":"acct-1","type":"transfer"}`
	tests := []struct {
		name string
		lr   func(t *testing.T) (int64, substituted)
	}{
		{"non-canonical text with a matching hash", func(t *testing.T) (int64, substituted) {
			i := forge(t, `{"type":"transfer","amount":10,"to":"acct-1"}`)
			return i, substituted{Log: r.log, index: -1}
		}},
		{"non-canonical number", func(t *testing.T) (int64, substituted) {
			i := forge(t, `{"amount":1E1,"to":"acct-1","type":"transfer"}`)
			return i, substituted{Log: r.log, index: -1}
		}},
		{"blob with another action_sha256", func(t *testing.T) (int64, substituted) {
			i := forge(t, canonical)
			raw, _ := r.log.ReadEntry(i)
			sum := sha256.Sum256([]byte(canonical))
			other := sha256.Sum256([]byte(`{"amount":10,"to":"acct-evil","type":"transfer"}`))
			changed := strings.Replace(string(raw), fmt.Sprintf(`"action_sha256":"%x"`, sum), fmt.Sprintf(`"action_sha256":"%x"`, other), 1)
			if changed == string(raw) {
				t.Fatalf("entry %d: no action_sha256 %x in %s", i, sum, raw)
			}
			return i, substituted{Log: r.log, index: i, raw: []byte(changed)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r = record(t, 2, 20)
			i, lr := tt.lr(t)
			sum, err := replay.Verify(lr, replay.Options{Bundles: filepath.Join(r.data, "bundles")})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range sum.Findings {
				got = append(got, fmt.Sprintf("%d %s", f.Index, f.Class))
			}
			if want := fmt.Sprintf("%d %s", i, replay.ActionMismatch); !slicesHave(got, []string{want}) {
				t.Fatalf("findings %v, want %s among them", got, want)
			}
		})
	}
}

// TestVerifyLongReasoning: a reasoning longer than the log keeps inline is
// stored by digest; the replay evaluates the recorded reasoning from the
// blob store, not an empty string in its place.
func TestVerifyLongReasoning(t *testing.T) {
	src := []byte(`policy "p" {
  default: allow
}

rule "NoUrgency" {
  precondition: action.type == "transfer"
  condition: !reasoning.contains("URGENT")
  deny: "urgent reasoning"
}
`)
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: src}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	arch := filepath.Join(data, "bundles", strings.TrimPrefix(p.Digest(), "sha256:"))
	if err := os.MkdirAll(arch, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(arch, "p.rules"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, reasoning := range []string{"short and URGENT", strings.Repeat("long ", 2000) + "URGENT", strings.Repeat("calm ", 2000)} {
		req := &gateway.Request{Agent: policy.Agent{ID: "a"}, Action: mustAction(t, `{"type":"transfer"}`), Reasoning: reasoning,
			Instruction: strings.Repeat("Pay it. ", 1000)}
		if _, err := gw.Submit(ctx, req, false); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := replay.Verify(l, replay.Options{Bundles: filepath.Join(data, "bundles")})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Decisions != 3 {
		t.Fatalf("%d decisions replayed, want 3", sum.Decisions)
	}
	for _, f := range sum.Findings {
		if f.Class == replay.ReplayMismatch || f.Class == replay.ActionMismatch {
			t.Errorf("finding %+v: the replay did not evaluate the recorded reasoning", f)
		}
	}
}

// TestLongApprovalTerms: a parked decision whose state (its approval
// terms, here with a long message) is longer than the log keeps inline is
// stored by digest; the replay checks the quorum against those terms, and
// a restarted gateway parks the request again, instead of taking the
// state for empty.
func TestLongApprovalTerms(t *testing.T) {
	data := t.TempDir()
	long := strings.Repeat("Trades need two approvers from treasury. ", 120)
	p := archived(t, data, strings.Replace(tradePolicy, "approvers: 2\n", "approvers: 2\n    message: \""+long+"\"\n", 1))
	logDir := filepath.Join(data, "log")
	l, err := audit.Open(logDir, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	signers, reg := approvers(t)
	cfg := gateway.Config{Policy: p, Log: l, Approvers: reg, Now: func() time.Time { return time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC) }}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	park := func() *gateway.Result {
		t.Helper()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "a1", Roles: []string{"trading"}}, Action: mustAction(t, `{"type": "trade", "amount": 5000}`)}, false)
		if err != nil || res.Approval == nil {
			t.Fatalf("park: %+v %v", res, err)
		}
		return res
	}
	approved, pending := park(), park()
	for _, who := range []string{"alice", "bob"} {
		signed, err := approval.Sign(approved.Approval.Statement(approval.Approve, ""), signers[who])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gw.Approve(ctx, "caller", approved.RequestID, signed); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := l.ReadEntry(pending.Receipt.Index)
	if e, _ := audit.DecodeEntry(raw); e.State.Digest.IsZero() {
		t.Fatalf("the parked decision's state is inline (%d bytes): make the message longer", len(e.State.Text))
	}
	sum, err := replay.Verify(l, replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range sum.Findings {
		if f.Class == replay.ApprovalQuorumInvalid || f.Class == replay.ReplayMismatch {
			t.Errorf("finding %+v: the replay did not read the recorded approval terms", f)
		}
	}
	l.Close()

	l, err = audit.Open(logDir, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg.Log = l
	gw2, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw2.Rebuild(ctx, l); err != nil {
		t.Fatalf("restart: %v", err)
	}
	got, err := gw2.Get("a1", pending.RequestID)
	if err != nil || got.Approval == nil {
		t.Fatalf("after a restart the parked request is %+v (%v), want it pending approval", got, err)
	}
}
