// Package passkeytest is a software WebAuthn authenticator for tests: a
// real ECDSA P-256 key (ES256) that makes real assertions, in the exact
// byte formats a browser and an authenticator produce, so that the
// offline verification can be tested without a browser. The browser
// tests (internal/console, cmd/rulelock) use Chromium's own virtual
// authenticator instead.
package passkeytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"

	"github.com/rulelock/rulelock/internal/passkey"
)

// An Authenticator holds one passkey.
type Authenticator struct {
	Credential passkey.Credential
	key        *ecdsa.PrivateKey
	// Flags are the authenticator data flags it sets (default UP|UV).
	Flags byte
	// Origin, when set, is the origin the "browser" reports in the client
	// data instead of the credential's.
	Origin string
}

// New returns an authenticator with a new ES256 passkey for approver on
// origin.
func New(approver, origin string) *Authenticator {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	pub, err := k.PublicKey.ECDH()
	if err != nil {
		panic(err)
	}
	raw := pub.Bytes() // 0x04 || X || Y
	cose, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         1, // P-256
		XCoord:        raw[1:33], YCoord: raw[33:],
	})
	if err != nil {
		panic(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	return &Authenticator{Credential: passkey.Credential{Approver: approver, ID: id, PublicKey: cose, Origin: origin}, key: k, Flags: 0x05}
}

// Assert returns an assertion over the approval challenge for statement
// with a fresh nonce.
func (a *Authenticator) Assert(statement []byte) passkey.Assertion {
	nonce := make([]byte, passkey.NonceSize)
	rand.Read(nonce)
	return a.AssertChallenge(passkey.Challenge(statement, nonce), nonce)
}

// AssertChallenge returns an assertion over challenge, recording nonce.
func (a *Authenticator) AssertChallenge(challenge, nonce []byte) passkey.Assertion {
	origin := a.Credential.Origin
	if a.Origin != "" {
		origin = a.Origin
	}
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": base64.RawURLEncoding.EncodeToString(challenge), "origin": origin, "crossOrigin": false})
	rpID, _ := passkey.RPID(a.Credential.Origin)
	rp := sha256.Sum256([]byte(rpID))
	authData := append(rp[:], a.Flags, 0, 0, 0, 1)
	cdHash := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, authData...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, a.key, digest[:])
	if err != nil {
		panic(err)
	}
	return passkey.Assertion{Credential: a.Credential.ID, Nonce: nonce, AuthenticatorData: authData, ClientDataJSON: cd, Signature: sig}
}

// Register returns what navigator.credentials.create returns for this
// passkey over challenge: a "none" attestation object (CBOR, with the
// attested credential data) and the client data.
func (a *Authenticator) Register(challenge []byte) (attestationObject, clientDataJSON []byte) {
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": base64.RawURLEncoding.EncodeToString(challenge), "origin": a.Credential.Origin, "crossOrigin": false})
	rpID, _ := passkey.RPID(a.Credential.Origin)
	rp := sha256.Sum256([]byte(rpID))
	authData := append(rp[:], a.Flags|0x40, 0, 0, 0, 0) // AT: attested credential data follows
	authData = append(authData, make([]byte, 16)...)    // AAGUID
	authData = append(authData, byte(len(a.Credential.ID)>>8), byte(len(a.Credential.ID)))
	authData = append(authData, a.Credential.ID...)
	authData = append(authData, a.Credential.PublicKey...)
	att, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		panic(err)
	}
	return att, cd
}
