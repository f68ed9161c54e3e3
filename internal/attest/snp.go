package attest

import (
	"bytes"
	"encoding/hex"
	"slices"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
)

// SNPRoots are what a verifier trusts for AMD SEV-SNP evidence. AMD's root
// and intermediate keys (ARK, ASK) are the ones github.com/google/go-sev-guest
// ships, per product line; the policy pins the launch measurements and the
// minimum TCB.
type SNPRoots struct {
	Measurements []string     // hex of the allowed 48-byte launch measurements
	MinimumTCB   kds.TCBParts // the lowest acceptable TCB (reported and committed)
	Now          time.Time    // when to check the certificates' validity (default now)
}

// SNPMeasurement is what SEV-SNP evidence that verified says.
type SNPMeasurement struct {
	Measurement string // hex launch measurement
	ChipID      string
	TCB         kds.TCBParts // the reported TCB
	Policy      abi.SnpPolicy
}

// CheckSNP verifies the signature of SEV-SNP evidence offline: Report is
// the raw attestation report (1184 bytes), Collateral the VCEK certificate
// (DER) the AMD KDS issued for the chip and TCB; the ASK and ARK are the
// pinned AMD roots. It judges nothing else: VerifySNP does.
func CheckSNP(ev Evidence, now time.Time) (*spb.Report, error) {
	if ev.Provider != "sev-snp" {
		return nil, refuse("provider %q, want sev-snp", ev.Provider)
	}
	rep, err := abi.ReportToProto(ev.Report)
	if err != nil {
		return nil, refuse("sev-snp report: %v", err)
	}
	att := &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{VcekCert: ev.Collateral}}
	if now.IsZero() {
		now = time.Now()
	}
	if err := verify.SnpAttestation(att, &verify.Options{DisableCertFetching: true, Now: now}); err != nil {
		return nil, refuse("sev-snp: %v", err)
	}
	return rep, nil
}

// VerifySNP verifies SEV-SNP evidence offline (CheckSNP) and holds it to
// roots: REPORT_DATA is reportData, the launch measurement is allowed, the
// TCB is at least the minimum, and the guest policy forbids debugging.
func VerifySNP(ev Evidence, reportData [abi.ReportDataSize]byte, roots SNPRoots) (*SNPMeasurement, error) {
	rep, err := CheckSNP(ev, roots.Now)
	if err != nil {
		return nil, err
	}
	pol, err := abi.ParseSnpPolicy(rep.GetPolicy())
	if err != nil {
		return nil, refuse("sev-snp policy: %v", err)
	}
	if !bytes.Equal(rep.GetReportData(), reportData[:]) {
		return nil, refuse("sev-snp: REPORT_DATA %x is not the statement's", rep.GetReportData())
	}
	m := hex.EncodeToString(rep.GetMeasurement())
	if !slices.Contains(roots.Measurements, m) {
		return nil, refuse("sev-snp: launch measurement %s is not allowed", m)
	}
	att := &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{VcekCert: ev.Collateral}}
	if err := validate.SnpAttestation(att, &validate.Options{
		GuestPolicy:      abi.SnpPolicy{SMT: pol.SMT, MigrateMA: pol.MigrateMA, Debug: pol.Debug, ABIMajor: pol.ABIMajor, ABIMinor: pol.ABIMinor},
		ReportData:       reportData[:],
		Measurement:      rep.GetMeasurement(),
		MinimumTCB:       roots.MinimumTCB,
		MinimumLaunchTCB: roots.MinimumTCB,
	}); err != nil {
		return nil, refuse("sev-snp: %v", err)
	}
	if pol.Debug {
		return nil, refuse("sev-snp: the guest policy allows debugging: the host can read the guest's memory")
	}
	return &SNPMeasurement{Measurement: m, ChipID: hex.EncodeToString(rep.GetChipId()),
		TCB: kds.DecomposeTCBVersion(kds.TCBVersion(rep.GetReportedTcb())), Policy: pol}, nil
}
