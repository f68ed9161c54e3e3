package replay_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

// TestVerifyRevokedAtReload: a parked request that a reload denied at once
// (gateway.RecheckParked: its agent removed, no vote yet) replays clean,
// its denial naming the reload's note. The same log is reported when the
// denial is forged: naming a config no reload note records, after the note
// is taken out, claimed for a request that had already been rejected, or
// claimed without a reload for a request that no approval completed.
func TestVerifyRevokedAtReload(t *testing.T) {
	data := t.TempDir()
	p := archived(t, data, tradePolicy)
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	signers, reg := approvers(t)
	now := func() time.Time { return time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC) }
	removed := map[string]bool{}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: reg, Now: now,
		Principals: func(id string) (policy.Agent, bool) {
			return policy.Agent{ID: id, Roles: []string{"trading"}}, !removed[id]
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "v1"}); err != nil {
		t.Fatal(err)
	}
	park := func(agent string) *gateway.Result {
		t.Helper()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: agent, Roles: []string{"trading"}}, Action: mustAction(t, `{"type": "trade", "amount": 5000}`)}, false)
		if err != nil || res.Approval == nil {
			t.Fatalf("park: %+v %v", res, err)
		}
		return res
	}
	revoked, kept, rejected := park("a2"), park("a1"), park("a3")
	stmt := rejected.Approval.Statement(approval.Reject, "no")
	signed, err := approval.Sign(stmt, signers["alice"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Reject(ctx, "alice", rejected.RequestID, signed); err != nil {
		t.Fatal(err)
	}
	const digest = "sha256:5c1f0000000000000000000000000000000000000000000000000000000000aa"
	if _, err := l.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: now(), Message: ledger.NoteReload + " " + digest + ": agents added [] removed [a2] changed []"}); err != nil {
		t.Fatal(err)
	}
	removed["a2"] = true
	got, err := gw.RecheckParked(ctx, digest)
	if err != nil || len(got) != 1 || got[0].RequestID != revoked.RequestID || got[0].Reason != ledger.PrincipalRevoked {
		t.Fatalf("RecheckParked: %+v %v, want %s denied principal_revoked", got, err, revoked.RequestID)
	}
	if res, err := gw.Get("a2", revoked.RequestID); err != nil || res.Decision.Decision != policy.Deny || res.Decision.Reason != "principal_revoked" {
		t.Fatalf("the revoked request: %+v %v", res, err)
	}
	if res, _ := gw.Get("a1", kept.RequestID); res.Decision.Decision != policy.RequireApproval {
		t.Fatalf("a1's request: %+v, want still parked", res.Decision)
	}
	opts := replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, AllowDevelopment: true}
	sum, err := replay.Verify(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Findings) != 0 {
		t.Fatalf("honest log: findings %+v", sum.Findings)
	}

	isDenial := func(e *audit.Entry) bool {
		return e.Kind == audit.KindDecision && e.RequestID == revoked.RequestID && e.Decision == "deny"
	}
	for _, tt := range []struct {
		name  string
		forge func(e *audit.Entry) *audit.Entry // nil: drop the entry
		want  string
	}{
		{"another config", func(e *audit.Entry) *audit.Entry {
			if isDenial(e) {
				e.State.Text = strings.Replace(e.State.Text, digest, "sha256:"+strings.Repeat("ab", 32), 1)
			}
			return e
		}, "no reload note of that config"},
		{"no reload note", func(e *audit.Entry) *audit.Entry {
			if e.Kind == audit.KindNote && strings.HasPrefix(e.Message, "reload ") {
				return nil
			}
			return e
		}, "no reload note of that config"},
		{"already rejected", func(e *audit.Entry) *audit.Entry {
			if isDenial(e) {
				e.RequestID, e.Agent = rejected.RequestID, "a3"
			}
			return e
		}, "had already ended"},
		{"no reload named", func(e *audit.Entry) *audit.Entry {
			if isDenial(e) {
				e.State.Text = strings.Replace(e.State.Text, `,"reload":"`+digest+`"`, "", 1)
			}
			return e
		}, "no approval completed and no reload ended"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fl, err := audit.Open(filepath.Join(t.TempDir(), "log"), audit.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			err = gateway.EachEntry(l, func(i int64, raw []byte, e *audit.Entry) error {
				if e = tt.forge(e); e == nil {
					return nil
				}
				_, err := fl.Append(ctx, e)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			sum, err := replay.Verify(fl, opts)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range sum.Findings {
				found = found || f.Class == replay.ReplayMismatch && strings.Contains(f.Detail, tt.want)
			}
			if !found {
				t.Errorf("findings %+v, want a replay_mismatch saying %q", sum.Findings, tt.want)
			}
		})
	}
}
