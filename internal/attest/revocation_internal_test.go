package attest

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
)

// TestRevokedPCK: a certificate whose serial Intel's real PCK CRL lists is
// refused by checkRevocation (the sample quote's own PCK certificate is
// not on it, so its serial is replaced by the CRL's first entry); the PCK
// CA, not on the root CA's CRL, passes.
func TestRevokedPCK(t *testing.T) {
	raw := bytes.TrimSuffix(testdata.RawQuote, []byte("\nextra bytes(only for testing purpose)\n"))
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pemChain(q.(*pb.QuoteV4).GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain())
	if err != nil || len(chain) != 3 {
		t.Fatalf("chain: %d certificates, %v", len(chain), err)
	}
	at := time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)
	if err := checkRevocation(chain[0], chain[1], chain[2], testdata.PckCrlBody, testdata.RootCrlBody, at); err != nil {
		t.Fatalf("the sample's chain: %v", err)
	}
	crl, err := x509.ParseRevocationList(testdata.PckCrlBody)
	if err != nil || len(crl.RevokedCertificateEntries) == 0 {
		t.Fatalf("the PCK CRL: %v", err)
	}
	revoked := *chain[0]
	revoked.SerialNumber = crl.RevokedCertificateEntries[0].SerialNumber
	err = checkRevocation(&revoked, chain[1], chain[2], testdata.PckCrlBody, testdata.RootCrlBody, at)
	if !errors.Is(err, ErrEvidence) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked serial: %v", err)
	}
	t.Log(err)
}
