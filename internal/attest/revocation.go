package attest

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"time"
)

// TDX collateral. A TDX quote carries its own PCK certificate chain, so
// its collateral is the header line alone (an attestation entry needs
// some collateral), or carries the certificate revocation lists Intel's
// PCS publishes, fetched by the producer (or by whoever archives the log)
// while they were current:
//
//	rulelock tdx collateral v1
//	pck-crl <base64 DER: the CRL of the PCK CA that issued the PCK certificate>
//	root-crl <base64 DER: the Intel SGX Root CA's CRL>
//
// When present, CheckTDX checks both: signed by the chain's PCK CA and by
// the pinned root, current at the time of the check, and listing neither
// the PCK certificate nor the PCK CA. Offline, like everything else here:
// nothing is fetched.
type tdxCollateral struct {
	PCKCRL, RootCRL []byte
}

const tdxCollateralHeader = "rulelock tdx collateral v1"

func (c *tdxCollateral) marshal() []byte {
	if c.PCKCRL == nil && c.RootCRL == nil {
		return []byte(tdxCollateralHeader + "\n")
	}
	return fmt.Appendf(nil, "%s\npck-crl %s\nroot-crl %s\n", tdxCollateralHeader,
		base64.StdEncoding.EncodeToString(c.PCKCRL), base64.StdEncoding.EncodeToString(c.RootCRL))
}

// TDXCollateral returns the collateral that carries a PCK CRL and the root
// CA's CRL (both DER), or, both nil, none.
func TDXCollateral(pckCRL, rootCRL []byte) []byte {
	return (&tdxCollateral{PCKCRL: pckCRL, RootCRL: rootCRL}).marshal()
}

// parseTDXCollateral parses a TDX collateral: nil for none (empty, or
// the header line alone).
func parseTDXCollateral(b []byte) (*tdxCollateral, error) {
	if len(b) == 0 || string(b) == tdxCollateralHeader+"\n" {
		return nil, nil
	}
	f, err := lines(b, tdxCollateralHeader, "pck-crl", "root-crl")
	if err != nil {
		return nil, fmt.Errorf("tdx collateral: %w", err)
	}
	return &tdxCollateral{PCKCRL: f[0], RootCRL: f[1]}, nil
}

// pemChain parses a PEM certificate chain, leaf first.
func pemChain(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// checkRevocation checks a chain leaf ← ca ← root against the CRLs of ca
// (caCRL) and of root (rootCRL), DER: each is signed by its issuer,
// current at now (thisUpdate ≤ now ≤ nextUpdate), and does not list the
// certificate it covers.
func checkRevocation(leaf, ca, root *x509.Certificate, caCRL, rootCRL []byte, now time.Time) error {
	for _, c := range []struct {
		name   string
		der    []byte
		issuer *x509.Certificate
		cert   *x509.Certificate
	}{{"PCK CA CRL", caCRL, ca, leaf}, {"root CA CRL", rootCRL, root, ca}} {
		crl, err := x509.ParseRevocationList(c.der)
		if err != nil {
			return refuse("%s: %v", c.name, err)
		}
		if err := crl.CheckSignatureFrom(c.issuer); err != nil {
			return refuse("%s: not signed by %s: %v", c.name, c.issuer.Subject.CommonName, err)
		}
		if now.Before(crl.ThisUpdate) || crl.NextUpdate.IsZero() || now.After(crl.NextUpdate) {
			return refuse("%s: not current at %s (this update %s, next update %s)", c.name,
				now.UTC().Format(time.RFC3339), crl.ThisUpdate.UTC().Format(time.RFC3339), crl.NextUpdate.UTC().Format(time.RFC3339))
		}
		for _, r := range crl.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(c.cert.SerialNumber) == 0 {
				return refuse("%s: %s (serial %x) was revoked on %s", c.name, c.cert.Subject.CommonName, c.cert.SerialNumber,
					r.RevocationTime.UTC().Format(time.RFC3339))
			}
		}
	}
	return nil
}
