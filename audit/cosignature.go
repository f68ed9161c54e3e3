package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Cosignatures (C2SP tlog-cosignature, Ed25519 cosignature/v1).
//
// A witness's cosignature is one more signature line on the checkpoint note:
//
//	— witness.example/w1 base64(key hash || u64 timestamp || Ed25519 signature)
//
// The key hash is SHA-256(name || "\n" || 0x04 || public key)[:4], and the
// signed message is the checkpoint text after two lines:
//
//	cosignature/v1
//	time <timestamp>
//	<origin>
//	<size>
//	<root hash>
//
// The witness's verifier key is a vkey of type 0x04:
// <name>+<hex key hash>+base64(0x04 || 32-byte public key).

// CosignatureV1Alg is the vkey signature type of Ed25519 cosignature/v1 keys.
const CosignatureV1Alg = 0x04

// CosignatureV1Message returns the message a cosignature/v1 signs over the
// checkpoint text at time t (seconds since the epoch).
func CosignatureV1Message(t uint64, text []byte) []byte {
	return append(fmt.Appendf(nil, "cosignature/v1\ntime %d\n", t), text...)
}

// CosignatureV1KeyHash returns the key hash of an Ed25519 cosignature/v1
// key.
func CosignatureV1KeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write([]byte{CosignatureV1Alg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// ParseCosignerKey parses a witness's verifier key: a vkey of type 0x04
// (Ed25519 cosignature/v1). The verifier it returns checks cosignatures,
// not plain Ed25519 note signatures.
func ParseCosignerKey(vkey string) (note.Verifier, error) {
	name, rest, _ := strings.Cut(strings.TrimSpace(vkey), "+")
	hash16, key64, _ := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	if !validKeyName(name) || len(hash16) != 8 || err != nil || len(key) == 0 {
		return nil, errors.New("parse cosigner key: malformed verifier key")
	}
	if key[0] != CosignatureV1Alg || len(key) != 1+ed25519.PublicKeySize {
		return nil, fmt.Errorf("parse cosigner key %s: want an Ed25519 cosignature/v1 key (type 0x04)", name)
	}
	pub := ed25519.PublicKey(key[1:])
	h := CosignatureV1KeyHash(name, pub)
	if hash16 != fmt.Sprintf("%08x", h) {
		return nil, fmt.Errorf("parse cosigner key %s: key hash does not match the key", name)
	}
	return &cosignerVerifier{name: name, hash: h, key: pub}, nil
}

// FormatCosignerKey returns the vkey of an Ed25519 cosignature/v1 key.
func FormatCosignerKey(name string, pub ed25519.PublicKey) string {
	return fmt.Sprintf("%s+%08x+%s", name, CosignatureV1KeyHash(name, pub),
		base64.StdEncoding.EncodeToString(append([]byte{CosignatureV1Alg}, pub...)))
}

type cosignerVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosignerVerifier) Name() string    { return v.name }
func (v *cosignerVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a cosignature: timestamp || signature over the
// cosignature/v1 message. A timestamp above 2^63-1 is refused.
func (v *cosignerVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	if t > math.MaxInt64 {
		return false
	}
	return ed25519.Verify(v.key, CosignatureV1Message(t, msg), sig[8:])
}

// CosignatureTime returns the timestamp of a cosignature/v1 signature.
func CosignatureTime(sig note.Signature) (int64, error) {
	b, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || len(b) != 4+8+ed25519.SignatureSize {
		return 0, errors.New("malformed cosignature")
	}
	return int64(binary.BigEndian.Uint64(b[4:]) & math.MaxInt64), nil
}

// validKeyName is note's rule for key names: non-empty, valid UTF-8, no
// spaces and no pluses.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}
