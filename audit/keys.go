package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Key custody.
//
// A log has one signing key at a time. Its first checkpoint fixes it; after
// that the key changes only through a key rotation entry (KindKeyRotation,
// written by RotateKey) naming the old and the new verifier key: the first
// checkpoint that covers the entry is signed by the old key, and every
// checkpoint after that one by the new key. NewCheckpointer refuses any other
// key, and VerifyDir follows the chain of rotations from the key it trusts.

// KindKeyRotation is the kind of a key rotation entry (see RotateKey).
const KindKeyRotation Kind = "key_rotation"

// BadRotation is the failure class of a key rotation entry that does not
// continue the log's chain of keys (its old key is not the key in effect,
// or a key comes back).
const BadRotation Class = "bad_rotation"

// ErrWrongKey is wrapped by the errors of NewCheckpointer and RotateKey for a
// signing key that is not the log's key.
var ErrWrongKey = errors.New("not the log's signing key")

// KeyError reports a signing key that is not the log's current key.
type KeyError struct {
	Key  string // the signing key, name+hash
	Want string // the log's key, name+hash
	Why  string // where the log's key comes from
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("signing key %s is not the log's key %s (%s)", e.Key, e.Want, e.Why)
}

func (e *KeyError) Unwrap() error { return ErrWrongKey }

// verifierKeyer is implemented by signers that know their verifier key: key
// files (LoadKeyFile) and PKCS#11 keys (internal/hsm). Key custody checks a
// checkpoint's signature with it; a signer without it is compared by name
// and key hash only, as note.Open matches signatures to keys.
type verifierKeyer interface{ VerifierKey() string }

// fileSigner is the signer of a key file.
type fileSigner struct {
	note.Signer
	vkey string
}

func (s fileSigner) VerifierKey() string { return s.vkey }

// newFileSigner returns the signer of a private key in note format, with its
// verifier key.
func newFileSigner(skey string) (note.Signer, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	// PRIVATE+KEY+<name>+<hash>+<base64 of 0x01 || seed>, checked by NewSigner.
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("not an Ed25519 key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, err
	}
	return fileSigner{s, vkey}, nil
}

// keyID is how errors name a key: name+hash, as on a note's signature line.
func keyID(name string, hash uint32) string { return fmt.Sprintf("%s+%08x", name, hash) }

func signerID(s note.Signer) string { return keyID(s.Name(), s.KeyHash()) }

// vkeyID returns the name+hash of a verifier key.
func vkeyID(vkey string) string {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Sprintf("%q (malformed: %v)", vkey, err)
	}
	return keyID(v.Name(), v.KeyHash())
}

// checkRotationKeys checks the key members of an entry: both present and
// valid verifier keys of one name on a key rotation entry, absent on others.
func checkRotationKeys(k Kind, old, new string) error {
	if k != KindKeyRotation {
		if old != "" || new != "" {
			return fmt.Errorf("old_key or new_key set on a %s entry", k)
		}
		return nil
	}
	ov, err := note.NewVerifier(old)
	if err != nil {
		return fmt.Errorf("key rotation: old_key: %w", err)
	}
	nv, err := note.NewVerifier(new)
	if err != nil {
		return fmt.Errorf("key rotation: new_key: %w", err)
	}
	switch {
	case ov.Name() != nv.Name():
		return fmt.Errorf("key rotation: new key named %q, old key %q: the name is the log's origin and cannot change", nv.Name(), ov.Name())
	case old == new:
		return errors.New("key rotation: old and new key are the same")
	}
	return nil
}

// rotation is a key rotation entry of a log.
type rotation struct {
	Index    int64
	Old, New string
}

// rotationKind is how a key rotation entry's kind appears in its canonical
// encoding; nothing else in an entry can contain it (strings escape '"').
var rotationKind = []byte(`"kind":"` + string(KindKeyRotation) + `"`)

// rotationOf returns the rotation recorded by payload, entry i, if it is one.
func rotationOf(i int64, payload []byte) (rotation, bool, error) {
	if !bytes.Contains(payload, rotationKind) {
		return rotation{}, false, nil
	}
	e, err := DecodeEntry(payload)
	if err != nil {
		return rotation{}, false, fmt.Errorf("entry %d: %w", i, err)
	}
	if e.Kind != KindKeyRotation {
		return rotation{}, false, nil
	}
	return rotation{Index: i, Old: e.OldKey, New: e.NewKey}, true, nil
}

// rotations returns the key rotation entries of l in [lo, hi).
func (l *Log) rotations(lo, hi int64) ([]rotation, error) {
	var out []rotation
	for lo < hi {
		n := min(hi-lo, 4096)
		es, err := l.ReadEntries(lo, lo+n)
		if err != nil {
			return nil, err
		}
		for j, p := range es {
			r, ok, err := rotationOf(lo+int64(j), p)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, r)
			}
		}
		lo += n
	}
	return out, nil
}

// Empty reports whether l has neither entries nor checkpoints: only such a
// log may get a new signing key.
func (l *Log) Empty() (bool, error) {
	if l.Size() > 0 {
		return false, nil
	}
	seqs, err := listCheckpoints(filepath.Join(l.dir, checkpointDir))
	return len(seqs) == 0, err
}

// custody checks that s may sign the next checkpoint of c's log: the log's
// latest checkpoint is signed by s, and covers no rotation away from it; or
// the rotations that checkpoint covers first lead to s. A rotation entry
// after the latest checkpoint is an unfinished rotation: only RotateKey
// (pending, the rotation it is finishing) may sign over it.
func (c *Checkpointer) custody(s note.Signer, pending *rotation) error {
	l, last := c.log, c.last
	tail, err := l.rotations(last.Size, l.Size())
	if err != nil {
		return fmt.Errorf("key custody: %w", err)
	}
	if len(tail) > 0 && (pending == nil || len(tail) != 1 || tail[0] != *pending) {
		r := tail[0]
		return fmt.Errorf("key custody: entry %d rotates the log's key from %s to %s, and no checkpoint covers it yet: finish it with rulelock log rotate-key (same keys) before anything else signs", r.Index, vkeyID(r.Old), vkeyID(r.New))
	}
	if last.Seq == 0 {
		return nil // no checkpoint yet: the caller vouches for the key (log.pub)
	}
	var prevSize int64
	if last.Seq > 1 {
		prev, err := readCheckpointFile(filepath.Join(l.dir, checkpointDir), last.Seq-1)
		if err != nil {
			return fmt.Errorf("key custody: %w", err)
		}
		prevSize = prev.Size
	}
	covered, err := l.rotations(prevSize, last.Size)
	if err != nil {
		return fmt.Errorf("key custody: %w", err)
	}
	where := fmt.Sprintf("checkpoint %d, size %d", last.Seq, last.Size)
	if len(covered) == 0 {
		return signedBy(last.Note, s, where)
	}
	// The checkpoint completes rotations: it is signed by the first one's
	// old key, and the last one's new key is the log's key now.
	ov, err := note.NewVerifier(covered[0].Old)
	if err != nil {
		return fmt.Errorf("key custody: entry %d: %w", covered[0].Index, err)
	}
	if _, err := note.Open(last.Note, note.VerifierList(ov)); err != nil {
		return fmt.Errorf("key custody: %s covers the key rotation at entry %d but is not signed by its old key %s: %w", where, covered[0].Index, vkeyID(covered[0].Old), err)
	}
	want := covered[len(covered)-1]
	if !isKey(s, want.New) {
		return &KeyError{Key: signerID(s), Want: vkeyID(want.New), Why: fmt.Sprintf("entry %d rotated the log's key from %s to %s, and %s covers it", want.Index, vkeyID(want.Old), vkeyID(want.New), where)}
	}
	return nil
}

// signedBy checks that msg is signed by s.
func signedBy(msg []byte, s note.Signer, where string) error {
	var uv *note.UnverifiedNoteError
	_, err := note.Open(msg, note.VerifierList())
	if !errors.As(err, &uv) {
		return fmt.Errorf("key custody: %s: %w", where, err)
	}
	var ids []string
	for _, sig := range uv.Note.UnverifiedSigs {
		ids = append(ids, keyID(sig.Name, sig.Hash))
	}
	if vk, ok := s.(verifierKeyer); ok {
		v, err := note.NewVerifier(vk.VerifierKey())
		if err != nil {
			return fmt.Errorf("key custody: signer's verifier key: %w", err)
		}
		if _, err := note.Open(msg, note.VerifierList(v)); err == nil {
			return nil
		}
	} else if slices.Contains(ids, signerID(s)) {
		return nil
	}
	return &KeyError{Key: signerID(s), Want: strings.Join(ids, ", "), Why: "it signed the log's latest checkpoint, " + where}
}

// isKey reports whether s is the key vkey names.
func isKey(s note.Signer, vkey string) bool {
	if vk, ok := s.(verifierKeyer); ok {
		return vk.VerifierKey() == vkey
	}
	return signerID(s) == vkeyID(vkey)
}

// RotateKey changes the signing key of l from old, its current key, to the
// key newKey names (a verifier key, name+hash+key, with the same name): it
// appends a key rotation entry naming both keys and signs a checkpoint that
// covers it with old, and returns that checkpoint. From then on only the
// new key may sign l's checkpoints. The caller publishes the new verifier
// key and installs the new private key.
//
// old must know its verifier key (LoadKeyFile's signers and PKCS#11 keys
// do), which the entry records so that a verifier trusting either key can
// follow the chain. If the last entry of l is this very rotation, not yet
// covered (RotateKey was interrupted), RotateKey only signs the checkpoint.
func RotateKey(l *Log, old note.Signer, newKey string, opts CheckpointOptions) ([]byte, error) {
	vk, ok := old.(verifierKeyer)
	if !ok {
		return nil, errors.New("rotate key: the old signer does not tell its verifier key")
	}
	r := rotation{Index: l.Size() - 1, Old: vk.VerifierKey(), New: newKey}
	if err := checkRotationKeys(KindKeyRotation, r.Old, r.New); err != nil {
		return nil, fmt.Errorf("rotate key: %w", err)
	}
	c, err := newCheckpointer(l, old, opts, &r)
	if err != nil {
		return nil, fmt.Errorf("rotate key: %w", err)
	}
	last, err := l.rotations(c.last.Size, l.Size())
	if err != nil {
		return nil, fmt.Errorf("rotate key: %w", err)
	}
	if len(last) == 0 { // not resuming
		e := &Entry{Kind: KindKeyRotation, Time: time.Now().UTC(), OldKey: r.Old, NewKey: r.New,
			Message: fmt.Sprintf("key rotation: checkpoints after the one covering this entry are signed by %s, not %s", vkeyID(r.New), vkeyID(r.Old))}
		if _, err := l.Append(context.Background(), e); err != nil {
			return nil, fmt.Errorf("rotate key: %w", err)
		}
	}
	msg, err := c.Checkpoint()
	if err != nil {
		return nil, fmt.Errorf("rotate key: %w", err)
	}
	return msg, nil
}

// keyChain is the sequence of a log's keys as its rotation entries give
// it, walked along the log's checkpoints by a verifier that trusts one of
// them. Era i's checkpoints are signed by keys[i]; era i ends with the
// first checkpoint that covers rotation i (signed by keys[i]). The trusted
// key must have signed at least one checkpoint: that checkpoint vouches for
// every entry before it, the rotation entries naming the earlier keys
// among them, and its own rotations vouch for the later keys.
type keyChain struct {
	trusted note.Verifier
	keys    []note.Verifier
	rots    []rotation
	era     int  // the era of the next checkpoint
	vouched bool // a checkpoint verified with the trusted key
}

func newKeyChain(trusted note.Verifier, rots []rotation) (*keyChain, *VerifyError) {
	c := &keyChain{trusted: trusted, rots: rots}
	if len(rots) == 0 {
		c.keys = []note.Verifier{trusted}
		return c, nil
	}
	add := func(vkey string, at int64) *VerifyError {
		if vkeyID(vkey) == keyID(trusted.Name(), trusted.KeyHash()) {
			c.keys = append(c.keys, trusted)
			return nil
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return &VerifyError{Class: BadRotation, Index: at, Err: err}
		}
		c.keys = append(c.keys, v)
		return nil
	}
	if verr := add(rots[0].Old, rots[0].Index); verr != nil {
		return nil, verr
	}
	for i, r := range rots {
		if i > 0 && r.Old != rots[i-1].New {
			return nil, &VerifyError{Class: BadRotation, Index: r.Index, Err: fmt.Errorf("rotates from %s, but the log's key is %s by then (entry %d)", vkeyID(r.Old), vkeyID(rots[i-1].New), rots[i-1].Index)}
		}
		if verr := add(r.New, r.Index); verr != nil {
			return nil, verr
		}
	}
	return c, nil
}

// open verifies the next checkpoint with the key of its era, then moves to
// the era after every rotation it covers.
func (c *keyChain) open(msg []byte, where string) (Checkpoint, *VerifyError) {
	key := c.keys[c.era]
	cp, verr := openCheckpoint(msg, key, where)
	if verr != nil {
		if verr.Class == UnknownKey {
			verr.Err = fmt.Errorf("not signed by %s, the log's key at this point: a key changes only at a key rotation entry covered by a checkpoint of the old key: %w", keyID(key.Name(), key.KeyHash()), verr.Err)
		}
		return Checkpoint{}, verr
	}
	if key == c.trusted {
		c.vouched = true
	}
	for c.era < len(c.rots) && c.rots[c.era].Index < cp.Size {
		c.era++
	}
	return cp, nil
}

// openAny verifies a checkpoint signed by any key of the chain (a
// checkpoint saved earlier: --since).
func (c *keyChain) openAny(msg []byte, where string) (Checkpoint, *VerifyError) {
	var first *VerifyError
	for _, k := range c.keys {
		cp, verr := openCheckpoint(msg, k, where)
		if verr == nil {
			return cp, nil
		}
		if first == nil {
			first = verr
		}
	}
	return Checkpoint{}, first
}

// check fails if checkpoints were verified but none with the trusted key.
func (c *keyChain) check(checkpoints int) *VerifyError {
	if checkpoints == 0 || c.vouched {
		return nil
	}
	var ids []string
	for _, k := range c.keys {
		ids = append(ids, keyID(k.Name(), k.KeyHash()))
	}
	return &VerifyError{Class: UnknownKey, Index: -1, Err: fmt.Errorf("no checkpoint is signed by the trusted key %s (the log's keys, in order: %v)", keyID(c.trusted.Name(), c.trusted.KeyHash()), ids)}
}

// LatestCheckpoint returns the last checkpoint l issued, a signed note, or
// nil if there is none. It is not verified: it is the log's own.
func (l *Log) LatestCheckpoint() ([]byte, error) {
	last, err := latestCheckpoint(filepath.Join(l.dir, checkpointDir))
	if err != nil {
		return nil, fmt.Errorf("latest checkpoint: %w", err)
	}
	return last.Note, nil
}
