package audit

import (
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrNeedConsistencyProof is CompareCheckpoints' answer for two checkpoints
// of different sizes and nothing to relate them: a consistency proof, or
// the log's tiles, is needed.
var ErrNeedConsistencyProof = errors.New("the checkpoints have different sizes: a consistency proof or the log's tiles are needed")

// CompareOptions relate two checkpoints of different sizes. The zero value
// works for two checkpoints of one size.
type CompareOptions struct {
	// Proof is a consistency proof from the smaller tree to the larger.
	// One that verifies shows the checkpoints fit; one that does not
	// proves nothing (anyone can write a bad proof).
	Proof tlog.TreeProof
	// TilesDir is a C2SP tlog-tiles directory of the log. Its hashes are
	// authenticated by the larger checkpoint, so a smaller tree they give
	// another root than the smaller checkpoint proves an equivocation.
	TilesDir string
}

// CompareCheckpoints checks two signed checkpoint notes of one log against
// each other, without the log. It returns nil when they fit: same size and
// root, or a consistency proof (or the tiles) shows the larger extends the
// smaller. Both must be validly signed by key (its name is the origin);
// when they do not fit it returns a *VerifyError of class Equivocation
// whose Notes are the two notes: the proof of the log's misbehaviour.
func CompareCheckpoints(a, b []byte, key note.Verifier, opts CompareOptions) error {
	ca, verr := openCheckpoint(a, key, "first checkpoint")
	if verr != nil {
		return verr
	}
	cb, verr := openCheckpoint(b, key, "second checkpoint")
	if verr != nil {
		return verr
	}
	if ca.Size > cb.Size {
		ca, cb, a, b = cb, ca, b, a
	}
	equivocation := func(err error) error {
		return &VerifyError{Class: Equivocation, Index: ca.Size, Notes: [][]byte{a, b}, Err: err}
	}
	if cb.Size > 1<<62 {
		// tlog's proof code does not terminate beyond 2^62.
		return &VerifyError{Class: BadProof, Index: cb.Size, Err: fmt.Errorf("tree size %d beyond 2^62", cb.Size)}
	}
	switch {
	case ca.Size == cb.Size && ca.Root == cb.Root:
		return nil
	case ca.Size == cb.Size:
		return equivocation(fmt.Errorf("two signed checkpoints of size %d with different roots %v and %v", ca.Size, ca.Root, cb.Root))
	case ca.Size == 0:
		return nil // the empty tree is a prefix of every tree
	case opts.TilesDir != "":
		hr := tlog.TileHashReader(tlog.Tree{N: cb.Size, Hash: cb.Root}, tileFiles{opts.TilesDir})
		root, err := tlog.TreeHash(ca.Size, hr)
		if err != nil {
			return &VerifyError{Class: BadProof, Index: ca.Size, File: opts.TilesDir, Err: fmt.Errorf("tiles for the tree of size %d: %w", cb.Size, err)}
		}
		if root != ca.Root {
			return equivocation(fmt.Errorf("the tree of size %d signed in the larger checkpoint has root %v, the smaller checkpoint says %v", ca.Size, root, ca.Root))
		}
		return nil
	case opts.Proof != nil:
		if err := tlog.CheckTree(opts.Proof, cb.Size, cb.Root, ca.Size, ca.Root); err != nil {
			return &VerifyError{Class: BadProof, Index: ca.Size, Err: fmt.Errorf("the consistency proof from %d to %d does not verify (that proves nothing; the log's tiles can): %w", ca.Size, cb.Size, err)}
		}
		return nil
	}
	return fmt.Errorf("sizes %d and %d: %w", ca.Size, cb.Size, ErrNeedConsistencyProof)
}
