package attest

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-sev-guest/kds"
	"golang.org/x/mod/sumdb/note"
)

// A Policy is what `rulelock verify --attestation` holds a log to. Its file
// is one directive a line; blank lines and lines starting with # are
// ignored:
//
//	origin <the log's origin>
//	tpm-ak <64 hex: SHA-256 of an enrolled TPM attestation key, PKIX DER>   (repeatable)
//	release <name> sha256:<hex of the engine binary built from that release> (repeatable)
//	signer <verifier key of a bundle signer>                                  (repeatable)
//	threshold <M>
//	max-gap <duration: the longest a decision may follow the last attestation, e.g. 1h>
//	snp-measurement <96 hex: an allowed SEV-SNP launch measurement>           (repeatable)
//	snp-min-tcb <16 hex: the lowest SEV-SNP TCB version, as the report encodes it>
//	tdx-mrtd <96 hex: an allowed TDX MRTD>                                     (repeatable)
//	tdx-min-tcb <32 hex: the lowest TDX TEE_TCB_SVN, 16 components>
//	tdx-require-crl   (TDX evidence must carry the PCK and root CRLs, and they are checked)
//	nitro-pcr0 <96 hex: an allowed Nitro enclave image>                        (repeatable)
//
// A policy needs at least one root of trust: tpm-ak, snp-measurement,
// tdx-mrtd or nitro-pcr0; evidence of a platform it names none for is
// refused.
// Debug platforms are always refused; there is no directive to allow them.
type Policy struct {
	Origin          string
	AttestationKeys []string          // TPM attestation keys (TPMRoots)
	Releases        map[string]string // engine digest → release name
	Signers         []string          // sorted verifier keys
	Threshold       int
	MaxGap          time.Duration
	SNP             SNPRoots
	TDX             TDXRoots
	Nitro           NitroRoots
}

// ParsePolicy parses a policy file; errors name file:line.
func ParsePolicy(file string, b []byte) (*Policy, error) {
	p := &Policy{Releases: map[string]string{}}
	seen := map[string]bool{}
	for n, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		errf := func(format string, a ...any) error {
			return fmt.Errorf("%s:%d: %s", file, n+1, fmt.Sprintf(format, a...))
		}
		f := strings.Fields(line)
		once := func() error {
			if seen[f[0]] {
				return errf("%s given twice", f[0])
			}
			seen[f[0]] = true
			return nil
		}
		switch {
		case f[0] == "origin" && len(f) == 2:
			if err := once(); err != nil {
				return nil, err
			}
			p.Origin = f[1]
		case f[0] == "tpm-ak" && len(f) == 2:
			if !validHex(f[1]) {
				return nil, errf("tpm-ak: want 64 lowercase hex digits")
			}
			p.AttestationKeys = append(p.AttestationKeys, f[1])
		case f[0] == "release" && len(f) == 3:
			if !validDigest(f[2]) {
				return nil, errf("release %s: want sha256:<64 hex>", f[1])
			}
			p.Releases[f[2]] = f[1]
		case f[0] == "signer" && len(f) == 2:
			if _, err := note.NewVerifier(f[1]); err != nil {
				return nil, errf("signer: %v", err)
			}
			p.Signers = append(p.Signers, f[1])
		case f[0] == "snp-measurement" && len(f) == 2 && hexLen(f[1], 48):
			p.SNP.Measurements = append(p.SNP.Measurements, f[1])
		case f[0] == "snp-min-tcb" && len(f) == 2 && hexLen(f[1], 8):
			if err := once(); err != nil {
				return nil, err
			}
			v, _ := strconv.ParseUint(f[1], 16, 64)
			p.SNP.MinimumTCB = kds.DecomposeTCBVersion(kds.TCBVersion(v))
		case f[0] == "tdx-mrtd" && len(f) == 2 && hexLen(f[1], 48):
			p.TDX.MrTDs = append(p.TDX.MrTDs, f[1])
		case f[0] == "tdx-min-tcb" && len(f) == 2 && hexLen(f[1], 16):
			if err := once(); err != nil {
				return nil, err
			}
			p.TDX.MinimumTeeTcbSvn, _ = hex.DecodeString(f[1])
		case f[0] == "tdx-require-crl" && len(f) == 1:
			if err := once(); err != nil {
				return nil, err
			}
			p.TDX.RequireCRL = true
		case f[0] == "nitro-pcr0" && len(f) == 2 && hexLen(f[1], 48):
			p.Nitro.PCR0s = append(p.Nitro.PCR0s, f[1])
		case f[0] == "threshold" && len(f) == 2:
			if err := once(); err != nil {
				return nil, err
			}
			m, err := strconv.Atoi(f[1])
			if err != nil || m < 1 {
				return nil, errf("threshold: want a positive number")
			}
			p.Threshold = m
		case f[0] == "max-gap" && len(f) == 2:
			if err := once(); err != nil {
				return nil, err
			}
			d, err := time.ParseDuration(f[1])
			if err != nil || d <= 0 {
				return nil, errf("max-gap: want a positive duration such as 1h")
			}
			p.MaxGap = d
		default:
			return nil, errf("unknown or malformed directive %q", line)
		}
	}
	p.Signers = sortedSigners(p.Signers)
	switch {
	case p.Origin == "":
		return nil, fmt.Errorf("%s: no origin", file)
	case len(p.Releases) == 0:
		return nil, fmt.Errorf("%s: no release: name the engine digests this log may be written by", file)
	case len(p.AttestationKeys)+len(p.SNP.Measurements)+len(p.TDX.MrTDs)+len(p.Nitro.PCR0s) == 0:
		return nil, fmt.Errorf("%s: no root of trust (tpm-ak, snp-measurement, tdx-mrtd or nitro-pcr0)", file)
	case p.MaxGap == 0:
		return nil, fmt.Errorf("%s: no max-gap", file)
	case len(p.Signers) > 0 && p.Threshold == 0, p.Threshold > len(p.Signers):
		return nil, fmt.Errorf("%s: threshold %d of %d signers", file, p.Threshold, len(p.Signers))
	}
	return p, nil
}

// signerNames returns the key names of the policy's signers.
func (p *Policy) signerNames() []string {
	var names []string
	for _, k := range p.Signers {
		v, _ := note.NewVerifier(k) // checked by ParsePolicy
		names = append(names, v.Name())
	}
	slices.Sort(names)
	return names
}

// hexLen reports whether s is n bytes in lowercase hex.
func hexLen(s string, n int) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == n && strings.ToLower(s) == s
}
