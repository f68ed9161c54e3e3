package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
)

// TilesLog reads the entries of a C2SP tlog-tiles directory (an export of
// the log in PostgreSQL, `rulelock log export`), as the replay reads a log
// directory: Size, ReadEntries and Blob (gateway.LogReader). Fields stored
// by digest are read from blobs/<hex digest> beside the tiles. It checks
// nothing of the tree: VerifyTiles does, and the replay runs after it.
type TilesLog struct {
	dir  string
	size int64
}

// OpenTiles opens the tiles directory dir, whose checkpoint says its size.
func OpenTiles(dir string) (*TilesLog, error) {
	msg, err := readFileMax(filepath.Join(dir, "checkpoint"), MaxCheckpointSize)
	if err != nil {
		return nil, fmt.Errorf("open tiles %s: %w", dir, err)
	}
	_, err = note.Open(msg, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		return nil, fmt.Errorf("open tiles %s: checkpoint: %v", dir, err)
	}
	cp, err := ParseCheckpoint([]byte(uv.Note.Text))
	if err != nil {
		return nil, fmt.Errorf("open tiles %s: %w", dir, err)
	}
	return &TilesLog{dir: dir, size: cp.Size}, nil
}

// Size returns the number of entries the checkpoint covers.
func (t *TilesLog) Size() int64 { return t.size }

// ReadEntries returns entries [lo, hi).
func (t *TilesLog) ReadEntries(lo, hi int64) ([][]byte, error) {
	if lo < 0 || hi > t.size || lo > hi {
		return nil, fmt.Errorf("read entries [%d, %d): out of range [0, %d)", lo, hi, t.size)
	}
	out := make([][]byte, 0, hi-lo)
	for i := lo; i < hi; {
		n := i >> tileHeight
		w := min(1<<tileHeight, t.size-n<<tileHeight)
		entries, _, verr := readBundle(t.dir, n, int(w))
		if verr != nil {
			return nil, verr
		}
		for ; i < hi && i>>tileHeight == n; i++ {
			out = append(out, entries[i-n<<tileHeight])
		}
	}
	return out, nil
}

// Blob returns a field stored by digest, from blobs/<hex digest>.
func (t *TilesLog) Blob(d Digest) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(t.dir, "blobs", hex.EncodeToString(d[:])))
	if err != nil {
		return nil, fmt.Errorf("blob %x: %w", d[:], err)
	}
	if sha256.Sum256(b) != d {
		return nil, fmt.Errorf("blob %x: content does not match its digest", d[:])
	}
	return b, nil
}
