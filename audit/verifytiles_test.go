package audit

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tilesLog builds a log of 600 entries exported as tiles with checkpoints at
// 300 and 600, and returns the tiles directory and the checkpoints.
func tilesLog(t *testing.T) (string, note.Verifier, [][]byte) {
	dir, tiles := t.TempDir(), t.TempDir()
	l := openTest(t, dir, Options{})
	defer l.Close()
	s, v := testKey(t, testOrigin)
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{TilesDir: tiles})
	var cps [][]byte
	for i := range 600 {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
		if i == 299 || i == 599 {
			msg, err := cp.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, msg)
		}
	}
	return tiles, v, cps
}

func TestVerifyTiles(t *testing.T) {
	tiles, v, cps := tilesLog(t)
	if !IsTilesDir(tiles) {
		t.Fatal("IsTilesDir = false")
	}
	_, other := testKey(t, testOrigin)
	_, err := VerifyTiles(tiles, other, VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
	rep, err := VerifyTiles(tiles, v, VerifyOptions{Since: cps[0]})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Size != 600 {
		t.Fatalf("size %d, want 600", rep.Size)
	}

	bundle1 := filepath.Join(tiles, TilePath(tlog.Tile{H: tileHeight, L: -1, N: 1, W: 256}))
	data, _ := os.ReadFile(bundle1)
	data[2+10] ^= 1
	os.WriteFile(bundle1, data, 0o644)
	_, err = VerifyTiles(tiles, v, VerifyOptions{})
	wantClass(t, err, ModifiedEntry, 256)

	os.Remove(bundle1)
	_, err = VerifyTiles(tiles, v, VerifyOptions{})
	wantClass(t, err, MissingEntry, 256)

	// An older checkpoint published over the newer one is a rollback for an
	// auditor who saw the newer.
	tiles2, v2, cps2 := tilesLog(t)
	os.WriteFile(filepath.Join(tiles2, "checkpoint"), cps2[0], 0o644)
	_, err = VerifyTiles(tiles2, v2, VerifyOptions{Since: cps2[1]})
	wantClass(t, err, Rollback, 300)
}

// TestTilesDropCompletedPartials: once a tile is full its partial tiles and
// bundles are deleted (C2SP tlog-tiles allows it), the partials of a tile
// still growing are all kept, and a client of an older checkpoint still
// reads its tree from the full tiles.
func TestTilesDropCompletedPartials(t *testing.T) {
	dir, tiles := t.TempDir(), t.TempDir()
	l := openTest(t, dir, Options{})
	defer l.Close()
	s, v := testKey(t, testOrigin)
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{TilesDir: tiles})
	var old []byte // the checkpoint of size 300
	for i := range 700 {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
		switch i + 1 {
		case 10, 100, 300, 520, 600, 700:
			msg, err := cp.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			if i+1 == 300 {
				old = msg
			}
		}
	}
	var partials []string
	filepath.WalkDir(tiles, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(path, ".p/") {
			rel, _ := filepath.Rel(tiles, path)
			partials = append(partials, rel)
		}
		return nil
	})
	slices.Sort(partials)
	// 700 entries: tiles 0 and 1 full at level 0; tile 2 partial, with the
	// widths of the checkpoints at 520, 600 and 700; at level 1 the tree's
	// partial tile of width 1 and then 2 (256 and 512 entries: sizes 300 and up).
	want := []string{"tile/0/002.p/188", "tile/0/002.p/8", "tile/0/002.p/88",
		"tile/1/000.p/1", "tile/1/000.p/2",
		"tile/entries/002.p/188", "tile/entries/002.p/8", "tile/entries/002.p/88"}
	if !slices.Equal(partials, want) {
		t.Fatalf("partial tiles:\n%s\nwant:\n%s", strings.Join(partials, "\n"), strings.Join(want, "\n"))
	}
	if _, err := VerifyTiles(tiles, v, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	// A client of the checkpoint of size 300: its partial level-0 tile and
	// bundle (tile 1, width 44) are gone; the full ones serve it.
	n, err := note.Open(old, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCheckpoint([]byte(n.Text))
	hr := tlog.TileHashReader(tlog.Tree{N: c.Size, Hash: c.Root}, tileFiles{tiles})
	leaves, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, 299), tlog.StoredHashIndex(0, 256)})
	if err != nil {
		t.Fatalf("tree of size 300 from the full tiles: %v", err)
	}
	entries, _, verr := readBundle(tiles, 1, 44)
	if verr != nil {
		t.Fatal(verr)
	}
	if tlog.RecordHash(entries[43]) != leaves[0] || tlog.RecordHash(entries[0]) != leaves[1] {
		t.Fatal("entries of the size-300 tree do not match its leaves")
	}
}
