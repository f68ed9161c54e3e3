package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// ErrEvidence is wrapped by every error of a verification that looked at
// the evidence and refused it.
var ErrEvidence = errors.New("attestation evidence refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrEvidence, fmt.Sprintf(format, a...))
}

// TPMRoots are what a verifier trusts for TPM evidence: the attestation
// keys it enrolled, each as the hex SHA-256 of its public key in PKIX DER
// (TPM.AttestationKey prints it).
type TPMRoots struct {
	AttestationKeys []string
}

// TPMMeasurement is what TPM evidence that verified says.
type TPMMeasurement struct {
	AttestationKey string   // the pinned key that signed the quote
	Engine         string   // the engine event's digest
	Key            string   // the per-boot key's verifier key
	Bundles        []string // the bundle events, in order
	ResetCount     uint32   // the TPM's reset count (a reboot increments it)
	RestartCount   uint32
	Clock          uint64 // milliseconds the TPM was powered, as of the quote
}

// VerifyTPM verifies TPM evidence offline against stmt and roots: the
// attestation key is pinned; the quote is a quote, signed by that key,
// over the two PCRs the collateral names, with extraData = stmt's report
// data; replaying the event log from its start values gives the quoted
// PCR digest; the identity PCR holds exactly an engine event and then a key
// event; and the statement's engine, key and bundle are the measured ones
// (its bundle is the last bundle event, none when there was none).
func VerifyTPM(ev Evidence, stmt *Statement, roots TPMRoots) (*TPMMeasurement, error) {
	if ev.Provider != "tpm" {
		return nil, refuse("provider %q, want tpm", ev.Provider)
	}
	rd, err := stmt.ReportData()
	if err != nil {
		return nil, err
	}
	c, err := parseTPMCollateral(ev.Collateral)
	if err != nil {
		return nil, refuse("%v", err)
	}
	q, err := parseTPMQuote(ev.Report)
	if err != nil {
		return nil, refuse("%v", err)
	}
	pub, pin, err := parseAK(c.AK)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if !slices.Contains(roots.AttestationKeys, pin) {
		return nil, refuse("attestation key %s is not pinned", pin)
	}
	if err := checkQuoteSignature(pub, q); err != nil {
		return nil, err
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil || !bytes.Equal(tpm2.Marshal(*att), q.Attest) {
		return nil, refuse("quote: not a TPMS_ATTEST")
	}
	if att.Type != tpm2.TPMSTAttestQuote {
		return nil, refuse("quote: attestation type %#x, not a quote", att.Type)
	}
	if !bytes.Equal(att.ExtraData.Buffer, rd[:]) {
		return nil, refuse("quote: extraData %x is not the statement's hash %x (a stale or replayed quote, or another statement)", att.ExtraData.Buffer, rd[:])
	}
	info, err := att.Attested.Quote()
	if err != nil {
		return nil, refuse("quote: %v", err)
	}
	want := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(c.Log.PCRs[0], c.Log.PCRs[1]),
	}}}
	if !bytes.Equal(tpm2.Marshal(info.PCRSelect), tpm2.Marshal(want)) {
		return nil, refuse("quote: selects other PCRs than the event log's %d and %d", c.Log.PCRs[0], c.Log.PCRs[1])
	}
	v := c.Log.Replay()
	lo, hi := v[0], v[1]
	if c.Log.PCRs[0] > c.Log.PCRs[1] {
		lo, hi = hi, lo
	}
	replayed := sha256.Sum256(append(lo[:], hi[:]...))
	if !bytes.Equal(info.PCRDigest.Buffer, replayed[:]) {
		return nil, refuse("quote: the PCRs are not what the event log replays to (an event extended outside the log)")
	}
	m, err := measurement(c.Log)
	if err != nil {
		return nil, err
	}
	m.AttestationKey = pin
	m.ResetCount, m.RestartCount, m.Clock = att.ClockInfo.ResetCount, att.ClockInfo.RestartCount, att.ClockInfo.Clock
	if err := m.matches(stmt); err != nil {
		return nil, err
	}
	return m, nil
}

// measurement reads the identity events (engine then key, nothing else)
// and the bundle events of l.
func measurement(l EventLog) (*TPMMeasurement, error) {
	m := &TPMMeasurement{}
	var identity []Event
	for _, e := range l.Events {
		if e.Kind == EventBundle {
			m.Bundles = append(m.Bundles, e.Data)
		} else {
			identity = append(identity, e)
		}
	}
	if len(identity) != 2 || identity[0].Kind != EventEngine || identity[1].Kind != EventKey {
		return nil, refuse("event log: the identity PCR must hold an engine event, then a key event, and nothing else")
	}
	m.Engine, m.Key = identity[0].Data, identity[1].Data
	return m, nil
}

func (m *TPMMeasurement) matches(s *Statement) error {
	bundle := ""
	if n := len(m.Bundles); n > 0 {
		bundle = m.Bundles[n-1]
	}
	switch {
	case m.Engine != s.Engine:
		return refuse("statement engine %s, measured %s", s.Engine, m.Engine)
	case m.Key != s.Key:
		return refuse("statement key %s, measured %s", s.Key, m.Key)
	case bundle != s.Bundle:
		return refuse("statement bundle %q, measured %q", s.Bundle, bundle)
	}
	return nil
}

// parseAK returns the attestation key of a TPMT_PUBLIC and its pin: the
// hex SHA-256 of its PKIX DER. Only a restricted ECDSA P-256 signing key
// is accepted.
func parseAK(b []byte) (*ecdsa.PublicKey, string, error) {
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil || !bytes.Equal(tpm2.Marshal(*p), b) {
		return nil, "", errors.New("attestation key: not a TPMT_PUBLIC")
	}
	a := p.ObjectAttributes
	if p.Type != tpm2.TPMAlgECC || !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.SensitiveDataOrigin {
		return nil, "", errors.New("attestation key: not a restricted, TPM-generated signing key")
	}
	parms, err := p.Parameters.ECCDetail()
	if err != nil {
		return nil, "", fmt.Errorf("attestation key: %v", err)
	}
	point, err := p.Unique.ECC()
	if err != nil {
		return nil, "", fmt.Errorf("attestation key: %v", err)
	}
	pub, err := tpm2.ECDSAPub(parms, point)
	if err != nil || parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, "", errors.New("attestation key: not an ECDSA P-256 key")
	}
	pin, err := pinOf(pub)
	return pub, pin, err
}

func pinOf(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("attestation key: %v", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

func akPin(tpmtPublic []byte) (string, error) {
	_, pin, err := parseAK(tpmtPublic)
	return pin, err
}

func checkQuoteSignature(pub *ecdsa.PublicKey, q *tpmQuote) error {
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](q.Signature)
	if err != nil || !bytes.Equal(tpm2.Marshal(*sig), q.Signature) {
		return refuse("quote: not a TPMT_SIGNATURE")
	}
	if sig.SigAlg != tpm2.TPMAlgECDSA {
		return refuse("quote: signature algorithm %#x, want ECDSA", sig.SigAlg)
	}
	e, err := sig.Signature.ECDSA()
	if err != nil || e.Hash != tpm2.TPMAlgSHA256 {
		return refuse("quote: not an ECDSA SHA-256 signature")
	}
	h := sha256.Sum256(q.Attest)
	r := new(big.Int).SetBytes(e.SignatureR.Buffer)
	s := new(big.Int).SetBytes(e.SignatureS.Buffer)
	if !ecdsa.Verify(pub, h[:], r, s) {
		return refuse("quote: the attestation key's signature does not verify")
	}
	return nil
}
