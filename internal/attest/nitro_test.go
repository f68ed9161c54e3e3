package attest_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/attest"
)

// nitroSample reads testdata/nitro-debug-document.txt: a real, published
// Nitro attestation document (its source is named in the file).
func nitroSample(t testing.TB) attest.Evidence {
	t.Helper()
	b, err := os.ReadFile("testdata/nitro-debug-document.txt")
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "#") {
			text.WriteString(l)
		}
	}
	raw, err := base64.StdEncoding.DecodeString(text.String())
	if err != nil {
		t.Fatal(err)
	}
	return attest.Evidence{Provider: "nitro", Report: raw, Collateral: []byte("cabundle in the document\n")}
}

// TestNitroSample: the document's signature and certificate chain verify
// against the pinned AWS root; it comes from a debug-mode enclave, which
// VerifyNitro refuses.
func TestNitroSample(t *testing.T) {
	ev := nitroSample(t)
	doc, err := attest.CheckNitro(ev)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("module %s, %d bytes of user_data", doc.ModuleID, len(doc.UserData))
	var rd attest.ReportData
	copy(rd[:], doc.UserData)
	if _, err := attest.VerifyNitro(ev, rd, attest.NitroRoots{PCR0s: []string{strings.Repeat("00", 48)}}); !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), "debug-mode") {
		t.Fatalf("got %v, want the debug-mode document refused", err)
	}
}

// TestNitroTampered: changing user_data (or any byte of the document)
// breaks the COSE signature.
func TestNitroTampered(t *testing.T) {
	ev := nitroSample(t)
	doc, err := attest.CheckNitro(ev)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(ev.Report, doc.UserData)
	if i < 0 {
		t.Fatal("user_data not found in the document")
	}
	bad := ev
	bad.Report = bytes.Clone(ev.Report)
	bad.Report[i] ^= 1
	if _, err := attest.CheckNitro(bad); !errors.Is(err, attest.ErrEvidence) {
		t.Fatalf("tampered user_data: got %v, want refused", err)
	}
	var passed []int
	for i := range ev.Report {
		bad.Report = bytes.Clone(ev.Report)
		bad.Report[i] ^= 1
		if _, err := attest.CheckNitro(bad); !errors.Is(err, attest.ErrEvidence) {
			passed = append(passed, i)
		}
	}
	if len(passed) > 0 {
		t.Fatalf("%d tampered documents verified, at offsets %v", len(passed), passed)
	}
}
