// Package attest binds rulelock's own outputs — the engine binary, the
// active bundle, the bundle signer set and a per-boot checkpoint key — into
// evidence that a platform (a TPM, or confidential-computing hardware)
// signs, and verifies such evidence offline.
//
// rulelock never vouches for its own binary: the platform does. What
// rulelock adds is a Statement, a short canonical text naming what it
// runs, whose SHA-256 goes into the platform's report-data field:
//
//	stmt := &attest.Statement{Origin: "example.com/log", Engine: "sha256:…", …}
//	rd, _ := stmt.ReportData()
//	ev, err := provider.Attest(rd)          // the platform's signed report
//	…
//	m, err := attest.VerifyTPM(ev, stmt, roots) // offline, anywhere
//
// A Provider produces evidence on the platform it runs on (Attest); the
// verification of each kind of evidence is a separate function that needs
// only the evidence, its collateral and the verifier's pinned roots, so a
// verifier holding the log needs no network and no hardware.
//
// Providers:
//   - "tpm": a TPM 2.0 (a real one, or swtpm in the tests). The engine
//     extends its own digest, the per-boot key and every bundle into two
//     PCRs, keeps the event log, and quotes those PCRs with the statement's
//     hash as extraData. The per-boot key's seed is sealed to the identity
//     PCR. See TPM.
package attest

import "crypto/sha256"

// ReportData is the SHA-256 of a statement's canonical encoding: the value
// a platform signs. Platforms with a 64-byte field (SEV-SNP, TDX) carry it
// in the first 32 bytes and zeros after.
type ReportData = [sha256.Size]byte

// Evidence is what a provider returned for one report-data value: the
// platform's signed report and what verifying it offline needs besides the
// verifier's pinned roots of trust.
type Evidence struct {
	Provider   string // "tpm", "sev-snp", "tdx", "nitro"
	Report     []byte // the signed report: a TPM quote, an SNP or TDX report, a Nitro document
	Collateral []byte // the TPM's attestation key and event log, certificate chains, ...
}

// A Provider asks the platform it runs on for evidence over report data.
type Provider interface {
	// Name is the provider's name, the Evidence's Provider.
	Name() string
	// Attest returns the platform's evidence with reportData bound in it.
	Attest(reportData ReportData) (Evidence, error)
}
