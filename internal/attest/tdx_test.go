package attest_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/rulelock/rulelock/internal/attest"
)

// The real TDX quote go-tdx-guest ships (testing/testdata: a Sapphire
// Rapids production quote, tdx_prod_quote_SPR_E4.dat), checked at a time
// its PCK certificates were valid, as the library's own tests do.
var tdxSampleTime = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

// tdxSample returns the library's sample quote without the 39 bytes its
// authors appended after it ("extra bytes(only for testing purpose)"): the
// quote as the TD produced it.
func tdxSample(t testing.TB) (attest.Evidence, [abi.ReportDataSize]byte, attest.TDXRoots) {
	t.Helper()
	const trailer = "\nextra bytes(only for testing purpose)\n"
	if !bytes.HasSuffix(testdata.RawQuote, []byte(trailer)) {
		t.Fatal("the sample changed")
	}
	raw := bytes.TrimSuffix(testdata.RawQuote, []byte(trailer))
	ev := attest.Evidence{Provider: "tdx", Report: raw, Collateral: attest.TDXCollateral(nil, nil)}
	quote, err := attest.CheckTDX(ev, tdxSampleTime)
	if err != nil {
		t.Fatalf("the sample quote: %v", err)
	}
	var rd [abi.ReportDataSize]byte
	copy(rd[:], quote.GetTdQuoteBody().GetReportData())
	return ev, rd, attest.TDXRoots{MrTDs: []string{hex.EncodeToString(quote.GetTdQuoteBody().GetMrTd())}, Now: tdxSampleTime}
}

// TestTDXSampleAsShipped: the bytes the library's authors appended after
// the chain are refused, though no signature breaks.
func TestTDXSampleAsShipped(t *testing.T) {
	ev := attest.Evidence{Provider: "tdx", Report: testdata.RawQuote}
	_, err := attest.CheckTDX(ev, tdxSampleTime)
	if !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), "signed by nothing") {
		t.Fatalf("got %v, want the trailing bytes refused", err)
	}
}

func TestTDXSample(t *testing.T) {
	ev, rd, roots := tdxSample(t)
	m, err := attest.VerifyTDX(ev, rd, roots)
	if err != nil {
		if !strings.Contains(err.Error(), "debug TD") {
			t.Fatal(err)
		}
		t.Logf("the sample is a debug TD, refused: %v", err)
		return
	}
	t.Logf("MRTD %s", m.MrTD)
}

// TestTDXTamperedByte flips each byte of the sample quote in turn: the
// signature check refuses every one.
func TestTDXTamperedByte(t *testing.T) {
	ev, _, _ := tdxSample(t)
	var passed []int
	for i := range ev.Report {
		bad := ev
		bad.Report = append([]byte(nil), ev.Report...)
		bad.Report[i] ^= 0x01
		if _, err := attest.CheckTDX(bad, tdxSampleTime); !errors.Is(err, attest.ErrEvidence) {
			passed = append(passed, i)
		}
	}
	if len(passed) > 0 {
		t.Fatalf("%d of %d tampered quotes verified, at offsets %v", len(passed), len(ev.Report), passed)
	}
}

func TestTDXRefuses(t *testing.T) {
	ev, rd, roots := tdxSample(t)
	other := rd
	other[0] ^= 1
	high := roots
	high.MinimumTeeTcbSvn = bytes.Repeat([]byte{0xff}, 16)
	noMrTD := roots
	noMrTD.MrTDs = []string{strings.Repeat("00", 48)}
	late := roots
	late.Now = time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		rd    [abi.ReportDataSize]byte
		roots attest.TDXRoots
	}{
		{"another statement", other, roots},
		{"a TCB below the minimum", rd, high},
		{"an MRTD not allowed", rd, noMrTD},
		{"certificates expired", rd, late},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := attest.VerifyTDX(ev, c.rd, c.roots)
			if !errors.Is(err, attest.ErrEvidence) {
				t.Fatalf("got %v, want refused", err)
			}
			t.Log(err)
		})
	}
}

// TestTDXRevocation checks the sample quote's PCK chain against the real
// CRLs Intel's PCS published at the time (go-tdx-guest ships them with
// the quote: testing/testdata/pckcrl, rootcrl.der): it passes while they
// are current, and a CRL flipped by one bit, in the wrong place, or past
// its next update is refused, as is collateral in any other form.
func TestTDXRevocation(t *testing.T) {
	ev, _, _ := tdxSample(t)
	ev.Collateral = attest.TDXCollateral(testdata.PckCrlBody, testdata.RootCrlBody)
	if _, err := attest.CheckTDX(ev, tdxSampleTime); err != nil {
		t.Fatalf("the sample with its CRLs: %v", err)
	}
	flipped := append([]byte{}, testdata.PckCrlBody...)
	flipped[len(flipped)-10] ^= 1
	for name, tc := range map[string]struct {
		collateral []byte
		at         time.Time
	}{
		"a flipped bit in the PCK CRL":      {attest.TDXCollateral(flipped, testdata.RootCrlBody), tdxSampleTime},
		"the CRLs swapped":                  {attest.TDXCollateral(testdata.RootCrlBody, testdata.PckCrlBody), tdxSampleTime},
		"past the PCK CRL's next update":    {ev.Collateral, time.Date(2023, time.July, 9, 0, 0, 0, 0, time.UTC)},
		"before the PCK CRL's first update": {ev.Collateral, time.Date(2023, time.June, 1, 0, 0, 0, 0, time.UTC)},
		"collateral that is not the format": {[]byte("pck chain in the quote\n"), tdxSampleTime},
		"a CRL missing from the collateral": {[]byte("rulelock tdx collateral v1\npck-crl AA==\n"), tdxSampleTime},
	} {
		t.Run(name, func(t *testing.T) {
			e := ev
			e.Collateral = tc.collateral
			_, err := attest.CheckTDX(e, tc.at)
			if !errors.Is(err, attest.ErrEvidence) {
				t.Fatalf("got %v, want refused", err)
			}
			t.Log(err)
		})
	}
}

// TestTDXRequireCRL: with tdx-require-crl, evidence without CRLs is
// refused; with current CRLs that list nothing of its chain it verifies.
func TestTDXRequireCRL(t *testing.T) {
	pol, err := attest.ParsePolicy("p", []byte("origin o\nrelease v1 "+engine+"\nmax-gap 1h\ntdx-mrtd "+strings.Repeat("00", 48)+"\ntdx-require-crl\n"))
	if err != nil || !pol.TDX.RequireCRL {
		t.Fatalf("policy: %+v %v", pol, err)
	}
	ev, rd, roots := tdxSample(t)
	roots.RequireCRL = true
	if _, err := attest.VerifyTDX(ev, rd, roots); !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), "tdx-require-crl") {
		t.Fatalf("no CRLs: %v", err)
	}
	ev.Collateral = attest.TDXCollateral(testdata.PckCrlBody, testdata.RootCrlBody)
	if _, err := attest.VerifyTDX(ev, rd, roots); err != nil {
		t.Fatalf("with CRLs: %v", err)
	}
}
