// Package passkey holds what rulelock knows of an approver's passkey
// (a WebAuthn credential) and checks, offline and with no server state,
// that a WebAuthn assertion signs one approval statement.
//
// # The approval ceremony
//
// An approver votes in the console by signing the approval statement (see
// internal/approval) with their passkey. The WebAuthn challenge the
// server hands the browser is
//
//	challenge = SHA-256(statement text) || nonce
//
// 64 bytes: the hash commits the assertion to exactly this statement
// (request id, action hash, policy digest, expiry, verdict, reason), and
// the nonce is 32 random bytes the server issues for one ceremony: single
// use, bound to the signed-in person and the request (the console checks
// that online; offline it only makes each assertion unique). The
// authenticator signs authenticatorData || SHA-256(clientDataJSON), and
// clientDataJSON carries the challenge, so the signature covers the
// statement. The assertion (credential id, authenticatorData,
// clientDataJSON, signature) and the nonce are recorded with the statement
// in the APPROVAL entry; Verify re-checks them from those bytes and the
// enrolled credential alone:
//
//   - clientDataJSON: type webauthn.get, the challenge above, the origin
//     the credential was enrolled on, not cross-origin;
//   - authenticatorData: the RP ID hash is SHA-256 of that origin's host,
//     the user-present and user-verified flags are set (rulelock requires
//     user verification: the passkey's PIN or biometric, not mere touch);
//   - the signature verifies under the credential's COSE public key (ES256,
//     EdDSA, RS256..., through go-webauthn's webauthncose).
//
// Sign counters are not checked: passkeys synced between devices report
// zero, and a counter would be server state that verify does not have.
//
// # Enrolment and trust
//
// A Credential is enrolled through a one-time link (Store.CreateLink) and
// then recorded in the audit log, as a note entry (EnrolmentNote), before
// it counts: the gateway learns its passkeys again from the log at start
// (like the rest of its state, a fold of the log), and `rulelock verify`
// learns them from the log it checks: the log carries the public key its
// approvals are checked with. An enrolment
// entry is as tamper-evident as every entry (hashed into the tree, signed
// in checkpoints, witnessed), so it cannot be removed or altered later;
// but an insider holding the log's signing key could log a fake enrolment
// for an approver and approve in their name. What pins a passkey to its
// approver beyond the log is the config: an approver's `passkeys:` list of
// Fingerprints (printed when the passkey is enrolled). When the list is
// there, the gateway and the verifier accept only those keys; without it,
// they trust the logged enrolments (and the approver should compare the
// fingerprint the console showed them with the log's).
package passkey

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// NonceSize is the size of the server nonce in a challenge.
const NonceSize = 32

// Size limits.
const (
	MaxCredentialID   = 1023 // WebAuthn's own limit
	MaxPublicKey      = 2048 // COSE key (RSA keys are the large ones)
	MaxClientData     = 2048
	MaxAuthData       = 1024
	MaxSignature      = 1024
	minAuthDataLength = 37 // rpIdHash (32), flags (1), signCount (4)
)

// Authenticator data flags (WebAuthn §6.1).
const (
	flagUserPresent  = 0x01
	flagUserVerified = 0x04
)

// A Credential is an approver's enrolled passkey.
type Credential struct {
	Approver  string `json:"approver"`
	ID        []byte `json:"id"`         // the credential id
	PublicKey []byte `json:"public_key"` // COSE_Key
	// Origin is the console's origin it was enrolled on
	// (scheme://host[:port]); its host is the WebAuthn RP ID.
	Origin string `json:"origin"`
}

// Fingerprint names the credential's public key: sha256:<hex of SHA-256
// of the COSE key>. It is what a config pins.
func (c Credential) Fingerprint() string {
	h := sha256.Sum256(c.PublicKey)
	return "sha256:" + hex.EncodeToString(h[:])
}

// RPID returns the host of c's origin, the WebAuthn relying party id.
func RPID(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("origin %q: want scheme://host[:port]", origin)
	}
	return u.Hostname(), nil
}

// Check reports whether c is well formed: a known approver id is the
// caller's business; here, sizes, a COSE key that parses, an origin.
func (c Credential) Check() error {
	switch {
	case c.Approver == "":
		return errors.New("credential: no approver")
	case len(c.ID) == 0 || len(c.ID) > MaxCredentialID:
		return fmt.Errorf("credential: id of %d bytes", len(c.ID))
	case len(c.PublicKey) == 0 || len(c.PublicKey) > MaxPublicKey:
		return fmt.Errorf("credential: public key of %d bytes", len(c.PublicKey))
	}
	if _, err := webauthncose.ParsePublicKey(c.PublicKey); err != nil {
		return fmt.Errorf("credential: public key: %w", err)
	}
	if _, err := RPID(c.Origin); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	return nil
}

// An Assertion is a WebAuthn assertion over an approval challenge.
type Assertion struct {
	Credential        []byte // the credential id the authenticator used
	Nonce             []byte // the server nonce of the challenge
	AuthenticatorData []byte
	ClientDataJSON    []byte
	Signature         []byte
}

// Challenge returns the WebAuthn challenge for statement under nonce:
// SHA-256(statement) || nonce.
func Challenge(statement, nonce []byte) []byte {
	h := sha256.Sum256(statement)
	return append(h[:], nonce...)
}

// ErrBadAssertion is wrapped by every error Verify returns.
var ErrBadAssertion = errors.New("passkey assertion does not verify")

// Verify checks, offline, that a is an assertion by credential c over the
// challenge for statement (see the package doc for every check).
func Verify(c Credential, statement []byte, a Assertion) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadAssertion, fmt.Sprintf(format, args...))
	}
	switch {
	case len(a.Nonce) != NonceSize:
		return bad("nonce of %d bytes, want %d", len(a.Nonce), NonceSize)
	case !bytes.Equal(a.Credential, c.ID):
		return bad("made with another credential")
	case len(a.AuthenticatorData) < minAuthDataLength || len(a.AuthenticatorData) > MaxAuthData:
		return bad("authenticator data of %d bytes", len(a.AuthenticatorData))
	case len(a.ClientDataJSON) > MaxClientData || len(a.Signature) == 0 || len(a.Signature) > MaxSignature:
		return bad("client data or signature size out of bounds")
	}
	var cd struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}
	if err := json.Unmarshal(a.ClientDataJSON, &cd); err != nil {
		return bad("client data: %v", err)
	}
	want := base64.RawURLEncoding.EncodeToString(Challenge(statement, a.Nonce))
	switch {
	case cd.Type != "webauthn.get":
		return bad("client data type %q, want webauthn.get", cd.Type)
	case strings.TrimRight(cd.Challenge, "=") != want:
		return bad("the challenge is not this statement's")
	case cd.Origin != c.Origin:
		return bad("origin %q, want %q", cd.Origin, c.Origin)
	case cd.CrossOrigin:
		return bad("made in a cross-origin frame")
	}
	rpID, err := RPID(c.Origin)
	if err != nil {
		return bad("%v", err)
	}
	rpHash := sha256.Sum256([]byte(rpID))
	flags := a.AuthenticatorData[32]
	switch {
	case !bytes.Equal(a.AuthenticatorData[:32], rpHash[:]):
		return bad("RP ID hash is not that of %q", rpID)
	case flags&flagUserPresent == 0:
		return bad("user not present")
	case flags&flagUserVerified == 0:
		return bad("user not verified")
	}
	key, err := webauthncose.ParsePublicKey(c.PublicKey)
	if err != nil {
		return bad("public key: %v", err)
	}
	cdHash := sha256.Sum256(a.ClientDataJSON)
	signed := append(bytes.Clone(a.AuthenticatorData), cdHash[:]...)
	ok, err := webauthncose.VerifySignature(key, signed, a.Signature)
	if err != nil || !ok {
		return bad("signature: %v", errOr(err, "invalid"))
	}
	return nil
}

func errOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

// NoteEnrolled is the first word of the message of the note entry that
// records an enrolment.
const NoteEnrolled = "passkey_enrolled"

// EnrolmentNote returns the message of the note entry that logs c's
// enrolment: "passkey_enrolled <approver> <origin> <credential id>
// <COSE key>", the last two base64url without padding.
func EnrolmentNote(c Credential) string {
	return fmt.Sprintf("%s %s %s %s %s", NoteEnrolled, c.Approver, c.Origin,
		base64.RawURLEncoding.EncodeToString(c.ID), base64.RawURLEncoding.EncodeToString(c.PublicKey))
}

// ParseEnrolmentNote reads an enrolment note's message. ok is false when
// msg is not one; err is set when it claims to be one but is malformed.
func ParseEnrolmentNote(msg string) (c Credential, ok bool, err error) {
	rest, ok := strings.CutPrefix(msg, NoteEnrolled+" ")
	if !ok {
		return c, false, nil
	}
	f := strings.Split(rest, " ")
	if len(f) != 4 {
		return c, true, fmt.Errorf("enrolment note: %d fields, want 4", len(f))
	}
	c.Approver, c.Origin = f[0], f[1]
	if c.ID, err = decode(f[2]); err != nil {
		return c, true, fmt.Errorf("enrolment note: credential id: %w", err)
	}
	if c.PublicKey, err = decode(f[3]); err != nil {
		return c, true, fmt.Errorf("enrolment note: public key: %w", err)
	}
	if err := c.Check(); err != nil {
		return c, true, fmt.Errorf("enrolment note: %w", err)
	}
	return c, true, nil
}

// decode decodes canonical unpadded base64url: what re-encodes to s.
func decode(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("want canonical unpadded base64url")
	}
	return b, nil
}

// Decode decodes canonical unpadded base64url, the encoding of every
// binary field rulelock records for a passkey.
func Decode(s string) ([]byte, error) { return decode(s) }
