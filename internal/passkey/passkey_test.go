package passkey_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/passkey"
	"github.com/rulelock/rulelock/internal/passkey/passkeytest"
)

const origin = "https://console.example.com"

var statement = []byte("rulelock approval v1\nrequest req-1\n")

func TestVerify(t *testing.T) {
	a := passkeytest.New("alice", origin)
	good := a.Assert(statement)
	if err := passkey.Verify(a.Credential, statement, good); err != nil {
		t.Fatalf("a genuine assertion: %v", err)
	}
	other := passkeytest.New("bob", origin)
	cases := []struct {
		name   string
		cred   passkey.Credential
		stmt   []byte
		mutate func(*passkey.Assertion)
	}{
		{"another statement", a.Credential, []byte("rulelock approval v1\nrequest req-2\n"), nil},
		{"another nonce", a.Credential, statement, func(x *passkey.Assertion) { x.Nonce = bytes.Repeat([]byte{1}, 32) }},
		{"short nonce", a.Credential, statement, func(x *passkey.Assertion) { x.Nonce = x.Nonce[:16] }},
		{"a flipped signature bit", a.Credential, statement, func(x *passkey.Assertion) { x.Signature[len(x.Signature)-1] ^= 1 }},
		{"a flipped authenticator data bit", a.Credential, statement, func(x *passkey.Assertion) { x.AuthenticatorData[36] ^= 1 }},
		{"a flipped client data byte", a.Credential, statement, func(x *passkey.Assertion) { x.ClientDataJSON[len(x.ClientDataJSON)-2] ^= 1 }},
		{"another credential's key", other.Credential, statement, nil},
		{"another credential id", a.Credential, statement, func(x *passkey.Assertion) { x.Credential = []byte("x") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := a.Assert(statement)
			if c.mutate != nil {
				c.mutate(&x)
			}
			cred := c.cred
			if c.name == "another credential's key" {
				cred.ID = a.Credential.ID // the id matches, the key does not
			}
			err := passkey.Verify(cred, c.stmt, x)
			if !errors.Is(err, passkey.ErrBadAssertion) {
				t.Fatalf("got %v, want ErrBadAssertion", err)
			}
		})
	}
}

func TestVerifyBrowserChecks(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*passkeytest.Authenticator)
		want  string
	}{
		{"no user verification", func(a *passkeytest.Authenticator) { a.Flags = 0x01 }, "user not verified"},
		{"no user presence", func(a *passkeytest.Authenticator) { a.Flags = 0x04 }, "user not present"},
		{"another origin", func(a *passkeytest.Authenticator) { a.Origin = "https://evil.example.com" }, "origin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := passkeytest.New("alice", origin)
			c.setup(a)
			err := passkey.Verify(a.Credential, statement, a.Assert(statement))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
	a := passkeytest.New("alice", origin)
	cred := a.Credential
	cred.Origin = "https://other.example.com" // another RP: the rpIdHash and origin differ
	if err := passkey.Verify(cred, statement, a.Assert(statement)); err == nil {
		t.Fatal("an assertion for another relying party verified")
	}
}

func TestEnrolmentNote(t *testing.T) {
	a := passkeytest.New("alice", origin)
	msg := passkey.EnrolmentNote(a.Credential)
	got, ok, err := passkey.ParseEnrolmentNote(msg)
	if !ok || err != nil {
		t.Fatalf("ParseEnrolmentNote(%q) = %v, %v", msg, ok, err)
	}
	if got.Approver != "alice" || got.Origin != origin || !bytes.Equal(got.ID, a.Credential.ID) || !bytes.Equal(got.PublicKey, a.Credential.PublicKey) {
		t.Fatalf("got %+v, want %+v", got, a.Credential)
	}
	if _, ok, _ := passkey.ParseEnrolmentNote("approval_refused approve x: y"); ok {
		t.Fatal("another note read as an enrolment")
	}
	for _, bad := range []string{
		msg + " extra",
		strings.Replace(msg, " alice ", " ", 1),
		msg[:len(msg)-4] + "!!!!",
		strings.Replace(msg, origin, "ftp://x", 1),
	} {
		if _, ok, err := passkey.ParseEnrolmentNote(bad); !ok || err == nil {
			t.Errorf("ParseEnrolmentNote(%q) = %v, %v: want a malformed enrolment", bad, ok, err)
		}
	}
}

func TestLinks(t *testing.T) {
	s := passkey.Store{Dir: t.TempDir()}
	now := time.Date(2026, 12, 2, 23, 0, 0, 0, time.UTC)
	tok, err := s.CreateLink("alice", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimLink(tok, now.Add(time.Minute)); err != nil || got != "alice" {
		t.Fatalf("ClaimLink = %q, %v, want alice", got, err)
	}
	if _, err := s.ClaimLink(tok, now.Add(time.Minute)); !errors.Is(err, passkey.ErrBadLink) {
		t.Fatalf("second claim: got %v, want ErrBadLink", err)
	}
	old, _ := s.CreateLink("bob", now, time.Hour)
	if _, err := s.ClaimLink(old, now.Add(time.Hour)); !errors.Is(err, passkey.ErrBadLink) {
		t.Fatalf("expired link: got %v, want ErrBadLink", err)
	}
	for _, bad := range []string{"", "../../etc/passwd", strings.Repeat("A", 43)} {
		if _, err := s.ClaimLink(bad, now); !errors.Is(err, passkey.ErrBadLink) {
			t.Errorf("ClaimLink(%q): got %v, want ErrBadLink", bad, err)
		}
	}
}

// FuzzParseEnrolmentNote: a note that parses is the enrolment of a
// well-formed credential, and EnrolmentNote gives it back.
func FuzzParseEnrolmentNote(f *testing.F) {
	f.Add(passkey.EnrolmentNote(passkeytest.New("alice", origin).Credential))
	f.Add("passkey_enrolled a b c d")
	f.Fuzz(func(t *testing.T, msg string) {
		c, ok, err := passkey.ParseEnrolmentNote(msg)
		if !ok || err != nil {
			return
		}
		if err := c.Check(); err != nil {
			t.Fatalf("parsed a malformed credential: %v", err)
		}
		if got := passkey.EnrolmentNote(c); got != msg {
			t.Fatalf("EnrolmentNote(Parse(%q)) = %q", msg, got)
		}
	})
}

func TestStoreCredentials(t *testing.T) {
	s := passkey.Store{Dir: t.TempDir()}
	a := passkeytest.New("audrey", origin)
	if err := s.AddCredential(a.Credential); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCredential(a.Credential); err == nil {
		t.Fatal("the same passkey was stored twice")
	}
	got, err := s.Credentials()
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].PublicKey, a.Credential.PublicKey) || got[0].Approver != "audrey" {
		t.Fatalf("Credentials() = %+v, %v", got, err)
	}
	if msg := passkey.AuditorEnrolmentNote(a.Credential); !strings.HasPrefix(msg, "passkey_enrolled_auditor audrey ") {
		t.Fatalf("AuditorEnrolmentNote = %q", msg)
	} else if _, ok, _ := passkey.ParseEnrolmentNote(msg); ok {
		t.Fatal("an auditor's enrolment reads as an approver's")
	}
	// A key file renamed to another key's name is refused.
	b := passkeytest.New("audrey", origin)
	names, _ := filepath.Glob(filepath.Join(s.Dir, "passkeys", "*.json"))
	os.Rename(names[0], filepath.Join(s.Dir, "passkeys", strings.TrimPrefix(b.Credential.Fingerprint(), "sha256:")+".json"))
	if _, err := s.Credentials(); err == nil {
		t.Fatal("a key stored under another key's name was read")
	}
}
