package attest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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
//
// Debug platforms are always refused; there is no directive to allow them.
type Policy struct {
	Origin          string
	AttestationKeys []string          // TPM attestation keys (TPMRoots)
	Releases        map[string]string // engine digest → release name
	Signers         []string          // sorted verifier keys
	Threshold       int
	MaxGap          time.Duration
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
	case len(p.AttestationKeys) == 0:
		return nil, fmt.Errorf("%s: no root of trust (tpm-ak)", file)
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
