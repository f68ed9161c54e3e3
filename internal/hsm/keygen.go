package hsm

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// CKA_EC_PARAMS for Ed25519: the DER of the object identifier id-Ed25519,
// 1.3.101.112 (RFC 8410), or, for tokens that predate it, the DER of the
// PrintableString "edwards25519" (PKCS#11 v3.0, 2.3.5).
var (
	ed25519OID  = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}
	ed25519Name = append([]byte{0x13, 0x0c}, "edwards25519"...)
)

// GenerateKey generates an Ed25519 key pair on the token, labelled
// cfg.Label, and opens a Signer for it. The private key is sensitive and
// not extractable. It fails with ErrKeyExists if any object on the token
// has the label already.
func GenerateKey(cfg Config) (*Signer, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("generate key %v: %w", cfg, err)
	}
	if err := generate(cfg); err != nil {
		return nil, fmt.Errorf("generate key %v: %w", cfg, err)
	}
	return Open(cfg)
}

func generate(cfg Config) error {
	mod, err := loadModule(cfg.Module)
	if err != nil {
		return err
	}
	defer mod.release()
	slot, err := mod.findToken(cfg.Token)
	if err != nil {
		return err
	}
	sh, err := mod.openSession(slot, cfg.PIN, true)
	if err != nil {
		return err
	}
	defer mod.closeSession(slot, sh)

	existing, err := findAll(mod.ctx, sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.Label)}, 1)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return ErrKeyExists
	}
	id := make([]byte, 16)
	rand.Read(id)
	common := func(class uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.Label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
	}
	public := func(params []byte) []*pkcs11.Attribute {
		return append(common(pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		)
	}
	private := append(common(pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	)
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}
	_, _, err = mod.ctx.GenerateKeyPair(sh, mech, public(ed25519OID), private)
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_VALUE_INVALID)) || errors.Is(err, pkcs11.Error(pkcs11.CKR_CURVE_NOT_SUPPORTED)) {
		_, _, err = mod.ctx.GenerateKeyPair(sh, mech, public(ed25519Name), private)
	}
	if err != nil {
		return fmt.Errorf("generate key pair: %w", err)
	}
	return nil
}

// parseECPoint returns the Ed25519 public key in a CKA_EC_POINT value. The
// standard form is the DER of an OCTET STRING holding the 32-byte point;
// some tokens return the bare point, which is accepted too.
func parseECPoint(v []byte) (ed25519.PublicKey, error) {
	if len(v) == ed25519.PublicKeySize {
		return ed25519.PublicKey(v), nil
	}
	var point []byte
	rest, err := asn1.Unmarshal(v, &point)
	if err != nil {
		return nil, fmt.Errorf("CKA_EC_POINT is not a DER octet string: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("CKA_EC_POINT has trailing data")
	}
	if len(point) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("CKA_EC_POINT holds %d bytes, want %d (not an Ed25519 key)", len(point), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(point), nil
}
