package replay_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/passkey/passkeytest"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

// TestVerifyPasskeyApprovals: a log whose quorum was met by two passkey
// approvals (approvers without Ed25519 keys) verifies, counting both, with
// the passkeys learned from the log's enrolment entries; a copy of the
// log rewritten by an insider (a valid hash chain) with one byte of an
// assertion changed, or without the enrolments, or checked against a
// config that pins other passkeys, does not.
func TestVerifyPasskeyApprovals(t *testing.T) {
	data := t.TempDir()
	p := archived(t, data, tradePolicy)
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const origin = "https://console.example.com"
	alice, bob := passkeytest.New("alice", origin), passkeytest.New("bob", origin)
	registry := func(pins ...string) *approval.Registry {
		reg, err := approval.NewRegistry([]approval.Approver{
			{ID: "alice", Groups: []string{"treasury"}, Passkeys: pins},
			{ID: "bob", Groups: []string{"treasury"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}
	reg := registry()
	now := func() time.Time { return time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC) }
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: reg, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "v1"}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*passkeytest.Authenticator{alice, bob} {
		if err := gw.EnrolPasskey(ctx, a.Credential); err != nil {
			t.Fatal(err)
		}
	}
	res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "a1", Roles: []string{"trading"}}, Action: mustAction(t, `{"type": "trade", "amount": 5000}`)}, false)
	if err != nil || res.Approval == nil {
		t.Fatalf("park: %+v %v", res, err)
	}
	var out *gateway.ApprovalResult
	for _, a := range []*passkeytest.Authenticator{alice, bob} {
		st := res.Approval.Statement(approval.Approve, "")
		signed := approval.PasskeyApproval{Approver: a.Credential.Approver, Statement: st, Assertion: a.Assert(st.Marshal())}.Marshal()
		if out, err = gw.Approve(ctx, a.Credential.Approver, res.RequestID, signed); err != nil {
			t.Fatalf("%s's passkey approval: %v", a.Credential.Approver, err)
		}
	}
	if out.Result == nil || out.Result.Decision.Decision != "approved" {
		t.Fatalf("after both approvals: %+v, want approved", out)
	}
	opts := replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: registry(), AllowDevelopment: true}
	sum, err := replay.Verify(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Findings) != 0 || sum.Passkeys != 2 || sum.PasskeyApprovals != 2 {
		t.Fatalf("honest log: %d passkeys, %d passkey approvals, findings %+v; want 2, 2, none", sum.Passkeys, sum.PasskeyApprovals, sum.Findings)
	}

	// rewrite copies the log through edit (nil drops the entry), as an
	// insider holding the log would: the copy's hash chain is valid.
	rewrite := func(edit func(e *audit.Entry) *audit.Entry) *audit.Log {
		fl, err := audit.Open(filepath.Join(t.TempDir(), "log"), audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fl.Close() })
		err = gateway.EachEntry(l, func(i int64, raw []byte, e *audit.Entry) error {
			if e = edit(e); e == nil {
				return nil
			}
			_, err := fl.Append(ctx, e)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return fl
	}
	findings := func(lr *audit.Log, opts replay.Options) []replay.Finding {
		t.Helper()
		sum, err := replay.Verify(lr, opts)
		if err != nil {
			t.Fatal(err)
		}
		return sum.Findings
	}
	has := func(fs []replay.Finding, class string) bool {
		for _, f := range fs {
			if f.Class == class {
				return true
			}
		}
		return false
	}
	tampered := rewrite(func(e *audit.Entry) *audit.Entry {
		if e.Kind == audit.KindApproval && e.Approver == "bob" && bytes.Contains(e.Signature, []byte("\nwebauthn ")) {
			e.Signature = bytes.Clone(e.Signature)
			e.Signature[len(e.Signature)-10] ^= 'A' ^ 'B' // in the signature line's base64url
		}
		return e
	})
	if fs := findings(tampered, opts); !has(fs, replay.ApprovalQuorumInvalid) {
		t.Errorf("one byte of bob's assertion changed: findings %+v, want %s", fs, replay.ApprovalQuorumInvalid)
	}
	unenrolled := rewrite(func(e *audit.Entry) *audit.Entry {
		if e.Kind == audit.KindNote && bytes.HasPrefix([]byte(e.Message), []byte("passkey_enrolled bob ")) {
			return nil
		}
		return e
	})
	if fs := findings(unenrolled, opts); !has(fs, replay.ApprovalQuorumInvalid) {
		t.Errorf("bob's enrolment removed: findings %+v, want %s", fs, replay.ApprovalQuorumInvalid)
	}
	pinned := opts
	pinned.Approvers = registry(passkeytest.New("alice", origin).Credential.Fingerprint()) // a config that pins another passkey for alice
	if fs := findings(l, pinned); !has(fs, replay.PasskeyInvalid) || !has(fs, replay.ApprovalQuorumInvalid) {
		t.Errorf("alice's passkey not pinned by the config: findings %+v, want %s and %s", fs, replay.PasskeyInvalid, replay.ApprovalQuorumInvalid)
	}
}
