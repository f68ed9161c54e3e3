package attest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Enrolment binds a TPM's attestation key to its endorsement key (EK),
// whose certificate the TPM's manufacturer signed, once, before a verifier
// pins the attestation key (the policy's tpm-ak):
//
//  1. the gateway's host reads the EK certificate from the TPM and the
//     attestation key's public area (TPM.EnrolmentRequest);
//  2. the verifier checks the EK certificate's chain to a pinned
//     manufacturer root and that the attestation key is a restricted,
//     TPM-generated signing key, and encrypts a fresh secret to the EK
//     bound to the attestation key's name (NewChallenge: TPM2 credential
//     protection, go-tpm's CreateCredential);
//  3. the host's TPM recovers the secret only if it holds that EK's private
//     half and has that very attestation key loaded (TPM.Answer:
//     TPM2_ActivateCredential);
//  4. the verifier compares (Challenge.Check) and pins the attestation key.
//
// It is interactive by nature: the secret must be one the host cannot
// know in advance, so the verifier (or a CA it trusts) must pick it. An EK
// certificate carried in the log instead would prove nothing offline: it is
// public, and any attestation key could be shown beside it.

// ekCertIndex is the NV index of the RSA 2048 EK certificate (TCG EK
// Credential Profile for TPM Family 2.0, "Low Range").
const ekCertIndex = 0x01c00002

// An EnrolmentRequest is what a TPM's host sends a verifier to enrol its
// attestation key.
type EnrolmentRequest struct {
	EKCert []byte // DER: the RSA 2048 EK certificate from the TPM's NV
	AK     []byte // the attestation key's TPMT_PUBLIC
}

// EnrolmentRequest reads the EK certificate from the TPM's NV index
// 0x01c00002 (the RSA 2048 EK certificate).
func (t *TPM) EnrolmentRequest() (*EnrolmentRequest, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cert, err := readNV(t.tpm, ekCertIndex)
	if err != nil {
		return nil, fmt.Errorf("tpm: EK certificate: %w", err)
	}
	return &EnrolmentRequest{EKCert: cert, AK: t.akP}, nil
}

// readNV reads an NV index whole, in chunks the TPM accepts.
func readNV(tpm transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(tpm)
	if err != nil {
		return nil, err
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	const chunk = 512 // at most TPM_PT_NV_BUFFER_MAX on every TPM seen
	var out []byte
	for off := uint16(0); off < pub.DataSize; {
		n := min(chunk, pub.DataSize-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
			Size:       n, Offset: off,
		}.Execute(tpm)
		if err != nil {
			return nil, err
		}
		out = append(out, rsp.Data.Buffer...)
		off += n
	}
	return out, nil
}

// EKRoots are the TPM manufacturers' certificates a verifier trusts for EK
// certificates: Roots pinned, Intermediates only to build a chain.
type EKRoots struct {
	Roots         *x509.CertPool
	Intermediates *x509.CertPool
}

// A Challenge is a secret encrypted to an EK and bound to one attestation
// key's name (TPMS_ID_OBJECT and the encrypted seed), for TPM.Answer.
type Challenge struct {
	Credential []byte
	Secret     []byte
	answer     []byte // the verifier's secret (MarshalSecret, never Marshal)
	ak         []byte // the attestation key it enrols (TPMT_PUBLIC)
}

// NewChallenge checks req (the EK certificate chains to roots at now, its
// key is RSA 2048; the attestation key is a restricted, TPM-generated
// ECDSA P-256 signing key) and returns a challenge only the TPM holding
// that EK, with that attestation key loaded, can answer.
func NewChallenge(req *EnrolmentRequest, roots EKRoots, now time.Time) (*Challenge, error) {
	ek, err := checkEKCert(req.EKCert, roots, now)
	if err != nil {
		return nil, err
	}
	if _, _, err := parseAK(req.AK); err != nil {
		return nil, refuse("%v", err)
	}
	ak, err := tpm2.Unmarshal[tpm2.TPMTPublic](req.AK)
	if err != nil {
		return nil, refuse("attestation key: %v", err)
	}
	name, err := tpm2.ObjectName(ak)
	if err != nil {
		return nil, refuse("attestation key: %v", err)
	}
	key, err := tpm2.ImportEncapsulationKey(ekPublic(ek))
	if err != nil {
		return nil, refuse("EK: %v", err)
	}
	answer := make([]byte, 32)
	if _, err := rand.Read(answer); err != nil {
		return nil, err
	}
	cred, secret, err := tpm2.CreateCredential(rand.Reader, key, name.Buffer, answer)
	if err != nil {
		return nil, fmt.Errorf("attest: challenge: %w", err)
	}
	return &Challenge{Credential: cred, Secret: secret, answer: answer, ak: req.AK}, nil
}

// checkEKCert verifies an EK certificate's chain to roots and returns its
// RSA 2048 public key.
func checkEKCert(der []byte, roots EKRoots, now time.Time) (*rsa.PublicKey, error) {
	if roots.Roots == nil {
		return nil, refuse("no TPM manufacturer root is pinned")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, refuse("EK certificate: %v", err)
	}
	// An EK certificate's subject is empty and its subject alternative
	// name (the TPM's manufacturer, model, version) is then critical
	// (TCG EK Credential Profile 3.2.9); Go's verifier handles a
	// critical SAN only for names it knows. The chain is what is checked
	// here; the SAN says nothing the pinned root does not.
	var unhandled []asn1.ObjectIdentifier
	for _, id := range cert.UnhandledCriticalExtensions {
		if !id.Equal(oidSubjectAltName) {
			unhandled = append(unhandled, id)
		}
	}
	cert.UnhandledCriticalExtensions = unhandled
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots.Roots, Intermediates: roots.Intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, refuse("EK certificate: %v", err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 || pub.E != 65537 {
		return nil, refuse("EK certificate: not an RSA 2048 key with exponent 65537")
	}
	return pub, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// ekPublic is the TPMT_PUBLIC of the standard RSA 2048 EK (go-tpm's
// RSAEKTemplate, the TCG's template L-1) with key pub.
func ekPublic(pub *rsa.PublicKey) *tpm2.TPMTPublic {
	p := tpm2.RSAEKTemplate
	p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: pub.N.FillBytes(make([]byte, 256))})
	return &p
}

// Check compares a TPM's answer with the challenge's secret and returns the
// pin (TPMRoots.AttestationKeys) of the attestation key now enrolled.
func (c *Challenge) Check(answer []byte) (string, error) {
	if len(c.answer) == 0 || subtle.ConstantTimeCompare(answer, c.answer) != 1 {
		return "", refuse("the TPM did not answer the enrolment challenge: its EK or attestation key is not the one enrolled")
	}
	return akPin(c.ak)
}

// MarshalSecret encodes what the verifier keeps, privately, between the
// challenge and the answer:
//
//	rulelock tpm enrolment secret v1
//	answer <base64 secret>
//	ak <base64 TPMT_PUBLIC of the attestation key being enrolled>
func (c *Challenge) MarshalSecret() []byte {
	return fmt.Appendf(nil, "rulelock tpm enrolment secret v1\nanswer %s\nak %s\n",
		base64.StdEncoding.EncodeToString(c.answer), base64.StdEncoding.EncodeToString(c.ak))
}

// ParseSecret parses MarshalSecret's encoding into a challenge that can
// Check an answer.
func ParseSecret(b []byte) (*Challenge, error) {
	f, err := lines(b, "rulelock tpm enrolment secret v1", "answer", "ak")
	if err != nil {
		return nil, fmt.Errorf("enrolment secret: %w", err)
	}
	return &Challenge{answer: f[0], ak: f[1]}, nil
}

// MarshalAnswer encodes a TPM's answer for the verifier:
//
//	rulelock tpm answer v1
//	answer <base64 secret>
func MarshalAnswer(answer []byte) []byte {
	return fmt.Appendf(nil, "rulelock tpm answer v1\nanswer %s\n", base64.StdEncoding.EncodeToString(answer))
}

// ParseAnswer parses MarshalAnswer's encoding.
func ParseAnswer(b []byte) ([]byte, error) {
	f, err := lines(b, "rulelock tpm answer v1", "answer")
	if err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	return f[0], nil
}

// Answer recovers a challenge's secret (TPM2_ActivateCredential): it works
// only on the TPM whose EK the challenge was encrypted to, and only for the
// attestation key it names.
func (t *TPM) Answer(c *Challenge) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: EK: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: ek.ObjectHandle}.Execute(t.tpm)
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: t.ak, Name: t.akN, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: c.Credential},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: c.Secret},
	}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// ekPolicy satisfies the standard EK's policy: PolicySecret(endorsement).
func ekPolicy(tpm transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: nonce}.Execute(tpm)
	return err
}

// Marshal encodes a challenge for the TPM's host:
//
//	rulelock tpm challenge v1
//	credential <base64 TPMS_ID_OBJECT>
//	secret <base64 encrypted seed>
func (c *Challenge) Marshal() []byte {
	return fmt.Appendf(nil, "rulelock tpm challenge v1\ncredential %s\nsecret %s\n",
		base64.StdEncoding.EncodeToString(c.Credential), base64.StdEncoding.EncodeToString(c.Secret))
}

// ParseChallenge parses Challenge.Marshal's encoding (without the
// verifier's secret: the host answers it, the verifier checks).
func ParseChallenge(b []byte) (*Challenge, error) {
	f, err := lines(b, "rulelock tpm challenge v1", "credential", "secret")
	if err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	return &Challenge{Credential: f[0], Secret: f[1]}, nil
}

// Marshal encodes an enrolment request:
//
//	rulelock tpm enrolment v1
//	ek-cert <base64 DER>
//	ak <base64 TPMT_PUBLIC>
func (r *EnrolmentRequest) Marshal() []byte {
	return fmt.Appendf(nil, "rulelock tpm enrolment v1\nek-cert %s\nak %s\n",
		base64.StdEncoding.EncodeToString(r.EKCert), base64.StdEncoding.EncodeToString(r.AK))
}

// ParseEnrolmentRequest parses EnrolmentRequest.Marshal's encoding.
func ParseEnrolmentRequest(b []byte) (*EnrolmentRequest, error) {
	f, err := lines(b, "rulelock tpm enrolment v1", "ek-cert", "ak")
	if err != nil {
		return nil, fmt.Errorf("enrolment request: %w", err)
	}
	return &EnrolmentRequest{EKCert: f[0], AK: f[1]}, nil
}

// lines parses a header line and one "<key> <base64>" line per key, in
// that order, each ending in \n, nothing else.
func lines(b []byte, header string, keys ...string) ([][]byte, error) {
	ls := strings.Split(string(b), "\n")
	if len(ls) != len(keys)+2 || ls[0] != header || ls[len(ls)-1] != "" {
		return nil, errors.New("want the header line, then " + strings.Join(keys, ", ") + ", one a line")
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		v, ok := strings.CutPrefix(ls[i+1], k+" ")
		if !ok {
			return nil, fmt.Errorf("line %d: want %s", i+2, k)
		}
		d, err := base64.StdEncoding.Strict().DecodeString(v)
		if err != nil || len(d) == 0 {
			return nil, fmt.Errorf("line %d: %s: not base64", i+2, k)
		}
		out[i] = d
	}
	return out, nil
}
