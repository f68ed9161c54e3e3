package replay_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

// TestVerifyBundleRollback: a log in which a signed bundle was activated
// after one with a higher version (what an insider who bypassed the
// gateway's anti-rollback would leave) is a bundle_rollback finding at that
// activation; the same bundle again (a restart) and a newer one are not.
func TestVerifyBundleRollback(t *testing.T) {
	data := t.TempDir()
	ar := lifecycle.Archive{Dir: filepath.Join(data, "bundles")}
	var files []policy.Source
	for _, name := range []string{"payments.rules", "payments_test.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "payments", name))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, policy.Source{Name: name, Data: b})
	}
	archivedBundle := func(version uint64) *gateway.Active {
		t.Helper()
		m, err := bundle.NewManifest("payments", version, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Time{}, files)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "b")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, bundle.ManifestFile), m.Marshal(), 0o644)
		for _, f := range files {
			os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o644)
		}
		b, err := bundle.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := ar.Store(b); err != nil {
			t.Fatal(err)
		}
		got, err := ar.Load(b.Digest())
		if err != nil {
			t.Fatal(err)
		}
		return &gateway.Active{Policy: got.Policy, Digest: got.Digest, Version: version, Signers: []string{"alice", "bob"}, Source: "test"}
	}
	v1, v2, v3 := archivedBundle(1), archivedBundle(2), archivedBundle(3)

	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Log: l})
	if err != nil {
		t.Fatal(err)
	}
	// gateway.Activate judges nothing: the lifecycle would refuse v1 here.
	for _, a := range []*gateway.Active{v2, v2, v1, v3, v2} {
		if err := gw.Activate(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := replay.Verify(l, replay.Options{Bundles: ar.Dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []replay.Finding{{Index: 2, Class: replay.BundleRollback}, {Index: 4, Class: replay.BundleRollback}}
	if diff := cmp.Diff(want, sum.Findings, cmpopts.IgnoreFields(replay.Finding{}, "Detail")); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
}
