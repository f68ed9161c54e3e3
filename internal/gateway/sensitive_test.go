package gateway_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

// TestRebuildWithShreddedSalts: a gateway does not start on a log whose
// decisions inside the retention window have sensitive values it cannot
// open (a per-value limit would restart from zero); outside it, it does.
func TestRebuildWithShreddedSalts(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	cfg := gateway.Config{Policy: compile(t, sensitiveSrc), Log: l, Retention: time.Hour, Now: func() time.Time { return start }}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	act := action(t, `{"type": "login", "user": "alice", "password": "hunter2-long"}`)
	if _, err := g.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: "a1"}, Action: act}, false); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.Remove(filepath.Join(dir, "salts.jsonl")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		now     time.Time
		refused bool
	}{
		{start.Add(time.Minute), true},
		{start.Add(2 * time.Hour), false},
	} {
		l, err := audit.Open(dir, audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Log, cfg.Now = l, func() time.Time { return tt.now }
		g, err := gateway.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Rebuild(context.Background(), l)
		if refused := err != nil && strings.Contains(err.Error(), "salts"); refused != tt.refused {
			t.Errorf("rebuild at %v: %v; want refused %v", tt.now.Sub(start), err, tt.refused)
		}
		l.Close()
	}
}

// TestForgedCommitmentIsData: an agent that sends a value shaped like a
// commitment, well-formed or not, in a member that is not sensitive gets
// it treated as data: the log's fold does not try to open it, so it can
// neither make a restart fail nor pass for a sealed value.
func TestForgedCommitmentIsData(t *testing.T) {
	l := openLog(t)
	p := compile(t, sensitiveSrc)
	g, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	real, _, err := audit.Commit(rand.Reader, []byte(`"x"`))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(real.Value())
	for _, note := range []string{string(forged), `{"$commitment": "not one"}`} {
		act := action(t, `{"type": "login", "user": "alice", "password": "hunter2-long", "note": `+note+`}`)
		if _, err := g.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: "a1"}, Action: act}, false); err != nil {
			t.Fatal(err)
		}
	}
	g2, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g2.Rebuild(context.Background(), l); err != nil {
		t.Fatalf("rebuild of a log with forged commitments: %v", err)
	}
	for i := range l.Size() {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		if e.Kind != audit.KindDecision {
			continue
		}
		d, err := ledger.Decode(e, l)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.State.Sealed, []string{"password"}) || len(d.Sealed) != 0 || d.Action.Fields["note"] == nil {
			t.Fatalf("entry %d: sealed %v, unopened %v, note %v", i, d.State.Sealed, d.Sealed, d.Action.Fields["note"])
		}
	}
}
