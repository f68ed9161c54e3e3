package bundle_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/policy"
)

var (
	created = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	now     = created.Add(time.Hour)
)

const testRules = `policy "p" {
  default: allow
}

rule "Limit" {
  precondition: action.type == "transfer"
  condition: action.amount <= 100
  deny: "too much"
}
`

const testCases = `now: "2026-11-22T10:00:00Z"
cases:
  - name: small
    action: {type: transfer, amount: 5}
    expect: {decision: allow}
`

func testFiles() []policy.Source {
	return []policy.Source{
		{Name: "p.rules", Data: []byte(testRules)},
		{Name: "limits.json", Data: []byte(`{"max": 100}`)},
		{Name: "p_test.yaml", Data: []byte(testCases)},
	}
}

// key is a signing key and its verifier key.
type key struct {
	signer note.Signer
	vkey   string
}

func newKey(t testing.TB, name string) key {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return key{s, vkey}
}

// writeBundle writes a bundle of files to a new directory.
func writeBundle(t testing.TB, version uint64, expires time.Time, files []policy.Source) string {
	t.Helper()
	m, err := bundle.NewManifest("p", version, created, expires, files)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range files {
		write(t, filepath.Join(dir, f.Name), f.Data)
	}
	write(t, filepath.Join(dir, bundle.ManifestFile), m.Marshal())
	return dir
}

// sign adds k's signature to the bundle in dir.
func sign(t testing.TB, dir string, k key) {
	t.Helper()
	b, err := bundle.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	path, data, err := bundle.Sign(b, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, path), data)
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sigPath(dir string, k key) string {
	return filepath.Join(dir, bundle.SignaturePath(k.signer.Name(), k.signer.KeyHash()))
}

func TestVerify(t *testing.T) {
	alice, bob, carol, mallory := newKey(t, "alice"), newKey(t, "bob"), newKey(t, "carol"), newKey(t, "mallory")
	trust, err := bundle.NewTrust(2, carol.vkey, alice.vkey, bob.vkey)
	if err != nil {
		t.Fatal(err)
	}
	signed := func(keys ...key) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			for _, k := range keys {
				sign(t, dir, k)
			}
		}
	}
	then := func(fs ...func(t *testing.T, dir string)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			for _, f := range fs {
				f(t, dir)
			}
		}
	}
	writeFile := func(name, data string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { write(t, filepath.Join(dir, name), []byte(data)) }
	}
	remove := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	symlink := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			outside := filepath.Join(t.TempDir(), "target")
			data, _ := os.ReadFile(filepath.Join(dir, name))
			write(t, outside, data)
			os.RemoveAll(filepath.Join(dir, name))
			if err := os.Symlink(outside, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	editSig := func(k key, edit func([]byte) []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			data, err := os.ReadFile(sigPath(dir, k))
			if err != nil {
				t.Fatal(err)
			}
			write(t, sigPath(dir, k), edit(data))
		}
	}

	tests := []struct {
		name    string
		expires time.Time
		setup   func(t *testing.T, dir string)
		want    bundle.Code // "" for success
		signers []string
		unknown []string
	}{
		{name: "2 of 3", setup: signed(alice, bob), signers: []string{"alice", "bob"}},
		{name: "3 of 3", setup: signed(carol, alice, bob), signers: []string{"alice", "bob", "carol"}},
		{name: "quorum and an unknown key", setup: signed(alice, mallory, carol), signers: []string{"alice", "carol"},
			unknown: []string{"mallory+" + hash8(mallory)}},
		{name: "not expired yet", expires: now.Add(time.Second), setup: signed(alice, bob), signers: []string{"alice", "bob"}},

		{name: "unsigned", setup: func(*testing.T, string) {}, want: bundle.ErrUnsigned},
		{name: "empty signature directory", setup: func(t *testing.T, dir string) { os.Mkdir(filepath.Join(dir, "SIGNATURES"), 0o755) }, want: bundle.ErrUnsigned},
		{name: "one signature short", setup: signed(alice), want: bundle.ErrBelowThreshold},
		{name: "the same key twice", setup: then(signed(alice), func(t *testing.T, dir string) {
			data, _ := os.ReadFile(sigPath(dir, alice))
			write(t, sigPath(dir, bob), data)
		}), want: bundle.ErrBelowThreshold},
		{name: "an unknown key alone", setup: signed(mallory), want: bundle.ErrUnknownKey},
		{name: "an unknown key does not count", setup: signed(alice, mallory), want: bundle.ErrBelowThreshold},
		{name: "a trusted name with another key", setup: signed(alice, newKey(t, "bob")), want: bundle.ErrBelowThreshold},
		{name: "a stripped signature file", setup: then(signed(alice, bob), func(t *testing.T, dir string) { os.Remove(sigPath(dir, bob)) }),
			want: bundle.ErrBelowThreshold},
		{name: "a signature file stripped of its signature", setup: then(signed(alice, bob), editSig(bob, func(b []byte) []byte {
			return b[:bytes.LastIndex(b, []byte("\n\n"))+1]
		})), want: bundle.ErrBadSignature},
		{name: "a corrupted signature", setup: then(signed(alice, bob), editSig(bob, func(b []byte) []byte {
			i := bytes.LastIndexByte(b[:len(b)-1], ' ') + 10
			b[i] ^= 'A' ^ 'B'
			return b
		})), want: bundle.ErrBadSignature},
		{name: "the same signature twice in one file", setup: then(signed(alice, bob), editSig(bob, func(b []byte) []byte {
			return append(b, b[bytes.LastIndex(b, []byte("\n\n"))+2:]...)
		})), want: bundle.ErrBadSignature},
		{name: "two keys in one file", setup: then(signed(alice, bob), func(t *testing.T, dir string) {
			a, _ := os.ReadFile(sigPath(dir, alice))
			b, _ := os.ReadFile(sigPath(dir, bob))
			os.Remove(sigPath(dir, alice))
			write(t, sigPath(dir, bob), append(b, a[bytes.LastIndex(a, []byte("\n\n"))+2:]...))
		}), want: bundle.ErrBadSignature},
		{name: "a signature over another manifest", setup: then(signed(alice), func(t *testing.T, dir string) {
			other := writeBundle(t, 2, time.Time{}, testFiles())
			sign(t, other, bob)
			data, _ := os.ReadFile(sigPath(other, bob))
			write(t, sigPath(dir, bob), data)
		}), want: bundle.ErrBadSignature},
		{name: "a manifest changed after signing", setup: then(signed(alice, bob), func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(dir, "MANIFEST"))
			write(t, filepath.Join(dir, "MANIFEST"), bytes.Replace(data, []byte("version 1\n"), []byte("version 9\n"), 1))
		}), want: bundle.ErrBadSignature},
		{name: "a file added after signing", setup: then(signed(alice, bob), writeFile("extra.rules", testRules)), want: bundle.ErrUnlistedFile},
		{name: "a subdirectory", setup: then(signed(alice, bob), writeFile("sub/p.rules", testRules)), want: bundle.ErrUnlistedFile},
		{name: "a stray file among the signatures", setup: then(signed(alice, bob), writeFile("SIGNATURES/notes.txt", "hi")), want: bundle.ErrUnlistedFile},
		{name: "a modified file", setup: then(signed(alice, bob), writeFile("p.rules", testRules+"\n")), want: bundle.ErrHashMismatch},
		{name: "a modified file of the same size", setup: then(signed(alice, bob), writeFile("limits.json", `{"max": 999}`)), want: bundle.ErrHashMismatch},
		{name: "a missing file", setup: then(signed(alice, bob), remove("limits.json")), want: bundle.ErrMissingFile},
		{name: "no manifest", setup: then(signed(alice, bob), remove("MANIFEST")), want: bundle.ErrBadManifest},
		{name: "a case twin", setup: then(signed(alice, bob), writeFile("P.rules", testRules)), want: bundle.ErrBadPath},
		{name: "a Unicode name (NFC)", setup: then(signed(alice, bob), writeFile("caf\u00e9.rules", testRules)), want: bundle.ErrBadPath},
		{name: "a Unicode name (NFD)", setup: then(signed(alice, bob), writeFile("cafe\u0301.rules", testRules)), want: bundle.ErrBadPath},
		{name: "a hidden file", setup: then(signed(alice, bob), writeFile(".p.rules", testRules)), want: bundle.ErrBadPath},
		{name: "a symlinked file", setup: then(signed(alice, bob), symlink("p.rules")), want: bundle.ErrNotRegular},
		{name: "a symlinked manifest", setup: then(signed(alice, bob), symlink("MANIFEST")), want: bundle.ErrNotRegular},
		{name: "a symlinked signature", setup: then(signed(alice, bob), symlink(bundle.SignaturePath("bob", bob.signer.KeyHash()))), want: bundle.ErrNotRegular},
		{name: "a symlinked signature directory", setup: then(signed(alice, bob), func(t *testing.T, dir string) {
			other := t.TempDir()
			os.Rename(filepath.Join(dir, "SIGNATURES"), filepath.Join(other, "SIGNATURES"))
			os.Symlink(filepath.Join(other, "SIGNATURES"), filepath.Join(dir, "SIGNATURES"))
		}), want: bundle.ErrNotRegular},
		{name: "an oversized file", setup: then(signed(alice, bob), writeFile("p.rules", strings.Repeat("x", bundle.MaxFileSize+1))), want: bundle.ErrTooLarge},
		{name: "expired", expires: now, setup: signed(alice, bob), want: bundle.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeBundle(t, 1, tt.expires, testFiles())
			tt.setup(t, dir)
			v, err := bundle.VerifyDir(dir, trust, now)
			if tt.want != "" {
				var be *bundle.Error
				if !errors.As(err, &be) || be.Code != tt.want || !errors.Is(err, tt.want) {
					t.Fatalf("VerifyDir: got %v, want code %s", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("VerifyDir: %v", err)
			}
			if diff := cmp.Diff(tt.signers, v.Signers); diff != "" {
				t.Errorf("signers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.unknown, v.Unknown); diff != "" {
				t.Errorf("unknown (-want +got):\n%s", diff)
			}
		})
	}
}

func hash8(k key) string {
	return strings.SplitN(k.vkey, "+", 3)[1]
}

// TestVerifiedPolicy checks that a verified bundle hands the gateway what it
// compiles and tests: the policy sources and the test files, apart.
func TestVerifiedPolicy(t *testing.T) {
	alice := newKey(t, "alice")
	trust, err := bundle.NewTrust(1, alice.vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeBundle(t, 7, time.Time{}, testFiles())
	sign(t, dir, alice)
	v, err := bundle.Verify(os.DirFS(dir), trust, now)
	if err != nil {
		t.Fatal(err)
	}
	names := func(srcs []policy.Source) (list []string) {
		for _, s := range srcs {
			list = append(list, s.Name)
		}
		return list
	}
	if diff := cmp.Diff([]string{"limits.json", "p.rules"}, names(v.Sources)); diff != "" {
		t.Errorf("sources (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"p_test.yaml"}, names(v.Tests)); diff != "" {
		t.Errorf("tests (-want +got):\n%s", diff)
	}
	if _, err := policy.FromSources(v.Sources, policy.Options{}); err != nil {
		t.Errorf("FromSources: %v", err)
	}
	m, _ := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	if got, want := v.Digest, v.Manifest.Digest(); got != want {
		t.Errorf("digest: got %s, want %s", got, want)
	}
	if v.Manifest.Version != 7 || !bytes.HasPrefix(m, []byte("rulelock bundle v1\nname p\nversion 7\n")) {
		t.Errorf("manifest: got version %d, text %q", v.Manifest.Version, m)
	}
}
