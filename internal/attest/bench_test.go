package attest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"

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

// BenchmarkLastStatement is what a restart pays to continue the chain of
// attestation entries on a large log (200,000 decisions after the
// previous boot's attestation entries, then a periodic attestation entry
// and 1,000 decisions): LastStatement reads back from the end, the
// forward scan it replaced read the whole log.
func BenchmarkLastStatement(b *testing.B) {
	ctx := context.Background()
	l, err := audit.Open(filepath.Join(b.TempDir(), "log"), audit.Options{SegmentSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	att := func(k int) *audit.Entry {
		return &audit.Entry{Kind: audit.KindAttestation, Time: time.Unix(int64(k), 0).UTC(), Statement: fmt.Sprintf("statement %d\n", k),
			Provider: "tpm", Evidence: make([]byte, 200), Collateral: make([]byte, 600)}
	}
	decisions := func(n int) {
		var last audit.Pending
		for k := range n {
			action := fmt.Sprintf(`{"amount":%d,"to":"acct-7","type":"transfer"}`, k)
			p, err := l.Enqueue(ctx, &audit.Entry{Kind: audit.KindDecision, Time: time.Unix(int64(k), 0).UTC(), Agent: "agent-1",
				RequestID: fmt.Sprintf("r-%d", k), Action: audit.Text(action), ActionSHA256: sha256.Sum256([]byte(action)),
				Decision: "allow", State: audit.Text(`{"agent_roles":["payments"]}`), BundleDigest: bundle1})
			if err != nil {
				b.Fatal(err)
			}
			last = p
		}
		if _, err := last.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	l.Append(ctx, att(0))
	decisions(200_000)
	l.Append(ctx, att(1))
	decisions(1_000)
	want, err := attest.LastStatement(l)
	if err != nil || want == "" {
		b.Fatal(want, err)
	}
	b.Run("backwards", func(b *testing.B) {
		for b.Loop() {
			if got, err := attest.LastStatement(l); err != nil || got != want {
				b.Fatal(got, err)
			}
		}
	})
	b.Run("forward-scan-before", func(b *testing.B) {
		for b.Loop() {
			if got := forwardScan(b, l); got != want {
				b.Fatal(got)
			}
		}
	})
}

// forwardScan is LastStatement as it was: every entry read and decoded.
func forwardScan(b *testing.B, l *audit.Log) string {
	last := ""
	const batch = 1024
	for lo, n := int64(0), l.Size(); lo < n; lo += batch {
		bs, err := l.ReadEntries(lo, min(lo+batch, n))
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range bs {
			d, err := audit.DecodeVerifiedEntry(e)
			if err != nil {
				b.Fatal(err)
			}
			if d.Kind == audit.KindAttestation {
				sum := sha256.Sum256([]byte(d.Statement))
				last = hex.EncodeToString(sum[:])
			}
		}
	}
	return last
}
