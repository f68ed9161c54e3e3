package audit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// returns runs f and returns its error, failing the test if f never
// returns. The wait is a guard against a hang (tlog's maxpow2 loops forever
// on a tree over 2^62, ignoring every signal), not a timing assertion: a
// correct verifier answers at once.
func returns(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("the verifier did not return: it hangs on this input")
		return nil
	}
}

// TestReceiptHugeTree: a receipt whose checkpoint, validly signed by the
// log's key, claims a tree of 2^62 entries or more is refused, instead of
// spinning forever in tlog.CheckRecord.
func TestReceiptHugeTree(t *testing.T) {
	dir, s, v, _ := tamperLog(t)
	l := openTest(t, dir, Options{})
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	good, err := cp.Receipt(6)
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseReceipt(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{1 << 62, 1<<62 + 1, math.MaxInt64} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := Checkpoint{Origin: testOrigin, Size: size, Root: tlog.Hash{1}}
			receipt := FormatReceipt(r.Entry, r.Index, r.Proof, signCheckpoint(t, c, s))
			err := returns(t, func() error { _, _, err := VerifyReceipt(receipt, v); return err })
			wantClass(t, err, BadSignature, -1)
			if !strings.Contains(err.Error(), "over the limit") {
				t.Errorf("got %v, want it to name the limit", err)
			}
		})
	}
}

// TestParseReceiptBounds: an index at or beyond MaxTreeSize, and a proof
// longer than any tree of that size needs, are refused when parsed.
func TestParseReceiptBounds(t *testing.T) {
	cp := []byte("example.com/log\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log AAAA\n")
	tests := []struct {
		name  string
		index int64
		proof int
		ok    bool
	}{
		{"largest index", MaxTreeSize - 1, 62, true},
		{"index at the limit", MaxTreeSize, 1, false},
		{"largest int64 index", math.MaxInt64, 1, false},
		{"63 proof hashes", 5, 63, false},
		{"a thousand proof hashes", 5, 1000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := FormatReceipt([]byte(`{"kind":"note"}`), tt.index, make(tlog.RecordProof, tt.proof), cp)
			_, err := ParseReceipt(b)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestVerifyTilesHugeTree: a tiles directory whose checkpoint claims a tree
// over 2^62 is refused, instead of spinning in tlog.TileHashReader.
func TestVerifyTilesHugeTree(t *testing.T) {
	dir, s, v := signedTiles(t)
	for _, tt := range []struct {
		size  int64
		class Class
		index int64
	}{
		{1<<62 + 1, BadSignature, -1},
		{1 << 62, BadSignature, -1},
		// The largest size accepted: tlog answers for it (here: the tiles
		// the root needs are not there).
		{MaxTreeSize, Inconsistent, 0},
	} {
		c := Checkpoint{Origin: testOrigin, Size: tt.size, Root: tlog.Hash{1}}
		if err := os.WriteFile(filepath.Join(dir, "checkpoint"), signCheckpoint(t, c, s), 0o644); err != nil {
			t.Fatal(err)
		}
		err := returns(t, func() error { _, err := VerifyTiles(dir, v, VerifyOptions{}); return err })
		wantClass(t, err, tt.class, tt.index)
	}
}

// TestVerifyTilesEndlessFile: a tile, an entry bundle or the checkpoint
// that never ends (a symlink to /dev/zero) is refused after its bound, not
// read until memory runs out.
func TestVerifyTilesEndlessFile(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	for _, tt := range []struct {
		file  string
		class Class
		index int64
	}{
		{"checkpoint", BadSignature, -1},
		{"tile/entries/000", ModifiedEntry, 0},
	} {
		t.Run(tt.file, func(t *testing.T) {
			dir, _, v := signedTiles(t)
			path := filepath.Join(dir, tt.file)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
			err := returns(t, func() error { _, err := VerifyTiles(dir, v, VerifyOptions{}); return err })
			wantClass(t, err, tt.class, tt.index)
		})
	}
	t.Run("tile/0/000", func(t *testing.T) {
		dir, _, v := signedTiles(t)
		path := filepath.Join(dir, "tile/0/000")
		os.Remove(path)
		if err := os.Symlink("/dev/zero", path); err != nil {
			t.Fatal(err)
		}
		err := returns(t, func() error { _, err := VerifyTiles(dir, v, VerifyOptions{}); return err })
		if !errors.Is(err, errTooLarge) {
			t.Fatalf("got %v, want %v", err, errTooLarge)
		}
	})
}

// TestCheckpointDuplicateSignature: a checkpoint carrying a valid signature
// and then a bad one by the same key is refused. note.Open verifies only
// the first signature of each key and skips the rest unverified.
func TestCheckpointDuplicateSignature(t *testing.T) {
	dir, _, v, cps := tamperLog(t)
	msg := string(cps[1])
	sig := msg[strings.LastIndex(msg, "\n\n")+2:]
	// The same key's line with the signature's last bytes changed.
	bad := sig[:len(sig)-6] + "AAAA=\n"
	if bad == sig {
		bad = sig[:len(sig)-6] + "BBBB=\n"
	}
	tests := []struct {
		name string
		msg  string
	}{
		{"valid then bad", msg + bad},
		{"valid twice", msg + sig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, checkpointDir, checkpointName(2)), []byte(tt.msg), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := VerifyDir(dir, v, VerifyOptions{})
			wantClass(t, err, BadSignature, -1)
			_, err = VerifyDir(dir, v, VerifyOptions{Since: []byte(tt.msg)})
			wantClass(t, err, BadSignature, -1)
		})
	}
}

// signedTiles builds a log of 300 entries exported as tiles with one
// checkpoint, and returns the tiles directory, the signer and the verifier.
func signedTiles(t *testing.T) (string, note.Signer, note.Verifier) {
	t.Helper()
	dir, tiles := t.TempDir(), t.TempDir()
	l := openTest(t, dir, Options{})
	defer l.Close()
	s, v := testKey(t, testOrigin)
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{TilesDir: tiles})
	for i := range 300 {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	return tiles, s, v
}
