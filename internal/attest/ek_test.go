package attest_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
)

func certPool(t *testing.T, pems ...[]byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	for _, b := range pems {
		if !p.AppendCertsFromPEM(b) {
			t.Fatal("no certificate in PEM")
		}
	}
	return p
}

// TestEnrolment binds a TPM's attestation key to its EK certificate
// (swtpm_setup's, signed by swtpm's local CA standing in for a
// manufacturer): the chain to the pinned root verifies, the TPM answers the
// challenge and the enrolled pin is its attestation key's. Another TPM,
// with a certified EK of its own, cannot answer a challenge for the
// first one's EK, nor the first one a challenge naming the other's
// attestation key; an EK certificate from an unpinned CA, or tampered, is
// refused; a request marshals and parses back.
func TestEnrolment(t *testing.T) {
	ca := swtpmtest.NewCA(t)
	swA := swtpmtest.StartWithEK(t, ca)
	swB := swtpmtest.StartWithEK(t, ca)
	a, b := openTPM(t, swA), openTPM(t, swB)
	roots := attest.EKRoots{Roots: certPool(t, ca.Root()), Intermediates: certPool(t, ca.Issuer())}
	now := time.Now()

	reqA, err := a.EnrolmentRequest()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := attest.ParseEnrolmentRequest(reqA.Marshal()); err != nil || !bytes.Equal(back.EKCert, reqA.EKCert) || !bytes.Equal(back.AK, reqA.AK) {
		t.Fatalf("enrolment request round trip: %v", err)
	}
	ch, err := attest.NewChallenge(reqA, roots, now)
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	wire, err := attest.ParseChallenge(ch.Marshal()) // what the host receives
	if err != nil {
		t.Fatal(err)
	}
	ans, err := a.Answer(wire)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	pin, err := ch.Check(ans)
	if want, _ := a.AttestationKey(); err != nil || pin != want {
		t.Fatalf("enrolled %q, %v; want %s", pin, err, want)
	}
	if _, err := ch.Check(append([]byte{}, make([]byte, len(ans))...)); !errors.Is(err, attest.ErrEvidence) {
		t.Errorf("a wrong answer: %v", err)
	}

	// Another TPM cannot answer for A's EK.
	if ans, err := b.Answer(wire); err == nil {
		if _, err := ch.Check(ans); err == nil {
			t.Error("TPM B answered a challenge encrypted to A's EK")
		}
	}
	// A challenge for A's EK naming B's attestation key: A cannot answer
	// it (B's key is not loaded in A), so B's key is not enrolled as A's.
	reqB, err := b.EnrolmentRequest()
	if err != nil {
		t.Fatal(err)
	}
	mixed, err := attest.NewChallenge(&attest.EnrolmentRequest{EKCert: reqA.EKCert, AK: reqB.AK}, roots, now)
	if err != nil {
		t.Fatal(err)
	}
	if ans, err := a.Answer(mixed); err == nil {
		if _, err := mixed.Check(ans); err == nil {
			t.Error("A answered a challenge naming B's attestation key")
		}
	}

	// The chain: an unpinned root, no intermediate, a tampered certificate.
	other := swtpmtest.NewCA(t)
	swtpmtest.StartWithEK(t, other) // creates other's keys
	for name, tc := range map[string]struct {
		roots attest.EKRoots
		cert  func([]byte) []byte
	}{
		"another manufacturer's root": {attest.EKRoots{Roots: certPool(t, other.Root()), Intermediates: certPool(t, ca.Issuer(), other.Issuer())}, nil},
		"no root pinned":              {attest.EKRoots{Intermediates: certPool(t, ca.Issuer())}, nil},
		"no path to the root":         {attest.EKRoots{Roots: certPool(t, ca.Root())}, nil},
		"a flipped bit in the certificate": {roots, func(c []byte) []byte {
			c = append([]byte{}, c...)
			c[len(c)/2] ^= 1
			return c
		}},
		"before the certificates were issued": {roots, nil},
	} {
		t.Run(name, func(t *testing.T) {
			req := *reqA
			if tc.cert != nil {
				req.EKCert = tc.cert(req.EKCert)
			}
			at := now
			if name == "before the certificates were issued" {
				at = now.AddDate(-1, 0, 0)
			}
			if _, err := attest.NewChallenge(&req, tc.roots, at); !errors.Is(err, attest.ErrEvidence) {
				t.Fatalf("NewChallenge: %v, want refused", err)
			} else {
				t.Log(err)
			}
		})
	}
	if _, err := attest.ParseChallenge([]byte("rulelock tpm challenge v1\ncredential AA==\n")); err == nil {
		t.Error("a truncated challenge parsed")
	}
}
