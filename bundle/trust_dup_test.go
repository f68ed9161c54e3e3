package bundle_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/bundle"
)

// oneKeyTwoNames returns two keys named a and b with one private key.
func oneKeyTwoNames(t *testing.T, a, b string) (key, key) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	named := func(name string) key {
		vkey, err := note.NewEd25519VerifierKey(name, pub)
		if err != nil {
			t.Fatal(err)
		}
		hash := strings.SplitN(vkey, "+", 3)[1]
		skey := fmt.Sprintf("PRIVATE+KEY+%s+%s+%s", name, hash, base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...)))
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		return key{s, vkey}
	}
	return named(a), named(b)
}

// TestTrustOneKeyTwoNames: a trust file that lists one public key under
// two names is refused, with the line of the second; otherwise one private
// key, signing under both names, would meet a 2-of-2 threshold.
func TestTrustOneKeyTwoNames(t *testing.T) {
	alice, bob := oneKeyTwoNames(t, "alice", "bob")
	text := "rulelock trust v1\nthreshold 2\nkey " + alice.vkey + "\nkey " + bob.vkey + "\n"
	_, err := bundle.ParseTrust([]byte(text))
	if !errors.Is(err, bundle.ErrBadTrust) || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("ParseTrust: got %v, want bad_trust naming lines 4 and 3", err)
	}
	if _, err := bundle.NewTrust(2, alice.vkey, bob.vkey); !errors.Is(err, bundle.ErrBadTrust) {
		t.Fatalf("NewTrust: got %v, want bad_trust", err)
	}

	// And the bundle a single key signed under both names stays below a
	// 2-of-2 threshold of two real keys.
	carol := newKey(t, "carol")
	tr, err := bundle.NewTrust(2, alice.vkey, carol.vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeBundle(t, 1, created.Add(24*time.Hour), testFiles())
	sign(t, dir, alice)
	sign(t, dir, bob)
	if _, err := bundle.VerifyDir(dir, tr, now); !errors.Is(err, bundle.ErrBelowThreshold) {
		t.Fatalf("VerifyDir: got %v, want below_threshold", err)
	}
}
