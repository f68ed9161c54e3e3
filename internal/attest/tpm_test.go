package attest_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
)

const origin = "rulelock.example.com/audit"

var (
	engine  = "sha256:" + strings.Repeat("1e", 32)
	bundle1 = "sha256:" + strings.Repeat("b1", 32)
	bundle2 = "sha256:" + strings.Repeat("b2", 32)
)

func openTPM(t *testing.T, sw *swtpmtest.TPM) *attest.TPM {
	t.Helper()
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// boot measures the engine and a fresh per-boot key, as the gateway does
// at start, and returns the first statement.
func boot(t *testing.T, tp *attest.TPM) *attest.Statement {
	t.Helper()
	if err := tp.Measure(attest.EventEngine, engine); err != nil {
		t.Fatal(err)
	}
	_, vk, err := note.GenerateKey(rand.Reader, origin+"/boot")
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Measure(attest.EventKey, vk); err != nil {
		t.Fatal(err)
	}
	return &attest.Statement{Origin: origin, Engine: engine, Key: vk}
}

func roots(t *testing.T, tp *attest.TPM) attest.TPMRoots {
	t.Helper()
	pin, err := tp.AttestationKey()
	if err != nil {
		t.Fatal(err)
	}
	return attest.TPMRoots{AttestationKeys: []string{pin}}
}

func attestTo(t *testing.T, p attest.Provider, s *attest.Statement) attest.Evidence {
	t.Helper()
	rd, err := s.ReportData()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := p.Attest(rd)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func next(t *testing.T, s *attest.Statement, bundle string, size int64) *attest.Statement {
	t.Helper()
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	n := *s
	sum := sha256.Sum256(b)
	n.Prev = base16(sum[:])
	n.Bundle = bundle
	n.Size = size
	n.Root = sha256.Sum256([]byte{byte(size)})
	return &n
}

func base16(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

func TestTPMQuoteVerifies(t *testing.T) {
	tp := openTPM(t, swtpmtest.Start(t))
	s1 := boot(t, tp)
	r := roots(t, tp)
	m, err := attest.VerifyTPM(attestTo(t, tp, s1), s1, r)
	if err != nil {
		t.Fatalf("the first attestation: %v", err)
	}
	if m.Engine != engine || m.Key != s1.Key || len(m.Bundles) != 0 || m.AttestationKey != r.AttestationKeys[0] {
		t.Errorf("measurement %+v", m)
	}
	for i, b := range []string{bundle1, bundle2} {
		if err := tp.Measure(attest.EventBundle, b); err != nil {
			t.Fatal(err)
		}
		s := next(t, s1, b, int64(10*(i+1)))
		m, err := attest.VerifyTPM(attestTo(t, tp, s), s, r)
		if err != nil {
			t.Fatalf("after activating %s: %v", b, err)
		}
		if got := m.Bundles[len(m.Bundles)-1]; got != b || len(m.Bundles) != i+1 {
			t.Errorf("bundles %v, want the last %s of %d", m.Bundles, b, i+1)
		}
	}
}

func TestTPMRefuses(t *testing.T) {
	sw := swtpmtest.Start(t)
	tp := openTPM(t, sw)
	s1 := boot(t, tp)
	r := roots(t, tp)
	old := attestTo(t, tp, s1)
	if err := tp.Measure(attest.EventBundle, bundle1); err != nil {
		t.Fatal(err)
	}
	s2 := next(t, s1, bundle1, 7)
	good := attestTo(t, tp, s2)
	if _, err := attest.VerifyTPM(good, s2, r); err != nil {
		t.Fatalf("the good evidence: %v", err)
	}

	cases := []struct {
		name string
		ev   func() attest.Evidence
		stmt *attest.Statement
		r    attest.TPMRoots
	}{
		{"wrong extraData", func() attest.Evidence {
			rd := sha256.Sum256([]byte("another statement"))
			ev, err := tp.Attest(rd)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}, s2, r},
		{"replayed old quote", func() attest.Evidence { return old }, s2, r},
		{"old quote, current event log", func() attest.Evidence {
			return attest.Evidence{Provider: "tpm", Report: old.Report, Collateral: good.Collateral}
		}, s2, r},
		{"swapped bundle digest in the statement", func() attest.Evidence {
			lie := next(t, s1, bundle2, 7)
			return attestTo(t, tp, lie)
		}, next(t, s1, bundle2, 7), r},
		{"swapped bundle digest in the event log", func() attest.Evidence {
			ev := good
			ev.Collateral = bytes.Replace(good.Collateral, []byte(bundle1), []byte(bundle2), 1)
			return ev
		}, s2, r},
		{"another per-boot key", func() attest.Evidence { return good }, func() *attest.Statement {
			s := *s2
			_, s.Key, _ = note.GenerateKey(rand.Reader, origin+"/boot")
			return &s
		}(), r},
		{"attestation key not pinned", func() attest.Evidence { return good }, s2, attest.TPMRoots{
			AttestationKeys: []string{strings.Repeat("00", 32)},
		}},
		{"a flipped bit in the signed quote", func() attest.Evidence {
			ev := good
			ev.Report = flipQuoteBit(t, good.Report)
			return ev
		}, s2, r},
		{"not tpm evidence", func() attest.Evidence {
			ev := good
			ev.Provider = "nitro"
			return ev
		}, s2, r},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := attest.VerifyTPM(c.ev(), c.stmt, c.r)
			if !errors.Is(err, attest.ErrEvidence) {
				t.Fatalf("got %v, want an error wrapping ErrEvidence", err)
			}
			t.Log(err)
		})
	}

	// Last, since it spoils the TPM for the cases above: a rogue process
	// extends the identity PCR, then the bundle PCR. The engine's own log
	// does not have the event, and the quote shows it.
	for _, pcr := range []uint{attest.DefaultIdentityPCR, attest.DefaultBundlePCR} {
		if err := tp.Extend(pcr, sha256.Sum256([]byte("rogue"))); err != nil {
			t.Fatal(err)
		}
		s := next(t, s2, bundle1, 8)
		_, err := attest.VerifyTPM(attestTo(t, tp, s), s, r)
		if !errors.Is(err, attest.ErrEvidence) {
			t.Fatalf("after a rogue extend of PCR %d: got %v, want refused", pcr, err)
		}
		t.Logf("rogue extend of PCR %d: %v", pcr, err)
	}
}

// flipQuoteBit flips one bit of the signed TPMS_ATTEST in a TPM report.
func flipQuoteBit(t *testing.T, report []byte) []byte {
	t.Helper()
	line, rest, _ := strings.Cut(string(report), "\n")
	a, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(line, "attest "))
	if err != nil {
		t.Fatal(err)
	}
	a[len(a)-1] ^= 1
	return []byte("attest " + base64.StdEncoding.EncodeToString(a) + "\n" + rest)
}

func TestTPMSealedKey(t *testing.T) {
	sw := swtpmtest.Start(t)
	tp := openTPM(t, sw)
	boot(t, tp)
	secret := []byte("the per-boot key's seed, 32 byte")
	sealed, err := tp.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	// A bundle activation extends the other PCR: the key still unseals.
	if err := tp.Measure(attest.EventBundle, bundle1); err != nil {
		t.Fatal(err)
	}
	got, err := tp.Unseal(sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unseal: %q, %v", got, err)
	}
	if err := tp.Extend(attest.DefaultIdentityPCR, sha256.Sum256([]byte("rogue"))); err != nil {
		t.Fatal(err)
	}
	if got, err := tp.Unseal(sealed); !errors.Is(err, attest.ErrUnseal) {
		t.Fatalf("after a rogue extend: unsealed %q, %v; want ErrUnseal", got, err)
	}
}

func TestTPMAttestationKeyStableAcrossReboot(t *testing.T) {
	sw := swtpmtest.Start(t)
	tp := openTPM(t, sw)
	before := roots(t, tp)
	s := boot(t, tp)
	tp.Close()
	sw.Reboot()
	tp2 := openTPM(t, sw)
	after := roots(t, tp2)
	if before.AttestationKeys[0] != after.AttestationKeys[0] {
		t.Fatalf("attestation key %s before the reboot, %s after", before.AttestationKeys[0], after.AttestationKeys[0])
	}
	// After the reboot the PCRs start again from zero.
	if l := tp2.Log(); l.Start != ([2][32]byte{}) {
		t.Errorf("start values after a reboot %x, want zeros", l.Start)
	}
	// The old boot's statement does not verify against new evidence.
	s2 := boot(t, tp2)
	if _, err := attest.VerifyTPM(attestTo(t, tp2, s), s, after); err == nil {
		t.Fatal("the previous boot's statement verified against this boot's evidence")
	}
	if _, err := attest.VerifyTPM(attestTo(t, tp2, s2), s2, after); err != nil {
		t.Fatal(err)
	}
}
