package attest

import (
	"bytes"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"slices"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	"github.com/google/go-tdx-guest/verify"
)

// TDXRoots are what a verifier trusts for Intel TDX evidence. Intel's SGX
// root CA is the one github.com/google/go-tdx-guest ships; the policy
// pins the TD measurements and the minimum TCB.
type TDXRoots struct {
	MrTDs            []string  // hex of the allowed MRTD (the TD's initial contents)
	MinimumTeeTcbSvn []byte    // 16 bytes, each component a minimum (nil: any)
	Now              time.Time // when to check the certificates' validity (default now)
	// RequireCRL refuses evidence whose collateral carries no CRLs
	// (TDXCollateral); CRLs that are present are checked either way.
	RequireCRL bool
}

// TDXMeasurement is what TDX evidence that verified says.
type TDXMeasurement struct {
	MrTD  string
	RTMRs []string
}

// intelRoot is Intel's SGX Root CA, the root of every PCK certificate
// chain (the copy go-tdx-guest ships as verify/trusted_root.pem; SHA-256
// fingerprint in docs/attestation.md). Pinned here rather than taken from
// the library's default so that the pin is this repository's.
//
//go:embed roots/intel-sgx-root-ca.pem
var intelRootPEM []byte

func intelRoots() (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(intelRootPEM) {
		return nil, refuse("tdx: the pinned Intel root does not parse")
	}
	return p, nil
}

// tdAttributesDebug is TUD.DEBUG, bit 0 of TD_ATTRIBUTES: the TD runs in
// debug mode and the host can read and change its state.
const tdAttributesDebug = 0x01

// CheckTDX verifies the signature of a TDX quote (version 4) offline: the
// quote carries its PCK certificate chain, which must lead to the pinned
// Intel root, and the QE report that certifies the attestation key. When
// the collateral carries CRLs (TDXCollateral) the chain is checked against
// them (checkRevocation); empty collateral checks no revocation. It judges
// nothing else: VerifyTDX does.
func CheckTDX(ev Evidence, now time.Time) (*pb.QuoteV4, error) {
	if ev.Provider != "tdx" {
		return nil, refuse("provider %q, want tdx", ev.Provider)
	}
	q, err := abi.QuoteToProto(ev.Report)
	if err != nil {
		return nil, refuse("tdx quote: %v", err)
	}
	quote, ok := q.(*pb.QuoteV4)
	if !ok {
		return nil, refuse("tdx quote: not a version 4 quote")
	}
	if now.IsZero() {
		now = time.Now()
	}
	roots, err := intelRoots()
	if err != nil {
		return nil, err
	}
	if err := verify.TdxQuote(quote, &verify.Options{Now: now, TrustedRoots: roots}); err != nil {
		return nil, refuse("tdx: %v", err)
	}
	// One encoding per quote: bytes after the quote's structure, which
	// the parser keeps aside and no signature covers, are refused.
	if n := len(quote.GetExtraBytes()); n > 0 {
		return nil, refuse("tdx: %d bytes after the quote, signed by nothing", n)
	}
	if again, err := abi.QuoteToAbiBytes(quote); err != nil || !bytes.Equal(again, ev.Report) {
		return nil, refuse("tdx: the quote is not in its one encoding")
	}
	pck := quote.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	if err := onlyCertificates(pck); err != nil {
		return nil, err
	}
	col, err := parseTDXCollateral(ev.Collateral)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if col != nil {
		// The chain verified above (leaf, PCK CA, the pinned root).
		chain, err := pemChain(pck)
		if err != nil || len(chain) != 3 {
			return nil, refuse("tdx: the PCK chain is not leaf, PCK CA, root (%v)", err)
		}
		if err := checkRevocation(chain[0], chain[1], chain[2], col.PCKCRL, col.RootCRL, now); err != nil {
			return nil, err
		}
	}
	return quote, nil
}

// VerifyTDX verifies a TDX quote offline (CheckTDX) and holds it to roots:
// REPORT_DATA is reportData, MRTD is allowed, the TEE TCB SVN is at least
// the minimum, and the TD is not a debug TD.
func VerifyTDX(ev Evidence, reportData [abi.ReportDataSize]byte, roots TDXRoots) (*TDXMeasurement, error) {
	if c, err := parseTDXCollateral(ev.Collateral); roots.RequireCRL && err == nil && c == nil {
		return nil, refuse("tdx: the policy requires CRLs (tdx-require-crl) and the evidence carries none")
	}
	q, err := CheckTDX(ev, roots.Now)
	if err != nil {
		return nil, err
	}
	body := q.GetTdQuoteBody()
	if !bytes.Equal(body.GetReportData(), reportData[:]) {
		return nil, refuse("tdx: REPORT_DATA %x is not the statement's", body.GetReportData())
	}
	mrtd := hex.EncodeToString(body.GetMrTd())
	if !slices.Contains(roots.MrTDs, mrtd) {
		return nil, refuse("tdx: MRTD %s is not allowed", mrtd)
	}
	if err := validate.TdxQuote(q, &validate.Options{TdQuoteBodyOptions: validate.TdQuoteBodyOptions{
		MinimumTeeTcbSvn: roots.MinimumTeeTcbSvn, ReportData: reportData[:], MrTd: body.GetMrTd(),
	}}); err != nil {
		return nil, refuse("tdx: %v", err)
	}
	if a := body.GetTdAttributes(); len(a) == 0 || a[0]&tdAttributesDebug != 0 {
		return nil, refuse("tdx: a debug TD: the host can read and change its state")
	}
	m := &TDXMeasurement{MrTD: mrtd}
	for _, r := range body.GetRtmrs() {
		m.RTMRs = append(m.RTMRs, hex.EncodeToString(r))
	}
	return m, nil
}

// onlyCertificates refuses a PCK chain with anything but PEM certificates
// (and the NUL that ends a real one): bytes that no signature covers would
// let one piece of evidence have many encodings.
func onlyCertificates(chain []byte) error {
	rest := chain
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return refuse("tdx: a %s block in the PCK certificate chain", b.Type)
		}
	}
	if len(bytes.Trim(rest, "\x00\n")) > 0 {
		return refuse("tdx: %d bytes after the PCK certificate chain, signed by nothing", len(rest))
	}
	return nil
}
