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
	ev := attest.Evidence{Provider: "tdx", Report: raw, Collateral: []byte("pck chain in the quote\n")}
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
