package gateway_test

import (
	"context"
	"crypto/sha256"
	"slices"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

const sensitiveSrc = `policy "p" {
  default: deny
}

action "login" {
  user: string
  password: string sensitive
  note?: any
}

rule "AllowStrongPasswords" {
  precondition: action.type == "login"
  condition: size(action.password) >= 8
  allow
}
`

// blobsOnly is a BlobReader that cannot open commitments.
type blobsOnly struct{ l *audit.Log }

func (b blobsOnly) Blob(d audit.Digest) ([]byte, error) { return b.l.Blob(d) }

// TestSensitiveLoggedForm: the schema's sensitive field and the one the
// configuration adds are logged as commitments; the policy decided on the
// plaintext; the decision's action hash is the logged form's; the log's
// fold opens the values again with the salts, and says which it cannot.
func TestSensitiveLoggedForm(t *testing.T) {
	l := openLog(t)
	g, err := gateway.New(gateway.Config{Policy: compile(t, sensitiveSrc), Log: l, Sensitive: func(typ string) []string {
		if typ == "login" {
			return []string{"note", "absent"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	agent := policy.Agent{ID: "a1"}
	act := action(t, `{"type": "login", "user": "alice", "password": "hunter2-long", "note": {"pin": 1234}}`)
	res, err := g.Submit(context.Background(), &gateway.Request{Agent: agent, Action: act}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision.Decision != policy.Allow {
		t.Fatalf("decision %s %v: the policy did not see the password", res.Decision.Decision, res.Decision.Errors)
	}
	raw, err := l.ReadEntry(res.Receipt.Index)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.DecodeEntry(raw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "hunter2") || strings.Contains(string(raw), "1234") || !strings.Contains(e.Action.Text, `"user":"alice"`) {
		t.Fatalf("logged action: %s", e.Action.Text)
	}
	if got := strings.Count(e.Action.Text, audit.SensitiveKey); got != 2 {
		t.Fatalf("%d commitments in %s, want 2 (password, note)", got, e.Action.Text)
	}
	if e.ActionSHA256 != sha256.Sum256([]byte(e.Action.Text)) || res.Decision.ActionHash != "sha256:"+e.ActionSHA256.String() || res.Decision.ActionHash == act.HashString() {
		t.Fatalf("decision hash %s, entry %v, plaintext %s: want the logged form's", res.Decision.ActionHash, e.ActionSHA256, act.HashString())
	}

	d, err := ledger.Decode(e, l)
	if err != nil {
		t.Fatal(err)
	}
	if d.Action.Hash != act.Hash || len(d.Sealed) != 0 || string(d.Logged) != e.Action.Text {
		t.Fatalf("decoded with the salts: %s, sealed %v", d.Action.JSON, d.Sealed)
	}
	d, err = ledger.Decode(e, blobsOnly{l})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Sealed, []string{"note", "password"}) {
		t.Fatalf("decoded without the salts: sealed %v, want [note password]", d.Sealed)
	}

	// A restarted gateway answers with the logged form's hash too.
	g2, err := gateway.New(gateway.Config{Policy: compile(t, sensitiveSrc), Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g2.Rebuild(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	got, err := g2.Get("a1", res.RequestID)
	if err != nil || got.Decision.ActionHash != res.Decision.ActionHash {
		t.Fatalf("after a rebuild: %+v, %v; want action hash %s", got, err, res.Decision.ActionHash)
	}
}
