package hsm_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/internal/hsm/hsmtest"
)

const checkpoint = "example.com/log\n5\nK9i5ymk2Fpsp8vMpSyFkHQ5hSNtHmT1v/U9BOT2p3Hs=\n"

// newKey generates a key labelled label on a fresh SoftHSM token.
func newKey(t *testing.T, label, name string) (hsm.Config, *hsm.Signer) {
	t.Helper()
	cfg := hsmtest.SoftHSM(t)
	cfg.Label, cfg.Name = label, name
	s, err := hsm.GenerateKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return cfg, s
}

func TestStockVerifierAcceptsHSMNote(t *testing.T) {
	cfg, s := newKey(t, "checkpoint", "example.com/log")

	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatalf("note.NewVerifier(%q): %v", s.VerifierKey(), err)
	}
	if v.Name() != "example.com/log" || v.KeyHash() != s.KeyHash() {
		t.Fatalf("verifier %s+%08x, signer %s+%08x", v.Name(), v.KeyHash(), s.Name(), s.KeyHash())
	}
	msg, err := note.Sign(&note.Note{Text: checkpoint}, s)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open: %v\n%s", err, msg)
	}
	if n.Text != checkpoint || len(n.Sigs) != 1 || n.Sigs[0].Hash != s.KeyHash() {
		t.Fatalf("opened note %+v", n)
	}

	// The key stays on the token: reopening it gives the same verifier key.
	vkey := s.VerifierKey()
	s.Close()
	s2, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.VerifierKey(); got != vkey {
		t.Fatalf("reopened verifier key %q, want %q", got, vkey)
	}
}

func TestSoftwareAndHSMKeysShareVerifierList(t *testing.T) {
	_, hsmSigner := newKey(t, "checkpoint", "hsm.example.com/log")
	skey, softVKey, err := note.GenerateKey(rand.Reader, "soft.example.com/log")
	if err != nil {
		t.Fatal(err)
	}
	softSigner, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	var verifiers []note.Verifier
	for _, vkey := range []string{softVKey, hsmSigner.VerifierKey()} {
		v, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatalf("note.NewVerifier(%q): %v", vkey, err)
		}
		verifiers = append(verifiers, v)
	}
	list := note.VerifierList(verifiers...)

	for _, signers := range [][]note.Signer{{softSigner}, {hsmSigner}, {softSigner, hsmSigner}} {
		msg, err := note.Sign(&note.Note{Text: checkpoint}, signers...)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(msg, list)
		if err != nil {
			t.Fatalf("note.Open: %v\n%s", err, msg)
		}
		if len(n.Sigs) != len(signers) {
			t.Errorf("got %d verified signatures, want %d\n%s", len(n.Sigs), len(signers), msg)
		}
	}
}

func TestConcurrentSign(t *testing.T) {
	_, s := newKey(t, "checkpoint", "example.com/log")
	const goroutines, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				msg := fmt.Appendf(nil, "message %d from goroutine %d\n", i, g)
				sig, err := s.Sign(msg)
				if err == nil && !ed25519.Verify(s.PublicKey(), msg, sig) {
					err = fmt.Errorf("signature of %q does not verify", msg)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Two Signers share the loaded module and the token login; closing one
// leaves the other working.
func TestTwoSignersOneModule(t *testing.T) {
	cfg, s1 := newKey(t, "one", "one")
	cfg.Label, cfg.Name = "two", "two"
	s2, err := hsm.GenerateKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Sign([]byte("still here\n")); err != nil {
		t.Fatalf("sign after closing the other signer: %v", err)
	}
	if _, err := s1.Sign([]byte("closed\n")); !errors.Is(err, hsm.ErrClosed) {
		t.Fatalf("sign on closed signer: got %v, want %v", err, hsm.ErrClosed)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	base, s := newKey(t, "checkpoint", "example.com/log")
	tests := []struct {
		name   string
		edit   func(*hsm.Config)
		gen    bool // GenerateKey instead of Open
		target error
		text   string
	}{
		{"wrong pin while logged in", func(c *hsm.Config) { c.PIN = "4321" }, false, hsm.ErrPIN, "login: incorrect pin"},
		{"missing key label", func(c *hsm.Config) { c.Label = "nope" }, false, hsm.ErrKeyNotFound, `public key "nope": key not found`},
		{"missing token", func(c *hsm.Config) { c.Token = "other" }, false, hsm.ErrTokenNotFound, `token "other": token not found`},
		{"missing module", func(c *hsm.Config) { c.Module = "/nonexistent/libp11.so" }, false, nil, "load pkcs11 module"},
		{"not a module", func(c *hsm.Config) { c.Module = "/etc/hostname" }, false, nil, "not a loadable PKCS#11 library"},
		{"no label", func(c *hsm.Config) { c.Label, c.Name = "", "" }, false, nil, "no key label"},
		{"bad name", func(c *hsm.Config) { c.Name = "a+b" }, false, nil, `invalid note key name "a+b"`},
		{"label in use", func(c *hsm.Config) {}, true, hsm.ErrKeyExists, "key label already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			open := hsm.Open
			if tt.gen {
				open = hsm.GenerateKey
			}
			got, err := open(cfg)
			if err == nil {
				got.Close()
				t.Fatalf("got no error, want %q", tt.text)
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("got %v, want errors.Is %v", err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("got %q, want it to contain %q", err, tt.text)
			}
			if strings.Contains(err.Error(), cfg.PIN) {
				t.Errorf("error %q reveals the pin", err)
			}
		})
	}
	if _, err := s.Sign([]byte("after the failures\n")); err != nil {
		t.Fatalf("sign after failed opens: %v", err)
	}
}

// With no session open the token itself checks the PIN.
func TestWrongPINFreshLogin(t *testing.T) {
	cfg, s := newKey(t, "checkpoint", "example.com/log")
	s.Close()
	cfg.PIN = "0000"
	_, err := hsm.Open(cfg)
	if !errors.Is(err, hsm.ErrPIN) {
		t.Fatalf("got %v, want %v", err, hsm.ErrPIN)
	}
	t.Log(err)
}

func TestConfigRedactsPIN(t *testing.T) {
	cfg := hsm.Config{Module: "m.so", Token: "tok", PIN: "s3cret-pin", Label: "k"}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("open", "hsm", cfg)
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), buf.String()} {
		if strings.Contains(out, "s3cret") {
			t.Errorf("%q reveals the pin", out)
		}
	}
}

func TestParseECPoint(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	wrapped, _ := asn1.Marshal([]byte(pub))
	short, _ := asn1.Marshal(make([]byte, 31))
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"der octet string", wrapped, true},
		{"bare point", pub, true},
		{"trailing data", append(wrapped[:len(wrapped):len(wrapped)], 0), false},
		{"wrong size", short, false},
		{"not der", []byte{0x30, 0x01}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		got, err := hsm.ParseECPoint(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%s: got err %v, want ok %v", tt.name, err, tt.ok)
			continue
		}
		if tt.ok && !got.Equal(pub) {
			t.Errorf("%s: got %x, want %x", tt.name, got, pub)
		}
	}
}

// The key hash matches the one note computes for the same name and key.
func TestKeyHash(t *testing.T) {
	for _, name := range []string{"a", "example.com/log", "rulelock-checkpoints"} {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		vkey, err := note.NewEd25519VerifierKey(name, pub)
		if err != nil {
			t.Fatal(err)
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := hsm.KeyHash(name, pub), v.KeyHash(); got != want {
			t.Errorf("KeyHash(%q) = %08x, want %08x", name, got, want)
		}
	}
}

// A CKA_EC_POINT value is accepted only in its one DER form (or as the bare
// point): whatever parses re-encodes to the input.
func FuzzParseECPoint(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	wrapped, _ := asn1.Marshal([]byte(pub))
	f.Add(wrapped)
	f.Add([]byte(pub))
	f.Add([]byte{0x04, 0x81, 0x20})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := hsm.ParseECPoint(in)
		if err != nil {
			return
		}
		if len(got) != ed25519.PublicKeySize {
			t.Fatalf("parsed %d bytes from %x", len(got), in)
		}
		if len(in) == ed25519.PublicKeySize {
			return
		}
		again, err := asn1.Marshal([]byte(got))
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("%x parsed to %x, which encodes as %x", in, got, again)
		}
	})
}
