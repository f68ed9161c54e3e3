package attest_test

import (
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
)

// BenchmarkTPMStart is the start-up cost of attestation with a TPM: open
// it (attestation and storage keys), measure the engine and a fresh
// per-boot key, seal and unseal the key.
func BenchmarkTPMStart(b *testing.B) {
	sw := swtpmtest.Start(b)
	for b.Loop() {
		tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := attest.NewRecorder(tp, attest.RecorderOptions{Origin: origin, Engine: engine, Checkpoint: func() []byte { return nil }}); err != nil {
			b.Fatal(err)
		}
		tp.Close()
	}
}

// BenchmarkTPMAttest is the cost of one attestation entry's evidence: a
// quote over the statement's hash.
func BenchmarkTPMAttest(b *testing.B) {
	sw := swtpmtest.Start(b)
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	var rd attest.ReportData
	for b.Loop() {
		if _, err := tp.Attest(rd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyTPM is a verifier's cost per attestation entry.
func BenchmarkVerifyTPM(b *testing.B) {
	sw := swtpmtest.Start(b)
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	rec, err := attest.NewRecorder(tp, attest.RecorderOptions{Origin: origin, Engine: engine, Checkpoint: func() []byte { return nil }})
	if err != nil {
		b.Fatal(err)
	}
	s := &attest.Statement{Origin: origin, Engine: engine, Key: rec.Key()}
	rd, _ := s.ReportData()
	ev, err := tp.Attest(rd)
	if err != nil {
		b.Fatal(err)
	}
	pin, _ := tp.AttestationKey()
	roots := attest.TPMRoots{AttestationKeys: []string{pin}}
	for b.Loop() {
		if _, err := attest.VerifyTPM(ev, s, roots); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckSNP, BenchmarkCheckTDX and BenchmarkCheckNitro are a
// verifier's cost per attestation entry of each platform (the signature
// chain, which dominates).
func BenchmarkCheckSNP(b *testing.B) {
	ev, _, _ := snpSample(b)
	for b.Loop() {
		if _, err := attest.CheckSNP(ev, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckTDX(b *testing.B) {
	ev, _, _ := tdxSample(b)
	for b.Loop() {
		if _, err := attest.CheckTDX(ev, tdxSampleTime); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckNitro(b *testing.B) {
	ev := nitroSample(b)
	for b.Loop() {
		if _, err := attest.CheckNitro(ev); err != nil {
			b.Fatal(err)
		}
	}
}
