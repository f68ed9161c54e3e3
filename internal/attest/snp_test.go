package attest_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/testdata"

	"github.com/rulelock/rulelock/internal/attest"
)

// The real SEV-SNP report go-sev-guest ships (verify/testdata: a Milan
// guest's attestation.bin and the VCEK the AMD KDS issued for it).
func snpSample(t testing.TB) (attest.Evidence, [abi.ReportDataSize]byte, attest.SNPRoots) {
	t.Helper()
	rep, err := abi.ReportToProto(testdata.AttestationBytes)
	if err != nil {
		t.Fatal(err)
	}
	var rd [abi.ReportDataSize]byte
	copy(rd[:], rep.GetReportData())
	ev := attest.Evidence{Provider: "sev-snp", Report: testdata.AttestationBytes, Collateral: testdata.VcekBytes}
	return ev, rd, attest.SNPRoots{Measurements: []string{hex.EncodeToString(rep.GetMeasurement())}}
}

// TestSNPSample: the sample's signature chain verifies offline against
// the pinned AMD roots; its guest allowed debugging, so VerifySNP, which
// forbids debug, refuses it, and for that reason only.
func TestSNPSample(t *testing.T) {
	ev, rd, roots := snpSample(t)
	rep, err := attest.CheckSNP(ev, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("measurement %x, policy %#x", rep.GetMeasurement(), rep.GetPolicy())
	_, err = attest.VerifySNP(ev, rd, roots)
	if !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), "debugging") {
		t.Fatalf("got %v, want the debug guest refused", err)
	}
}

// TestSNPTamperedByte flips each byte of the sample report in turn: the
// signature check refuses every one.
func TestSNPTamperedByte(t *testing.T) {
	ev, _, _ := snpSample(t)
	var passed []int
	for i := range ev.Report {
		bad := ev
		bad.Report = append([]byte(nil), ev.Report...)
		bad.Report[i] ^= 0x01
		if _, err := attest.CheckSNP(bad, time.Time{}); !errors.Is(err, attest.ErrEvidence) {
			passed = append(passed, i)
		}
	}
	if len(passed) > 0 {
		t.Fatalf("%d tampered reports verified, at offsets %v", len(passed), passed)
	}
}

func TestSNPRefuses(t *testing.T) {
	ev, rd, roots := snpSample(t)
	other := rd
	other[0] ^= 1
	vcek := append([]byte(nil), ev.Collateral...)
	vcek[len(vcek)/2] ^= 1
	cases := map[string]func() (attest.Evidence, [abi.ReportDataSize]byte, attest.SNPRoots){
		"another statement": func() (attest.Evidence, [abi.ReportDataSize]byte, attest.SNPRoots) { return ev, other, roots },
		"a measurement not allowed": func() (attest.Evidence, [abi.ReportDataSize]byte, attest.SNPRoots) {
			return ev, rd, attest.SNPRoots{Measurements: []string{"00"}}
		},
		"a tampered VCEK": func() (attest.Evidence, [abi.ReportDataSize]byte, attest.SNPRoots) {
			bad := ev
			bad.Collateral = vcek
			return bad, rd, roots
		},
		"a TCB below the minimum": func() (attest.Evidence, [abi.ReportDataSize]byte, attest.SNPRoots) {
			r := roots
			r.MinimumTCB.SnpSpl = 255
			return ev, rd, r
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ev, rd, roots := c()
			_, err := attest.VerifySNP(ev, rd, roots)
			if !errors.Is(err, attest.ErrEvidence) || strings.Contains(err.Error(), "debugging") {
				t.Fatalf("got %v, want refused", err)
			}
			t.Log(err)
		})
	}
}
