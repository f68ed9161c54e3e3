package audit

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MaxBlobSize bounds a field stored by digest: Append refuses a longer
// field and a decoder an entry that claims one, so that a verifier hashes
// at most this much of a blob.
const MaxBlobSize = 1 << 30

// ErrActionMismatch is an action that is not the one its entry's
// action_sha256 names: stored by another digest, hashing to another value,
// or (for readers that know which actions are canonical JSON) not in
// canonical form.
var ErrActionMismatch = errors.New("action does not match its action_sha256")

// checkDigests checks the digests an entry's encoding holds against each
// other: an action stored by digest has exactly its action_sha256 as that
// digest (both are the SHA-256 of the canonical action), and a field
// stored by digest has a size from 1 to MaxBlobSize and no commitment
// besides. (appendEncoding hashes an inline action; checkBlobs a blob.)
func (e *Entry) checkDigests() error {
	if !e.Action.Digest.IsZero() && e.Action.Digest != e.ActionSHA256 {
		return fmt.Errorf("%w: action stored by digest %v, action_sha256 is %v", ErrActionMismatch, e.Action.Digest, e.ActionSHA256)
	}
	for _, f := range e.fields() {
		if !f.field.Digest.IsZero() && !f.field.Commitment.IsZero() {
			return fmt.Errorf("%s stored both by digest and as a commitment", f.name)
		}
		if !f.field.Digest.IsZero() && (f.field.Size < 1 || f.field.Size > MaxBlobSize) {
			return fmt.Errorf("%s stored by digest with size %d, want 1 to %d", f.name, f.field.Size, MaxBlobSize)
		}
	}
	return nil
}

type namedField struct {
	name  string
	field *Field
}

// fields returns e's text fields with their member names.
func (e *Entry) fields() [5]namedField {
	return [...]namedField{{"action", &e.Action}, {"instruction", &e.Instruction}, {"reasoning", &e.Reasoning}, {"result", &e.Result}, {"state", &e.State}}
}

// blobError is a field whose blob is missing or does not match its digest.
type blobError struct {
	path string // relative to the log directory
	err  error
}

func (e *blobError) Error() string { return e.err.Error() }

// checkBlobs checks every field of e stored by digest against its blob in
// the log directory dir: the blob exists, has the recorded size and hashes
// to the recorded digest (for the action, its action_sha256: checkDigests
// made them one). It reads at most the recorded size plus one byte.
func checkBlobs(dir string, e *Entry) error {
	for _, f := range e.fields() {
		d := f.field.Digest
		if d.IsZero() {
			continue
		}
		rel := filepath.Join(blobDir, d.String())
		if err := checkBlob(filepath.Join(dir, rel), d, f.field.Size); err != nil {
			return &blobError{rel, fmt.Errorf("%s blob %s: %w", f.name, rel, err)}
		}
	}
	// A refusal's raw bytes are kept only up to Options.MaxRaw and may be
	// deleted (they may hold what an agent should not have sent): absent
	// is fine, present must be exactly the bytes the entry names.
	if d := e.Raw.Digest; !d.IsZero() {
		rel := filepath.Join(blobDir, d.String())
		if _, err := os.Lstat(filepath.Join(dir, rel)); err == nil {
			if err := checkBlob(filepath.Join(dir, rel), d, e.Raw.Size); err != nil {
				return &blobError{rel, fmt.Errorf("raw blob %s: %w", rel, err)}
			}
		}
	}
	return nil
}

func checkBlob(path string, d Digest, size int64) error {
	fd, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fd.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(fd, size+1))
	switch {
	case err != nil:
		return err
	case n != size:
		return fmt.Errorf("%d bytes or more, the entry says %d", n, size)
	case Digest(h.Sum(nil)) != d:
		return errors.New("content does not match its digest")
	}
	return nil
}
