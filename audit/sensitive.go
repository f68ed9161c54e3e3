package audit

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Sensitive values.
//
// A value the policy or the configuration marks sensitive never reaches the
// log's files in plaintext. The log holds a Commitment in its place:
//
//	hmac   = HMAC-SHA-256(salt, value)
//	sealed = AES-256-GCM(key = HKDF-SHA-256(salt, info "rulelock sensitive value v1"),
//	                     nonce = 12 zero bytes, value)
//
// with a fresh 32-byte random salt per value (so the key is used once and a
// fixed nonce is safe). The salt goes to the salts file (salts.jsonl, mode
// 0600), one line per value, written and synced before the entry that
// commits to it. Whoever holds a salt can open the value and check it
// against the commitment; deleting the salts file (or lines of it)
// crypto-shreds the values while the log, which holds only commitments and
// ciphertexts, still verifies.
//
// Inside a canonical action a commitment takes the place of the member's
// value as the object {"$commitment":{"hmac":"<hex>","sealed":"<base64>"}};
// the value committed to is the member's canonical JSON text.

// SensitiveKey is the only member of a commitment object in an action.
const SensitiveKey = "$commitment"

// sealInfo is the HKDF info of the key that seals a value.
const sealInfo = "rulelock sensitive value v1"

// Commitment is a sensitive value as the log holds it.
type Commitment struct {
	HMAC   Digest // HMAC-SHA-256(salt, value)
	Sealed []byte // the value, encrypted under a key derived from the salt
}

// Salt is the secret that opens one Commitment. Append writes it to the
// salts file (Entry.Salts).
type Salt struct {
	HMAC Digest // the commitment it opens
	Salt []byte
}

// Commit commits to value with a fresh salt read from rand.
func Commit(rand io.Reader, value []byte) (Commitment, Salt, error) {
	salt := make([]byte, 32)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return Commitment{}, Salt{}, fmt.Errorf("commit: salt: %w", err)
	}
	aead, err := sealer(salt)
	if err != nil {
		return Commitment{}, Salt{}, fmt.Errorf("commit: %w", err)
	}
	c := Commitment{HMAC: mac(salt, value), Sealed: aead.Seal(nil, make([]byte, aead.NonceSize()), value, nil)}
	return c, Salt{HMAC: c.HMAC, Salt: salt}, nil
}

func mac(salt, value []byte) Digest {
	m := hmac.New(sha256.New, salt)
	m.Write(value)
	var d Digest
	copy(d[:], m.Sum(nil))
	return d
}

func sealer(salt []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, salt, nil, sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Open returns the value c commits to, given its salt, after checking that
// it opens the commitment.
func (c Commitment) Open(salt []byte) ([]byte, error) {
	aead, err := sealer(salt)
	if err != nil {
		return nil, fmt.Errorf("open commitment: %w", err)
	}
	v, err := aead.Open(nil, make([]byte, aead.NonceSize()), c.Sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("open commitment %v: %w", c.HMAC, err)
	}
	if !hmac.Equal(c.HMAC[:], func() []byte { d := mac(salt, v); return d[:] }()) {
		return nil, fmt.Errorf("open commitment %v: the value does not match the commitment", c.HMAC)
	}
	return v, nil
}

// Value returns c as the JSON value that takes a sensitive member's place in
// an action (strictjson value types).
func (c Commitment) Value() map[string]any {
	return map[string]any{SensitiveKey: map[string]any{
		"hmac":   c.HMAC.String(),
		"sealed": base64.StdEncoding.EncodeToString(c.Sealed),
	}}
}

// ParseCommitment reports whether v (a decoded JSON value) is a commitment
// object, and returns it. A value that names SensitiveKey and is not a
// well-formed commitment is an error.
func ParseCommitment(v any) (Commitment, bool, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Commitment{}, false, nil
	}
	inner, ok := m[SensitiveKey]
	if !ok {
		return Commitment{}, false, nil
	}
	bad := func(why string) (Commitment, bool, error) {
		return Commitment{}, true, fmt.Errorf("commitment: %s", why)
	}
	im, ok := inner.(map[string]any)
	if len(m) != 1 || !ok || len(im) != 2 {
		return bad(`want {"` + SensitiveKey + `":{"hmac","sealed"}}`)
	}
	h, ok1 := im["hmac"].(string)
	s, ok2 := im["sealed"].(string)
	if !ok1 || !ok2 {
		return bad("hmac and sealed must be strings")
	}
	var c Commitment
	if err := c.HMAC.UnmarshalText([]byte(h)); err != nil {
		return bad(err.Error())
	}
	sealed, err := base64.StdEncoding.DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(sealed) != s {
		return bad("sealed is not canonical base64")
	}
	c.Sealed = sealed
	return c, true, nil
}

// saltRecord is one line of the salts file.
type saltRecord struct {
	HMAC  Digest `json:"hmac"`
	Index int64  `json:"index"`
	Salt  []byte `json:"salt"`
}

// Salts are the salts of a log's sensitive values, by commitment.
type Salts struct {
	m map[Digest][]byte
}

// ReadSalts reads the salts file of the log in dir. A missing file gives
// empty Salts: every value is shredded.
func ReadSalts(dir string) (*Salts, error) {
	s := &Salts{m: map[Digest][]byte{}}
	f, err := os.Open(filepath.Join(dir, saltsFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read salts: %w", err)
	}
	defer f.Close()
	err = eachLine(f, func(line []byte) {
		var r saltRecord
		// A line torn by a crash belongs to an unacknowledged entry.
		if json.Unmarshal(line, &r) == nil {
			s.m[r.HMAC] = r.Salt
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read salts: %w", err)
	}
	return s, nil
}

// Open opens c with its salt; ErrShredded when the salt is gone.
func (s *Salts) Open(c Commitment) ([]byte, error) {
	salt, ok := s.m[c.HMAC]
	if !ok {
		return nil, fmt.Errorf("commitment %v: %w", c.HMAC, ErrShredded)
	}
	return c.Open(salt)
}

// saltCache is a Log's view of its salts file, read when first needed and
// again when a commitment is not found in it.
type saltCache struct {
	mu sync.Mutex
	s  *Salts
}

// Unseal opens a commitment of one of the log's entries with the salt in
// the log's salts file: ErrShredded when the salt is gone. The gateway
// uses it to rebuild state that rules read from sensitive values.
func (l *Log) Unseal(c Commitment) ([]byte, error) {
	l.salts.mu.Lock()
	defer l.salts.mu.Unlock()
	if l.salts.s != nil {
		if _, ok := l.salts.s.m[c.HMAC]; ok {
			return l.salts.s.Open(c)
		}
	}
	s, err := ReadSalts(l.dir)
	if err != nil {
		return nil, err
	}
	l.salts.s = s
	return s.Open(c)
}

// Reveal returns the sensitive value at path in entry i: "action.NAME" for
// a member of the action (its canonical JSON text), or a whole field
// ("instruction", "reasoning", "result", "state") stored as a commitment.
// It fails with ErrShredded when the salt is gone and ErrNotSensitive when
// the path holds no commitment.
func (l *Log) Reveal(i int64, path string) (string, error) {
	b, err := l.ReadEntry(i)
	if err != nil {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, path, err)
	}
	return revealEntry(l.dir, i, b, path)
}

// RevealDir is Reveal on the log in dir, read without opening it: it works
// on a running gateway's log, a stopped one or a copy.
func RevealDir(dir string, i int64, path string) (string, error) {
	b, err := ReadDirEntry(dir, i)
	if err != nil {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, path, err)
	}
	return revealEntry(dir, i, b, path)
}

// ErrNotSensitive is returned by Reveal for a path that holds no commitment.
var ErrNotSensitive = errors.New("not a sensitive value")

func revealEntry(dir string, i int64, b []byte, path string) (string, error) {
	e, err := DecodeEntry(b)
	if err != nil {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, path, err)
	}
	salts, err := ReadSalts(dir)
	if err != nil {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, path, err)
	}
	c, err := commitmentAt(dir, i, e, path)
	if err == nil {
		var v []byte
		if v, err = salts.Open(c); err == nil {
			return string(v), nil
		}
	}
	return "", fmt.Errorf("reveal entry %d %s: %w", i, path, err)
}

// commitmentAt finds the commitment at path in entry e (index i) of the
// log in dir.
func commitmentAt(dir string, i int64, e *Entry, path string) (Commitment, error) {
	if name, ok := strings.CutPrefix(path, "action."); ok {
		text := []byte(e.Action.Text)
		if !e.Action.Digest.IsZero() {
			var err error
			if text, err = readBlob(dir, e.Action.Digest); err != nil {
				return Commitment{}, err
			}
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(text, &members); err != nil {
			return Commitment{}, fmt.Errorf("action: %w", err)
		}
		raw, ok := members[name]
		if !ok {
			return Commitment{}, fmt.Errorf("the action has no member %q", name)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return Commitment{}, err
		}
		c, ok, err := ParseCommitment(v)
		switch {
		case err != nil:
			return Commitment{}, err
		case !ok:
			return Commitment{}, ErrNotSensitive
		}
		return c, nil
	}
	var f *Field
	for _, p := range [...]struct {
		name string
		f    *Field
	}{{"instruction", &e.Instruction}, {"reasoning", &e.Reasoning}, {"result", &e.Result}, {"state", &e.State}, {"action", &e.Action}} {
		if p.name == path {
			f = p.f
		}
	}
	if f == nil {
		return Commitment{}, fmt.Errorf("unknown path %q (want action.NAME, action, instruction, reasoning, result or state)", path)
	}
	if f.Commitment.IsZero() {
		return Commitment{}, ErrNotSensitive
	}
	sealed, err := sealedField(dir, i, path, f.Commitment)
	if err != nil {
		return Commitment{}, err
	}
	return Commitment{HMAC: f.Commitment, Sealed: sealed}, nil
}

// readBlob reads a field stored by digest in the log in dir.
func readBlob(dir string, d Digest) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, blobDir, d.String()))
	if err != nil {
		return nil, fmt.Errorf("read blob: %w", err)
	}
	if sha256.Sum256(b) != d {
		return nil, fmt.Errorf("read blob %v: content does not match digest", d)
	}
	return b, nil
}

// sealedField finds the ciphertext of whole field name of entry i in the
// side file.
func sealedField(dir string, i int64, name string, c Digest) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, sideFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrShredded
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var sealed []byte
	err = eachLine(f, func(line []byte) {
		var r sideRecord
		if sealed == nil && json.Unmarshal(line, &r) == nil && r.Index == i && r.Field == name && r.HMAC == c {
			sealed = r.Sealed
		}
	})
	if err != nil {
		return nil, err
	}
	if sealed == nil {
		return nil, ErrShredded
	}
	return sealed, nil
}

// ErrShredded is returned by Reveal and Unseal when the salt of a
// commitment is gone (deleted, or never recorded).
var ErrShredded = errors.New("sensitive value not available: its salt is gone")

// eachLine calls fn with each line of a line file (lineFile), up to the
// zeros that follow the last one.
func eachLine(r io.Reader, fn func(line []byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if i := bytes.IndexByte(line, 0); i >= 0 {
			line = line[:i]
			err = io.EOF
		}
		if len(line) > 0 {
			fn(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
