package lifecycle_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/policy"
)

// releasers are three reviewers' keys and the 2-of-3 trust file over them.
type releasers struct {
	signers map[string]note.Signer
	trust   *bundle.Trust
}

func newReleasers(t *testing.T) *releasers {
	t.Helper()
	r := &releasers{signers: map[string]note.Signer{}}
	var vkeys []string
	for _, name := range []string{"alice", "bob", "carol"} {
		skey, vkey, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			t.Fatal(err)
		}
		if r.signers[name], err = note.NewSigner(skey); err != nil {
			t.Fatal(err)
		}
		vkeys = append(vkeys, vkey)
	}
	trust, err := bundle.NewTrust(2, vkeys...)
	if err != nil {
		t.Fatal(err)
	}
	r.trust = trust
	return r
}

// paymentsFiles are the seed's payments policy and its tests.
func paymentsFiles(t *testing.T) []policy.Source {
	t.Helper()
	var files []policy.Source
	for _, name := range []string{"payments.rules", "payments_test.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", "payments", name))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, policy.Source{Name: name, Data: data})
	}
	return files
}

// build writes version of the payments bundle into a new directory under
// dir, signed by the named releasers, and returns its path.
func (r *releasers) build(t *testing.T, dir string, version uint64, signers ...string) string {
	t.Helper()
	files := paymentsFiles(t)
	created := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	m, err := bundle.NewManifest("payments", version, created, time.Time{}, files)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "payments-"+m.Digest()[7:19])
	if err := os.MkdirAll(filepath.Join(out, bundle.SignaturesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(out, bundle.ManifestFile), m.Marshal())
	for _, f := range files {
		write(t, filepath.Join(out, f.Name), f.Data)
	}
	b, err := bundle.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range signers {
		path, sig, err := bundle.Sign(b, r.signers[name])
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(out, path), sig)
	}
	return out
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// node is one run of a gateway on a data directory: its log, the gateway
// rebuilt from it and the Activator, as `rulelock serve` wires them.
type node struct {
	log *audit.Log
	gw  *gateway.Gateway
	act *lifecycle.Activator
}

func start(t *testing.T, data string, trust *bundle.Trust) *node {
	t.Helper()
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	gw, err := gateway.New(gateway.Config{Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rebuild(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	last, _ := gw.LastBundle()
	act := lifecycle.New(gw, lifecycle.Options{Trust: trust, Log: l, Logged: last,
		Archive: lifecycle.Archive{Dir: filepath.Join(data, "bundles")}})
	return &node{log: l, gw: gw, act: act}
}

// notes returns the messages of the log's note entries.
func (n *node) notes(t *testing.T) []string {
	t.Helper()
	var out []string
	for i := int64(0); i < n.log.Size(); i++ {
		raw, err := n.log.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == audit.KindNote {
			out = append(out, e.Message)
		}
	}
	return out
}

// TestRejectionLogged: every way a candidate is refused ends as a note
// entry with the reason, naming the policy that stays active, and the
// active policy does not change.
func TestRejectionLogged(t *testing.T) {
	dir := t.TempDir()
	r := newReleasers(t)
	n := start(t, filepath.Join(dir, "data"), r.trust)
	ctx := context.Background()
	if err := n.act.Start(ctx, r.build(t, dir, 5, "alice", "bob")); err != nil {
		t.Fatal(err)
	}
	v5 := n.gw.Active().Digest
	cases := []struct{ name, dir, want string }{
		{"unsigned", r.build(t, dir, 6), "unsigned"},
		{"one signature short", r.build(t, dir, 7, "carol"), "below_threshold"},
		{"an older version", r.build(t, dir, 4, "alice", "carol"), "not higher than the active version 5"},
		{"the active bundle again", r.build(t, dir, 5, "alice", "bob"), "not higher than the active version 5"},
		{"no such directory", filepath.Join(dir, "nothing"), "unreadable"},
	}
	for _, c := range cases {
		err := n.act.Reload(ctx, c.dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a rejection saying %s", c.name, err, c.want)
		}
		if errors.Is(err, lifecycle.ErrUnrecorded) {
			t.Errorf("%s: %v: the rejection was not recorded", c.name, err)
		}
		if got := n.gw.Active().Digest; got != v5 {
			t.Errorf("%s: active %s, want %s", c.name, got, v5)
		}
	}
	notes := n.notes(t)
	if len(notes) != len(cases) {
		t.Fatalf("%d notes, want one per rejection:\n%s", len(notes), strings.Join(notes, "\n"))
	}
	for i, c := range cases {
		if !strings.HasPrefix(notes[i], "bundle rejected: ") || !strings.Contains(notes[i], c.want) {
			t.Errorf("%s: logged %q, want \"bundle rejected: ...%s...\"", c.name, notes[i], c.want)
		}
	}
}

// TestRejectionUnrecordedSurfaces: when the log cannot take the rejection,
// the caller gets an error that says so (ErrUnrecorded, and the log's own
// error) as well as the reason: the rejection is never dropped.
func TestRejectionUnrecordedSurfaces(t *testing.T) {
	dir := t.TempDir()
	r := newReleasers(t)
	n := start(t, filepath.Join(dir, "data"), r.trust)
	unsigned := r.build(t, dir, 1)
	n.log.Close() // the log is gone: every append fails
	err := n.act.Start(context.Background(), unsigned)
	if !errors.Is(err, lifecycle.ErrUnrecorded) || !errors.Is(err, audit.ErrClosed) || !strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("got %v, want the reason (unsigned), ErrUnrecorded and the log's error", err)
	}
	if a := n.gw.Active(); !a.None {
		t.Errorf("active %s after a rejection", a.Digest)
	}
}

// TestRollbackRefusedAcrossRestart: after a restart the version floor is
// the last signed bundle the log activated, read back from the archive; a
// development-mode activation in between does not lower it (on the old
// main it did: only the very last activation counted).
func TestRollbackRefusedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	r := newReleasers(t)
	v1, v2, v3 := r.build(t, dir, 1, "alice", "bob"), r.build(t, dir, 2, "alice", "bob"), r.build(t, dir, 3, "bob", "carol")
	ctx := context.Background()

	n := start(t, data, r.trust)
	if err := n.act.Start(ctx, v2); err != nil {
		t.Fatal(err)
	}
	n.log.Close()

	// Restarted in development mode once: a policy from a directory.
	n = start(t, data, nil)
	files := paymentsFiles(t)
	p, err := policy.FromSources(files[:1], policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.act.ActivateDev(ctx, p, files[:1], "policies/payments"); err != nil {
		t.Fatal(err)
	}
	n.log.Close()

	// Restarted on the older bundle: refused, nothing active.
	n = start(t, data, r.trust)
	err = n.act.Start(ctx, v1)
	if !errors.Is(err, lifecycle.ErrRollback) || !strings.Contains(err.Error(), "not higher than the active version 2") {
		t.Fatalf("v1 after v2 and a restart: got %v, want ErrRollback", err)
	}
	if !n.gw.Active().None {
		t.Fatalf("v1 after v2: active %+v", n.gw.Active())
	}
	// The same bundle as before the restart activates again; a newer one
	// then too.
	if err := n.act.Reload(ctx, v2); err != nil {
		t.Fatalf("v2 again after the restart: %v", err)
	}
	if err := n.act.Reload(ctx, v3); err != nil {
		t.Fatalf("v3: %v", err)
	}
	if a := n.gw.Active(); a.Version != 3 || strings.Join(a.Signers, ",") != "bob,carol" {
		t.Fatalf("active %+v, want version 3 by bob and carol", a)
	}
	n.log.Close()

	// v2 after v3 and another restart.
	n = start(t, data, r.trust)
	if err := n.act.Start(ctx, v2); !errors.Is(err, lifecycle.ErrRollback) {
		t.Fatalf("v2 after v3 and a restart: got %v, want ErrRollback", err)
	}
}

// TestRollbackFloorArchiveAltered: the floor's version comes from the
// archive; an archive that no longer matches the logged digest refuses
// every bundle, even a newer one.
func TestRollbackFloorArchiveAltered(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	r := newReleasers(t)
	ctx := context.Background()
	n := start(t, data, r.trust)
	if err := n.act.Start(ctx, r.build(t, dir, 2, "alice", "bob")); err != nil {
		t.Fatal(err)
	}
	v2 := n.gw.Active().Digest
	n.log.Close()
	flipByte(t, filepath.Join(data, "bundles", strings.TrimPrefix(v2, "sha256:"), bundle.ManifestFile))

	n = start(t, data, r.trust)
	err := n.act.Start(ctx, r.build(t, dir, 9, "alice", "bob"))
	if err == nil || !strings.Contains(err.Error(), "missing or altered") {
		t.Fatalf("a newer bundle over an altered archive: got %v, want a refusal", err)
	}
}

// flipByte changes the last byte before the final newline of path.
func flipByte(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-2] ^= 0x01
	os.Chmod(path, 0o644) // archived files are read-only
	write(t, path, data)
}

// TestArchive: a stored bundle reads back as the policy its digest names,
// with its signatures; every alteration is ErrAltered, an absence
// ErrNotArchived, and nothing outside the archive is read for a digest.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	r := newReleasers(t)
	b, err := bundle.ReadDir(r.build(t, dir, 3, "alice", "carol"))
	if err != nil {
		t.Fatal(err)
	}
	ar := lifecycle.Archive{Dir: filepath.Join(dir, "data", "bundles")}
	// What a crash before the rename leaves: a partial temporary directory.
	crashed := filepath.Join(ar.Dir, ".tmp-"+strings.TrimPrefix(b.Digest(), "sha256:")+"-123")
	if err := os.MkdirAll(crashed, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(crashed, bundle.ManifestFile), b.Text[:10])
	if _, err := ar.Load(b.Digest()); !errors.Is(err, lifecycle.ErrNotArchived) {
		t.Fatalf("Load after a crash before the rename: %v, want ErrNotArchived", err)
	}
	if err := ar.Store(b); err != nil {
		t.Fatal(err)
	}
	if err := ar.Store(b); err != nil { // again: the same bundle is already there
		t.Fatalf("store twice: %v", err)
	}
	got, err := ar.Load(b.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 3 || got.Dev || got.Digest != b.Digest() {
		t.Fatalf("loaded %+v", got)
	}
	entry := filepath.Join(ar.Dir, strings.TrimPrefix(b.Digest(), "sha256:"))
	if v, err := bundle.VerifyDir(entry, r.trust, time.Now()); err != nil || strings.Join(v.Signers, ",") != "alice,carol" {
		t.Fatalf("the archive entry as a bundle: %v, %v; want its signatures kept", v, err)
	}
	left, _ := filepath.Glob(filepath.Join(ar.Dir, ".tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}
	if d, err := ar.Digests(); err != nil || len(d) != 1 || d[0] != b.Digest() {
		t.Errorf("Digests: %v, %v", d, err)
	}

	alter := func(name string, f func(entry string)) {
		t.Helper()
		copyDir := filepath.Join(dir, "copy-"+strings.ReplaceAll(name, " ", "-"))
		if err := os.CopyFS(copyDir, os.DirFS(ar.Dir)); err != nil {
			t.Fatal(err)
		}
		c := lifecycle.Archive{Dir: copyDir}
		f(filepath.Join(copyDir, strings.TrimPrefix(b.Digest(), "sha256:")))
		if _, err := c.Load(b.Digest()); !errors.Is(err, lifecycle.ErrAltered) {
			t.Errorf("%s: Load: %v, want ErrAltered", name, err)
		}
		if err := c.Store(b); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s: Store over it: %v, want a refusal", name, err)
		}
	}
	alter("a byte of the rules", func(e string) { flipByte(t, filepath.Join(e, "payments.rules")) })
	alter("a byte of the manifest", func(e string) { flipByte(t, filepath.Join(e, bundle.ManifestFile)) })
	alter("a file added", func(e string) {
		write(t, filepath.Join(e, "more.rules"), []byte("rule \"AllowAll\" {\n  allow\n}\n"))
	})
	alter("a file removed", func(e string) { os.Remove(filepath.Join(e, "payments_test.yaml")) })
	alter("the manifest removed", func(e string) { os.Remove(filepath.Join(e, bundle.ManifestFile)) })

	for _, d := range []string{"sha256:" + strings.Repeat("0", 64), "sha256:../../etc", "", "sha256:" + strings.Repeat("A", 64)} {
		if _, err := ar.Load(d); !errors.Is(err, lifecycle.ErrNotArchived) {
			t.Errorf("Load(%q): %v, want ErrNotArchived", d, err)
		}
	}
}

// TestArchiveDev: a development policy is kept under its own digest, and
// sources that are not the compiled policy's are refused.
func TestArchiveDev(t *testing.T) {
	ar := lifecycle.Archive{Dir: filepath.Join(t.TempDir(), "bundles")}
	srcs := []policy.Source{{Name: "/etc/policies/p.rules", Data: []byte("policy \"p\" {\n  default: deny\n}\n")}}
	p, err := policy.FromSources(srcs, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ar.StoreDev(p, srcs); err != nil {
		t.Fatal(err)
	}
	got, err := ar.Load(p.Digest())
	if err != nil || !got.Dev || got.Policy.Digest() != p.Digest() {
		t.Fatalf("Load: %+v, %v", got, err)
	}
	other := []policy.Source{{Name: "p.rules", Data: []byte("policy \"p\" {\n  default: allow\n}\n")}}
	q, err := policy.FromSources(other, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ar.StoreDev(q, srcs); err == nil {
		t.Errorf("StoreDev with another policy's sources: no error")
	}
}

// TestAccept: what Accept refuses, with its reason, before anything is
// archived or logged.
func TestAccept(t *testing.T) {
	dir := t.TempDir()
	r := newReleasers(t)
	now := time.Now()
	good := r.build(t, dir, 1, "alice", "bob")
	a, b, err := lifecycle.Accept(good, r.trust, now)
	if err != nil || a.Version != 1 || a.Digest != b.Digest() || a.Dev {
		t.Fatalf("Accept: %+v, %v", a, err)
	}
	if _, _, err := lifecycle.Accept(good, nil, now); err == nil {
		t.Error("accepted without a trust file")
	}

	noTests := filepath.Join(dir, "no-tests")
	files := paymentsFiles(t)[:1]
	m, err := bundle.NewManifest("payments", 2, now.Add(-time.Hour).Truncate(time.Second), time.Time{}, files)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(noTests, bundle.SignaturesDir), 0o755)
	write(t, filepath.Join(noTests, bundle.ManifestFile), m.Marshal())
	write(t, filepath.Join(noTests, files[0].Name), files[0].Data)
	nb, err := bundle.ReadDir(noTests)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alice", "carol"} {
		path, sig, _ := bundle.Sign(nb, r.signers[name])
		write(t, filepath.Join(noTests, path), sig)
	}
	if _, _, err := lifecycle.Accept(noTests, r.trust, now); err == nil || !strings.Contains(err.Error(), "no policy tests") {
		t.Errorf("a bundle without tests: %v", err)
	}
}
