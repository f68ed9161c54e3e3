package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// awsNitroRootPEM is the AWS Nitro Enclaves root certificate, SHA-256
// fingerprint 641A0321A3E244EFE456463195D606317ED7CDCC3C1756E09893F3C68F79BB5B
// (as AWS publishes it). Every attestation document's cabundle starts with it.
//
//go:embed roots/aws-nitro-root.pem
var awsNitroRootPEM []byte

// NitroRoots are what a verifier trusts for AWS Nitro Enclaves evidence:
// the pinned AWS root (always) and the allowed enclave images by PCR0.
type NitroRoots struct {
	PCR0s []string // hex of the allowed PCR0 (the enclave image file)
}

// NitroDocument is the payload of a Nitro attestation document.
type NitroDocument struct {
	ModuleID    string          `cbor:"module_id"`
	Digest      string          `cbor:"digest"`
	Timestamp   uint64          `cbor:"timestamp"` // milliseconds since the epoch
	PCRs        map[uint][]byte `cbor:"pcrs"`
	Certificate []byte          `cbor:"certificate"`
	CABundle    [][]byte        `cbor:"cabundle"`
	PublicKey   []byte          `cbor:"public_key"`
	UserData    []byte          `cbor:"user_data"`
	Nonce       []byte          `cbor:"nonce"`
}

// coseSign1 is an untagged COSE_Sign1 (RFC 9052): [protected, unprotected,
// payload, signature].
type coseSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected cbor.RawMessage
	Payload     []byte
	Signature   []byte
}

var nitroDec = func() cbor.DecMode {
	m, err := cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, IndefLength: cbor.IndefLengthForbidden}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// CheckNitro verifies a Nitro attestation document (Evidence.Report, the
// COSE_Sign1 bytes /dev/nsm returned) offline: ES384 (the only algorithm
// Nitro uses), the signing certificate chained through the document's
// cabundle to the pinned AWS root at the document's own time, and the
// COSE signature over the payload. It judges nothing else: VerifyNitro
// does.
func CheckNitro(ev Evidence) (*NitroDocument, error) {
	if ev.Provider != "nitro" {
		return nil, refuse("provider %q, want nitro", ev.Provider)
	}
	var msg coseSign1
	if err := nitroDec.Unmarshal(ev.Report, &msg); err != nil {
		return nil, refuse("nitro: not a COSE_Sign1: %v", err)
	}
	var hdr map[int]int
	if err := nitroDec.Unmarshal(msg.Protected, &hdr); err != nil || len(hdr) != 1 || hdr[1] != -35 {
		return nil, refuse("nitro: the protected header is not {alg: ES384}")
	}
	var doc NitroDocument
	if err := nitroDec.Unmarshal(msg.Payload, &doc); err != nil {
		return nil, refuse("nitro: attestation document: %v", err)
	}
	leaf, err := x509.ParseCertificate(doc.Certificate)
	if err != nil {
		return nil, refuse("nitro: certificate: %v", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() || len(msg.Signature) != 96 {
		return nil, refuse("nitro: not a P-384 ECDSA signature")
	}
	tbs, err := cbor.Marshal([]any{"Signature1", msg.Protected, []byte{}, msg.Payload})
	if err != nil {
		return nil, err
	}
	h := sha512.Sum384(tbs)
	r, s := new(big.Int).SetBytes(msg.Signature[:48]), new(big.Int).SetBytes(msg.Signature[48:])
	if !ecdsa.Verify(pub, h[:], r, s) {
		return nil, refuse("nitro: the COSE signature does not verify")
	}
	if err := nitroChain(&doc, leaf); err != nil {
		return nil, err
	}
	return &doc, nil
}

// nitroChain checks that the document's certificate chains, through its
// cabundle (root first), to the pinned AWS root, at the document's time.
func nitroChain(doc *NitroDocument, leaf *x509.Certificate) error {
	block, _ := pem.Decode(awsNitroRootPEM)
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	if len(doc.CABundle) == 0 || !bytes.Equal(doc.CABundle[0], root.Raw) {
		return refuse("nitro: the cabundle does not start with the pinned AWS Nitro root")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, der := range doc.CABundle[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return refuse("nitro: cabundle: %v", err)
		}
		inter.AddCert(c)
	}
	at := time.UnixMilli(int64(doc.Timestamp))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return refuse("nitro: certificate chain at %s: %v", at.UTC().Format(time.RFC3339), err)
	}
	return nil
}

// VerifyNitro verifies a Nitro attestation document offline (CheckNitro)
// and holds it to roots: user_data is reportData, the enclave is not in
// debug mode (a debug enclave's PCR0–2 are all zeros, and its memory is
// open to the parent instance), and PCR0 is allowed.
func VerifyNitro(ev Evidence, reportData ReportData, roots NitroRoots) (*NitroDocument, error) {
	doc, err := CheckNitro(ev)
	if err != nil {
		return nil, err
	}
	for i := uint(0); i < 3; i++ {
		if p := doc.PCRs[i]; len(p) == 0 || !slices.ContainsFunc(p, func(b byte) bool { return b != 0 }) {
			return nil, refuse("nitro: PCR%d is all zeros: a debug-mode enclave", i)
		}
	}
	if !bytes.Equal(doc.UserData, reportData[:]) {
		return nil, refuse("nitro: user_data %x is not the statement's", doc.UserData)
	}
	if pcr0 := hex.EncodeToString(doc.PCRs[0]); !slices.Contains(roots.PCR0s, pcr0) {
		return nil, refuse("nitro: PCR0 %s is not allowed", pcr0)
	}
	return doc, nil
}
