package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// IsTilesDir reports whether dir looks like a C2SP tlog-tiles directory
// (a checkpoint file and a tile directory) rather than a log directory.
func IsTilesDir(dir string) bool {
	_, err1 := os.Stat(filepath.Join(dir, "checkpoint"))
	_, err2 := os.Stat(filepath.Join(dir, "tile"))
	_, err3 := os.Stat(filepath.Join(dir, segDir))
	return err1 == nil && err2 == nil && err3 != nil
}

// VerifyTiles verifies a C2SP tlog-tiles directory the way a remote auditor
// does: the checkpoint's signature, the hash tiles against its root (through
// tlog.TileHashReader), every entry of every entry bundle against its leaf
// hash and its encoding, and with opts.Since that the tree extends a
// checkpoint saved earlier. Report.Checkpoints is 1 (the directory holds the
// latest checkpoint only).
func VerifyTiles(dir string, key note.Verifier, opts VerifyOptions) (*Report, error) {
	msg, err := readFileMax(filepath.Join(dir, "checkpoint"), MaxCheckpointSize)
	if errors.Is(err, errTooLarge) {
		return nil, &VerifyError{Class: BadSignature, Index: -1, File: "checkpoint", Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("verify tiles: %w", err)
	}
	cp, verr := openCheckpoint(msg, key, "checkpoint")
	if verr != nil {
		return nil, verr
	}
	hr := tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Root}, tileFiles{dir})
	d := &dirLog{dir: dir}
	checks := newEncodingChecks()
	defer checks.wait()
	for n := int64(0); n<<tileHeight < cp.Size; n++ {
		w := min(1<<tileHeight, cp.Size-n<<tileHeight)
		entries, path, verr := readBundle(dir, n, int(w))
		if verr != nil {
			return nil, verr
		}
		idx := make([]int64, w)
		for k := range idx {
			idx[k] = tlog.StoredHashIndex(0, n<<tileHeight+int64(k))
		}
		leaves, err := hr.ReadHashes(idx)
		if err != nil {
			return nil, &VerifyError{Class: Inconsistent, Index: n << tileHeight, File: "tile/0", Err: err}
		}
		frames := make([]scanned, 0, len(entries))
		for k, e := range entries {
			i := n<<tileHeight + int64(k)
			if tlog.RecordHash(e) != leaves[k] {
				return nil, &VerifyError{Class: ModifiedEntry, Index: i, File: path, Err: errors.New("entry does not match its leaf hash")}
			}
			frames = append(frames, scanned{frame{index: i, payload: e}, path})
			hs, err := tlog.StoredHashesForRecordHash(i, leaves[k], d)
			if err != nil {
				return nil, fmt.Errorf("verify tiles: %w", err)
			}
			d.hashes = append(d.hashes, hs...)
			d.n++
		}
		checks.submit(frames)
	}
	if err := checks.wait(); err != nil {
		return nil, err
	}
	if verr := d.checkTree(cp, Checkpoint{}, "checkpoint"); verr != nil {
		return nil, verr
	}
	if opts.Since != nil {
		since, verr := openCheckpoint(opts.Since, key, "since")
		if verr != nil {
			return nil, verr
		}
		if verr := d.checkSince(since, opts.Since, msg); verr != nil {
			return nil, verr
		}
	}
	if opts.Witnesses != nil {
		if err := opts.Witnesses.Check(msg, "checkpoint"); err != nil {
			return nil, err
		}
	}
	return &Report{Entries: cp.Size, Checkpoints: 1, Size: cp.Size, Root: cp.Root, Latest: msg}, nil
}

// readBundle reads the first w entries of entry bundle n, from the partial
// bundle of that width or the full one.
func readBundle(dir string, n int64, w int) ([][]byte, string, *VerifyError) {
	t := tlog.Tile{H: tileHeight, L: -1, N: n, W: w}
	path := TilePath(t)
	data, err := readFileMax(filepath.Join(dir, path), maxBundleSize)
	if errors.Is(err, fs.ErrNotExist) && w < 1<<tileHeight {
		t.W = 1 << tileHeight
		path = TilePath(t)
		data, err = readFileMax(filepath.Join(dir, path), maxBundleSize)
	}
	if errors.Is(err, errTooLarge) {
		return nil, path, &VerifyError{Class: ModifiedEntry, Index: n << tileHeight, File: path, Err: err}
	}
	if err != nil {
		return nil, path, &VerifyError{Class: MissingEntry, Index: n << tileHeight, File: path, Err: err}
	}
	var entries [][]byte
	for len(entries) < w {
		i := n<<tileHeight + int64(len(entries))
		if len(data) < 2 {
			return nil, path, &VerifyError{Class: Truncated, Index: i, File: path, Err: errors.New("entry bundle ends early")}
		}
		l := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+l {
			return nil, path, &VerifyError{Class: Truncated, Index: i, File: path, Err: errors.New("entry bundle ends inside an entry")}
		}
		entries = append(entries, data[2:2+l])
		data = data[2+l:]
	}
	if len(data) != 0 && t.W == w {
		return nil, path, &VerifyError{Class: ModifiedEntry, Index: n<<tileHeight + int64(w), File: path, Err: errors.New("trailing data in entry bundle")}
	}
	return entries, path, nil
}

// tileFiles reads hash tiles from a tiles directory for tlog.TileHashReader.
type tileFiles struct{ dir string }

func (r tileFiles) Height() int { return tileHeight }

// ReadTiles reads each tile, or for a partial tile that is gone (the log
// deletes them once the full tile is out), the full tile's first hashes.
func (r tileFiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := readFileMax(filepath.Join(r.dir, TilePath(t)), maxTileSize)
		if errors.Is(err, fs.ErrNotExist) && t.W < 1<<tileHeight {
			full := t
			full.W = 1 << tileHeight
			if fb, ferr := readFileMax(filepath.Join(r.dir, TilePath(full)), maxTileSize); ferr == nil && len(fb) >= t.W*tlog.HashSize {
				b, err = fb[:t.W*tlog.HashSize], nil
			}
		}
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (r tileFiles) SaveTiles([]tlog.Tile, [][]byte) {}
