package approval

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/passkey"
	"github.com/rulelock/rulelock/internal/passkey/passkeytest"
)

const testOrigin = "https://console.example.com"

// passkeyApproval signs r's statement with verdict v using a's passkey.
func passkeyApproval(a *passkeytest.Authenticator, r Request, v Verdict, reason string) []byte {
	st := r.Statement(v, reason)
	return PasskeyApproval{Approver: a.Credential.Approver, Statement: st, Assertion: a.Assert(st.Marshal())}.Marshal()
}

// TestPasskeyQuorum: two passkey approvals from treasury meet the
// two-person rule through the same Manager rules as Ed25519 ones, and mix
// with them.
func TestPasskeyQuorum(t *testing.T) {
	reg := testRegistry(t)
	alice := passkeytest.New("alice", testOrigin)
	if err := reg.AddPasskey(alice.Credential); err != nil {
		t.Fatal(err)
	}
	m := New(reg, Options{Now: func() time.Time { return t0 }})
	r := mustPark(t, m, newRequest("req-1"))
	res, err := m.Approve("req-1", passkeyApproval(alice, r, Approve, ""))
	if err != nil || res.Ready {
		t.Fatalf("alice's passkey approval: %v, ready %v; want accepted, not ready", err, res.Ready)
	}
	if _, err := m.Approve("req-1", passkeyApproval(alice, r, Approve, "")); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("alice again with a fresh assertion: got %v, want ErrDuplicate", err)
	}
	res, err = m.Approve("req-1", approve(t, "bob", r))
	if err != nil || !res.Ready {
		t.Fatalf("bob's Ed25519 approval: %v, ready %v; want ready", err, res.Ready)
	}
}

func TestPasskeyRefusals(t *testing.T) {
	reg := testRegistry(t)
	alice := passkeytest.New("alice", testOrigin)
	dave := passkeytest.New("dave", testOrigin) // risk, not treasury
	stranger := passkeytest.New("bob", testOrigin)
	for _, a := range []*passkeytest.Authenticator{alice, dave} {
		if err := reg.AddPasskey(a.Credential); err != nil {
			t.Fatal(err)
		}
	}
	m := New(reg, Options{Now: func() time.Time { return t0 }})
	r := mustPark(t, m, newRequest("req-1"))
	other := mustPark(t, m, newRequest("req-2"))

	tampered := passkeyApproval(alice, r, Approve, "")
	tampered[len(tampered)-3] ^= 1 // in the signature's base64url
	if bytes.Equal(tampered, passkeyApproval(alice, r, Approve, "")) {
		t.Fatal("tampering changed nothing")
	}
	cases := []struct {
		name   string
		id     string
		signed []byte
		want   error
	}{
		{"a tampered signature", "req-1", tampered, nil}, // bad_signature or bad_statement (non-canonical base64)
		{"an approval of another request", "req-1", passkeyApproval(alice, other, Approve, ""), ErrRequestMismatch},
		{"a rejection submitted as an approval", "req-1", passkeyApproval(alice, r, Reject, "no"), ErrVerdictMismatch},
		{"an approver of the wrong group", "req-1", passkeyApproval(dave, r, Approve, ""), ErrNotInGroup},
		{"a passkey nobody enrolled", "req-1", passkeyApproval(stranger, r, Approve, ""), ErrUnknownApprover},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.Approve(c.id, c.signed)
			switch {
			case c.want == nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrBadStatement):
				t.Fatalf("got %v, want bad_signature or bad_statement", err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// A signature for alice's statement presented under bob's name: the
	// credential is not bob's.
	p, err := ParsePasskeyApproval(passkeyApproval(alice, r, Approve, ""))
	if err != nil {
		t.Fatal(err)
	}
	p.Approver = "bob"
	if _, err := m.Approve("req-1", p.Marshal()); !errors.Is(err, ErrUnknownApprover) {
		t.Fatalf("alice's assertion under bob's name: got %v, want ErrUnknownApprover", err)
	}
}

func TestPasskeyApprovalCanonical(t *testing.T) {
	a := passkeytest.New("alice", testOrigin)
	r := newRequest("req-1")
	r.Expires = t0.Add(time.Hour)
	signed := passkeyApproval(a, r, Reject, "too large")
	p, err := ParsePasskeyApproval(signed)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Marshal(); !bytes.Equal(got, signed) {
		t.Fatalf("Marshal(Parse(x)) = %q, want %q", got, signed)
	}
	for _, bad := range [][]byte{
		append(bytes.Clone(signed), '\n'),
		bytes.Replace(signed, []byte("\nnonce "), []byte("\nnonce  "), 1),
		bytes.Replace(signed, []byte("webauthn alice"), []byte("webauthn al/ice"), 1),
		signed[:len(signed)-1],
	} {
		if _, err := ParsePasskeyApproval(bad); err == nil {
			t.Errorf("ParsePasskeyApproval(%q) accepted a non-canonical form", bad)
		}
	}
}

func TestPasskeyPins(t *testing.T) {
	alice := passkeytest.New("alice", testOrigin)
	pinned := passkeytest.New("alice", testOrigin)
	reg, err := NewRegistry([]Approver{
		{ID: "alice", Groups: []string{"treasury"}, Passkeys: []string{pinned.Credential.Fingerprint()}}, // no Ed25519 key
		{ID: "bob", Groups: []string{"treasury"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.AddPasskey(alice.Credential); err == nil {
		t.Fatal("a passkey the config does not pin was enrolled")
	}
	if err := reg.AddPasskey(pinned.Credential); err != nil {
		t.Fatalf("the pinned passkey: %v", err)
	}
	stolen := pinned.Credential
	stolen.Approver = "bob"
	if err := reg.AddPasskey(stolen); err == nil {
		t.Fatal("alice's passkey was enrolled for bob too: one key would count as two approvers")
	}
	if err := reg.AddPasskey(pinned.Credential); err != nil {
		t.Fatalf("the same enrolment again (a restart): %v", err)
	}
	if n := len(reg.Passkeys("alice")); n != 1 {
		t.Fatalf("alice has %d passkeys, want 1", n)
	}
}

// TestChromiumVector: a passkey approval that Chromium's virtual
// authenticator made (testdata/chromium-passkey.txtar, written by
// cmd/rulelock's TestConsoleBrowser) verifies offline from the enrolment
// note alone, and fails with any byte of its assertion changed.
func TestChromiumVector(t *testing.T) {
	b, err := os.ReadFile("testdata/chromium-passkey.txtar")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), "-- enrolment --\n")
	enrolment, signed, ok := strings.Cut(rest, "\n-- approval --\n")
	if !ok {
		t.Fatal("malformed vector file")
	}
	cred, isNote, err := passkey.ParseEnrolmentNote(enrolment)
	if !isNote || err != nil {
		t.Fatalf("enrolment: %v", err)
	}
	p, err := ParsePasskeyApproval([]byte(signed))
	if err != nil {
		t.Fatal(err)
	}
	if err := passkey.Verify(cred, p.Statement.Marshal(), p.Assertion); err != nil {
		t.Fatalf("Chromium's assertion: %v", err)
	}
	a := p.Assertion
	for name, field := range map[string][]byte{"authenticator data": a.AuthenticatorData, "client data": a.ClientDataJSON, "signature": a.Signature, "nonce": a.Nonce} {
		for _, i := range []int{0, len(field) / 2, len(field) - 1} {
			field[i] ^= 0x01
			if err := passkey.Verify(cred, p.Statement.Marshal(), a); err == nil {
				t.Errorf("byte %d of the %s changed: still verifies", i, name)
			}
			field[i] ^= 0x01
		}
	}
	other := p.Statement
	other.Verdict, other.Reason = Reject, "changed my mind"
	if err := passkey.Verify(cred, other.Marshal(), a); err == nil {
		t.Error("the assertion verifies for another statement")
	}
}
