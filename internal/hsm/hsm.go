// Package hsm signs notes with an Ed25519 key held in a PKCS#11 token.
//
// A [Signer] implements [note.Signer] (golang.org/x/mod/sumdb/note), so the
// audit log's checkpointer can sign C2SP tlog-checkpoint notes with a key
// that never leaves the hardware. The notes it signs are ordinary Ed25519
// notes: stock [note.NewVerifier] accepts them with the verifier key
// "name+hash+key" that [Signer.VerifierKey] returns, exactly as it accepts
// notes signed with a software key from [note.GenerateKey].
//
// # The key on the token
//
// The key is an Ed25519 key pair (CKK_EC_EDWARDS, mechanism CKM_EDDSA, from
// PKCS#11 v3.0; this package defines the constants itself) whose public and
// private objects share a CKA_LABEL. The public key is read from
// CKA_EC_POINT, which tokens return DER-encoded as an OCTET STRING holding
// the 32-byte point; the note key hash is then the first four bytes,
// big-endian, of SHA-256(name || "\n" || 0x01 || point), as in
// [note.NewVerifier].
//
// # Failing closed
//
// [Open] signs a probe message and checks it against the public key before
// returning, and every signature is checked the same way before [Signer.Sign]
// returns it: a token that answers with a wrong key or a corrupted signature
// yields an error, never a note that does not verify.
//
// A token that goes away (removed, its session closed, the module reset)
// makes Sign fail; the next Sign reconnects from scratch and signs only if
// the token holds the same key again, so a Signer resumes when the token
// comes back and never signs with another key.
//
// # Example
//
//	s, err := hsm.Open(hsm.Config{
//		Module: "/usr/lib/softhsm/libsofthsm2.so",
//		Token:  "rulelock",
//		PIN:    pin,
//		Label:  "checkpoint",
//		Name:   "example.com/log",
//	})
//	if err != nil {
//		return err
//	}
//	defer s.Close()
//	msg, err := note.Sign(&note.Note{Text: checkpoint}, s)
//
// PKCS#11 sessions are not safe for concurrent use; a Signer holds one
// session and serialises Sign calls on it, so a Signer may be shared by any
// number of goroutines.
package hsm

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/miekg/pkcs11"
	"golang.org/x/mod/sumdb/note"
)

// PKCS#11 v3.0 constants for Ed25519 that github.com/miekg/pkcs11 lacks.
const (
	ckmECEdwardsKeyPairGen = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA               = 0x1057 // CKM_EDDSA
	ckkECEdwards           = 0x40   // CKK_EC_EDWARDS
)

// algEd25519 is the note signature algorithm byte for Ed25519.
const algEd25519 = 1

var (
	// ErrTokenNotFound means no token in the module has the configured label.
	ErrTokenNotFound = errors.New("token not found")
	// ErrKeyNotFound means the token holds no Ed25519 key with the configured label.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyExists means GenerateKey found an object with the label already.
	ErrKeyExists = errors.New("key label already in use")
	// ErrPIN means the token rejected the PIN.
	ErrPIN = errors.New("incorrect pin")
	// ErrClosed means the Signer was closed.
	ErrClosed = errors.New("signer closed")
)

// Config says which key to use. Module, Token, PIN and Label are required.
type Config struct {
	Module string // path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
	Token  string // label of the token (CKA_LABEL of the token, not its slot number)
	PIN    string // user PIN
	Label  string // CKA_LABEL shared by the key's public and private objects
	Name   string // note key name; Label if empty
}

// String describes c without its PIN.
func (c Config) String() string {
	return fmt.Sprintf("pkcs11 module %q token %q key %q", c.Module, c.Token, c.Label)
}

// GoString describes c without its PIN.
func (c Config) GoString() string {
	return fmt.Sprintf("hsm.Config{Module: %q, Token: %q, PIN: REDACTED, Label: %q, Name: %q}", c.Module, c.Token, c.Label, c.Name)
}

// LogValue describes c without its PIN.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", c.Module),
		slog.String("token", c.Token),
		slog.String("label", c.Label),
		slog.String("name", c.name()),
		slog.String("pin", "REDACTED"),
	)
}

func (c Config) name() string {
	if c.Name != "" {
		return c.Name
	}
	return c.Label
}

func (c Config) check() error {
	switch {
	case c.Module == "":
		return errors.New("no pkcs11 module")
	case c.Token == "":
		return errors.New("no token label")
	case c.Label == "":
		return errors.New("no key label")
	case !validName(c.name()):
		return fmt.Errorf("invalid note key name %q", c.name())
	}
	return nil
}

// validName reports whether name is a valid note key name: non-empty UTF-8
// without spaces or '+'.
func validName(name string) bool {
	return name != "" && utf8.ValidString(name) &&
		strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

// A Signer signs notes with an Ed25519 key on a PKCS#11 token.
// It implements note.Signer and is safe for concurrent use.
//
// When signing fails (the token was removed, the session closed, the
// module lost its state), the Signer reconnects on the next Sign: it closes
// its session, releases the module (which finalises it when no other Signer
// uses it), opens a new session, logs in and finds the key again. It signs
// again only if the key it finds has the public key it had: a token that
// comes back with another key under the label is refused, every time.
type Signer struct {
	cfg  Config // to reconnect
	name string
	hash uint32
	pub  ed25519.PublicKey

	mu     sync.Mutex // guards conn and closed
	conn   *conn      // nil while disconnected
	closed bool
}

// conn is an open, logged-in session and the key found in it.
type conn struct {
	mod     *module
	slot    uint
	session pkcs11.SessionHandle
	key     pkcs11.ObjectHandle
	pub     ed25519.PublicKey
}

var _ note.Signer = (*Signer)(nil)

// Open logs in to the token and returns a Signer for the key labelled
// cfg.Label. The caller must Close it.
func Open(cfg Config) (*Signer, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("open %v: %w", cfg, err)
	}
	s, err := open(cfg)
	if err != nil {
		return nil, fmt.Errorf("open %v: %w", cfg, err)
	}
	return s, nil
}

func open(cfg Config) (*Signer, error) {
	c, err := connect(cfg)
	if err != nil {
		return nil, err
	}
	s := &Signer{cfg: cfg, name: cfg.name(), pub: c.pub, conn: c}
	s.hash = keyHash(s.name, append([]byte{algEd25519}, c.pub...))
	if _, err := s.Sign([]byte("rulelock hsm probe\n")); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// connect loads the module, opens a session logged in to the token and
// finds the key.
func connect(cfg Config) (*conn, error) {
	mod, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	slot, err := mod.findToken(cfg.Token)
	if err != nil {
		mod.release()
		return nil, err
	}
	sh, err := mod.openSession(slot, cfg.PIN, false)
	if err != nil {
		mod.release()
		return nil, err
	}
	c := &conn{mod: mod, slot: slot, session: sh}
	if err := c.loadKey(cfg.Label); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// close closes the session and releases the module.
func (c *conn) close() error {
	err := c.mod.closeSession(c.slot, c.session)
	c.mod.release()
	return err
}

// loadKey finds the key pair labelled label and reads its public key.
func (c *conn) loadKey(label string) error {
	ctx, sh := c.mod.ctx, c.session
	pubObj, err := findOne(ctx, sh, keyTemplate(pkcs11.CKO_PUBLIC_KEY, label))
	if err != nil {
		return fmt.Errorf("public key %q: %w", label, err)
	}
	privObj, err := findOne(ctx, sh, keyTemplate(pkcs11.CKO_PRIVATE_KEY, label))
	if err != nil {
		return fmt.Errorf("private key %q: %w", label, err)
	}
	attrs, err := ctx.GetAttributeValue(sh, pubObj, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return fmt.Errorf("read public key %q: %w", label, err)
	}
	pub, err := parseECPoint(attrs[0].Value)
	if err != nil {
		return fmt.Errorf("read public key %q: %w", label, err)
	}
	c.pub, c.key = pub, privObj
	return nil
}

func keyTemplate(class uint, label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
}

// findOne returns the one object matching template: none is
// ErrKeyNotFound, more than one is an error.
func findOne(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, template []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	objs, err := findAll(ctx, sh, template, 2)
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 0:
		return 0, ErrKeyNotFound
	case 1:
		return objs[0], nil
	}
	return 0, errors.New("more than one object with this label")
}

func findAll(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, template []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(sh, template); err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	objs, _, err := ctx.FindObjects(sh, max)
	if ferr := ctx.FindObjectsFinal(sh); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	return objs, nil
}

// keyHash is the note key hash of an encoded public key (algorithm byte
// followed by the key), computed as note.NewVerifier does.
func keyHash(name string, key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// String describes s without its PIN (which s keeps, to reconnect).
func (s *Signer) String() string {
	return fmt.Sprintf("hsm.Signer{%v, key %s+%08x}", s.cfg, s.name, s.hash)
}

// GoString describes s without its PIN.
func (s *Signer) GoString() string { return s.String() }

// Name returns the note key name.
func (s *Signer) Name() string { return s.name }

// KeyHash returns the note key hash.
func (s *Signer) KeyHash() uint32 { return s.hash }

// PublicKey returns the Ed25519 public key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.pub }

// VerifierKey returns the note verifier key, "name+hash+key", for
// note.NewVerifier.
func (s *Signer) VerifierKey() string {
	vkey, err := note.NewEd25519VerifierKey(s.name, s.pub)
	if err != nil {
		panic("hsm: public key of wrong size: " + err.Error()) // checked by parseECPoint
	}
	return vkey
}

// Sign signs msg on the token with CKM_EDDSA (pure Ed25519) and checks the
// signature against the public key before returning it.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	sig, err := s.sign(msg)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 sign: %w", err)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(s.pub, msg, sig) {
		return nil, errors.New("pkcs11 sign: token returned a signature that does not verify")
	}
	return sig, nil
}

func (s *Signer) sign(msg []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.conn == nil {
		if err := s.reconnect(); err != nil {
			return nil, err
		}
	}
	ctx := s.conn.mod.ctx
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}
	err := ctx.SignInit(s.conn.session, mech, s.conn.key)
	var sig []byte
	if err == nil {
		sig, err = ctx.Sign(s.conn.session, msg)
	}
	if err != nil {
		// Whatever broke, the next Sign starts from a new session.
		s.conn.close()
		s.conn = nil
		return nil, err
	}
	return sig, nil
}

// reconnect opens a new connection to the token, which must hold the key
// the Signer had.
func (s *Signer) reconnect() error {
	c, err := connect(s.cfg)
	if err != nil {
		return fmt.Errorf("reconnect to %v: %w", s.cfg, err)
	}
	if !c.pub.Equal(s.pub) {
		c.close()
		return fmt.Errorf("reconnect to %v: the key under this label is now another key; refusing to sign with it", s.cfg)
	}
	s.conn = c
	return nil
}

// Close closes the Signer's session and, with the last Signer of its
// module, unloads the module. Closing twice is a no-op.
func (s *Signer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn == nil {
		return nil
	}
	err := s.conn.close()
	s.conn = nil
	if err != nil {
		return fmt.Errorf("close pkcs11 session: %w", err)
	}
	return nil
}
