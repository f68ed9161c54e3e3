package witness

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// GenerateKey returns a new witness key pair named name: the signer key
// PRIVATE+KEY+<name>+<hash>+base64(0x04 || seed) and the verifier key
// <name>+<hash>+base64(0x04 || public key), as C2SP tlog-cosignature and
// transparency-dev/formats write them.
func GenerateKey(rand io.Reader, name string) (skey, vkey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return "", "", err
	}
	vkey = audit.FormatCosignerKey(name, pub)
	if _, err := audit.ParseCosignerKey(vkey); err != nil {
		return "", "", err
	}
	h := audit.CosignatureV1KeyHash(name, pub)
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, h, base64.StdEncoding.EncodeToString(append([]byte{audit.CosignatureV1Alg}, priv.Seed()...)))
	return skey, vkey, nil
}

// Cosigner signs Ed25519 cosignature/v1 cosignatures: a note.Signer whose
// signatures are timestamp || signature over the cosignature/v1 message.
type Cosigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
	now  func() time.Time
}

// NewCosigner parses a signer key from GenerateKey. now is the clock the
// timestamps come from (time.Now if nil).
func NewCosigner(skey string, now func() time.Time) (*Cosigner, error) {
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return nil, errors.New("new cosigner: malformed signer key")
	}
	name, hash16, key64 := parts[2], parts[3], parts[4]
	raw, err := base64.StdEncoding.Strict().DecodeString(key64)
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != audit.CosignatureV1Alg {
		return nil, errors.New("new cosigner: want an Ed25519 cosignature/v1 signer key (type 0x04)")
	}
	key := ed25519.NewKeyFromSeed(raw[1:])
	h := audit.CosignatureV1KeyHash(name, key.Public().(ed25519.PublicKey))
	if hash16 != fmt.Sprintf("%08x", h) {
		return nil, errors.New("new cosigner: key hash does not match the key")
	}
	if now == nil {
		now = time.Now
	}
	return &Cosigner{name: name, hash: h, key: key, now: now}, nil
}

// Name returns the witness's name.
func (c *Cosigner) Name() string { return c.name }

// KeyHash returns the key hash.
func (c *Cosigner) KeyHash() uint32 { return c.hash }

// Sign cosigns a checkpoint text.
func (c *Cosigner) Sign(msg []byte) ([]byte, error) {
	t := c.now().Unix()
	if t <= 0 {
		return nil, errors.New("cosign: clock before 1970")
	}
	sig := binary.BigEndian.AppendUint64(nil, uint64(t))
	return append(sig, ed25519.Sign(c.key, audit.CosignatureV1Message(uint64(t), msg))...), nil
}

// VerifierKey returns the witness's verifier key.
func (c *Cosigner) VerifierKey() string {
	return audit.FormatCosignerKey(c.name, c.key.Public().(ed25519.PublicKey))
}

var _ note.Signer = (*Cosigner)(nil)

// formatSize writes a tree size as the protocol does: decimal, no leading
// zeros.
func formatSize(n int64) string { return strconv.FormatInt(n, 10) }

// parseSize parses a canonical decimal tree size.
func parseSize(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0 && strconv.FormatInt(n, 10) == s
}
