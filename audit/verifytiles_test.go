package audit

import (
	"context"
	"os"
	"path/filepath"
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
