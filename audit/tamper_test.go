package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tamperLog builds a closed log of 20 entries in one segment with
// checkpoints at sizes 10 and 20. It returns the directory, the signer and
// the signed checkpoints.
func tamperLog(t *testing.T) (string, note.Signer, note.Verifier, [][]byte) {
	t.Helper()
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	s, v := testKey(t, testOrigin)
	cp, err := NewCheckpointer(l, s, CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cps [][]byte
	for i := range 20 {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
		if i == 9 || i == 19 {
			msg, err := cp.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, msg)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, s, v, cps
}

// segFrames returns the segment file's bytes and its frames.
func segFrames(t *testing.T, dir string) (string, []byte, []frame) {
	t.Helper()
	path := filepath.Join(dir, segDir, segName(0))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var frames []frame
	r := strings.NewReader(string(data))
	for off := int64(0); ; {
		fr, err := readFrame(r, off, int64(len(data)))
		if err == errEnd {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, fr)
		off += frameHeader + int64(len(fr.payload))
	}
	return path, data, frames
}

func frameBytes(data []byte, f frame) []byte {
	return data[f.off : f.off+frameHeader+int64(len(f.payload))]
}

// writeFrames replaces the segment's frames with raw frame bytes.
func writeFrames(t *testing.T, path string, size int, raw ...[]byte) {
	t.Helper()
	out := make([]byte, 0, size)
	for _, r := range raw {
		out = append(out, r...)
	}
	out = append(out, make([]byte, size-len(out))...)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rebuildLog rewrites the log from entries with valid frames, chain and a
// fresh set of checkpoints signed by s: what an insider with the key can do.
func rebuildLog(t *testing.T, dir string, s note.Signer, entries [][]byte) {
	t.Helper()
	path, data, _ := segFrames(t, dir)
	var raw [][]byte
	var chain tlog.Hash
	for i, e := range entries {
		chain = nextChain(chain, tlog.RecordHash(e))
		raw = append(raw, appendFrame(nil, int64(i), chain, e))
	}
	writeFrames(t, path, len(data), raw...)
	os.RemoveAll(filepath.Join(dir, checkpointDir))
	os.Remove(filepath.Join(dir, hashesFile))
	l := openTest(t, dir, Options{})
	cp, err := NewCheckpointer(l, s, CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func signCheckpoint(t *testing.T, c Checkpoint, s note.Signer) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: string(c.Text())}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func wantClass(t *testing.T, err error, class Class, index int64) {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("got error %v, want a %s failure", err, class)
	}
	if ve.Class != class || ve.Index != index {
		t.Fatalf("got %s at %d (%v), want %s at %d", ve.Class, ve.Index, ve, class, index)
	}
}

func TestTamper(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string, s note.Signer, cps [][]byte) VerifyOptions
		class  Class
		index  int64
	}{
		{"flip one byte of an entry", func(t *testing.T, dir string, _ note.Signer, _ [][]byte) VerifyOptions {
			path, data, frames := segFrames(t, dir)
			data[frames[5].off+frameHeader+10] ^= 1
			os.WriteFile(path, data, 0o600)
			return VerifyOptions{}
		}, ModifiedEntry, 5},
		{"change an entry and its CRC", func(t *testing.T, dir string, _ note.Signer, _ [][]byte) VerifyOptions {
			path, data, frames := segFrames(t, dir)
			f := frames[7]
			p := []byte(strings.Replace(string(f.payload), "deny", "allo", 1))
			raw := make([][]byte, len(frames))
			for i, g := range frames {
				raw[i] = frameBytes(data, g)
			}
			raw[7] = appendFrame(nil, f.index, f.chain, p)
			writeFrames(t, path, len(data), raw...)
			return VerifyOptions{}
		}, ModifiedEntry, 7},
		{"delete an entry", func(t *testing.T, dir string, _ note.Signer, _ [][]byte) VerifyOptions {
			path, data, frames := segFrames(t, dir)
			var raw [][]byte
			for i, g := range frames {
				if i != 5 {
					raw = append(raw, frameBytes(data, g))
				}
			}
			writeFrames(t, path, len(data), raw...)
			return VerifyOptions{}
		}, MissingEntry, 5},
		{"swap two entries", func(t *testing.T, dir string, _ note.Signer, _ [][]byte) VerifyOptions {
			path, data, frames := segFrames(t, dir)
			var raw [][]byte
			for _, g := range frames {
				raw = append(raw, frameBytes(data, g))
			}
			raw[5], raw[6] = raw[6], raw[5]
			writeFrames(t, path, len(data), raw...)
			return VerifyOptions{}
		}, Reordered, 5},
		{"truncate the log", func(t *testing.T, dir string, _ note.Signer, _ [][]byte) VerifyOptions {
			path, data, frames := segFrames(t, dir)
			writeFrames(t, path, len(data), data[:frames[15].off])
			return VerifyOptions{}
		}, Truncated, 15},
		{"truncate the log and publish a smaller checkpoint", func(t *testing.T, dir string, s note.Signer, _ [][]byte) VerifyOptions {
			_, _, frames := segFrames(t, dir)
			var entries [][]byte
			for _, f := range frames[:15] {
				entries = append(entries, f.payload)
			}
			saved, _ := os.ReadFile(filepath.Join(dir, checkpointDir, checkpointName(2)))
			rebuildLog(t, dir, s, entries)
			return VerifyOptions{Since: saved}
		}, Rollback, 15},
		{"publish a smaller checkpoint after a larger one", func(t *testing.T, dir string, s note.Signer, cps [][]byte) VerifyOptions {
			os.WriteFile(filepath.Join(dir, checkpointDir, checkpointName(3)), cps[0], 0o644)
			return VerifyOptions{}
		}, Rollback, 10},
		{"rebuild the tree with the real key after changing an entry", func(t *testing.T, dir string, s note.Signer, cps [][]byte) VerifyOptions {
			_, _, frames := segFrames(t, dir)
			var entries [][]byte
			for _, f := range frames {
				entries = append(entries, f.payload)
			}
			entries[3] = []byte(strings.Replace(string(entries[3]), `"decision":"deny"`, `"decision":"allow"`, 1))
			rebuildLog(t, dir, s, entries)
			return VerifyOptions{Since: cps[1]}
		}, Equivocation, 20}, // two signed checkpoints of size 20
		{"checkpoint signed by another key", func(t *testing.T, dir string, _ note.Signer, cps [][]byte) VerifyOptions {
			other, _ := testKey(t, testOrigin)
			text, _ := noteText(cps[1])
			c, _ := ParseCheckpoint(text)
			os.WriteFile(filepath.Join(dir, checkpointDir, checkpointName(2)), signCheckpoint(t, c, other), 0o644)
			return VerifyOptions{}
		}, UnknownKey, -1},
		{"checkpoint with a forged signature", func(t *testing.T, dir string, _ note.Signer, cps [][]byte) VerifyOptions {
			msg := []byte(strings.Replace(string(cps[1]), "\n20\n", "\n19\n", 1))
			os.WriteFile(filepath.Join(dir, checkpointDir, checkpointName(2)), msg, 0o644)
			return VerifyOptions{}
		}, BadSignature, -1},
		{"checkpoint with the wrong origin", func(t *testing.T, dir string, s note.Signer, cps [][]byte) VerifyOptions {
			text, _ := noteText(cps[1])
			c, _ := ParseCheckpoint(text)
			c.Origin = "other.example/log"
			os.WriteFile(filepath.Join(dir, checkpointDir, checkpointName(2)), signCheckpoint(t, c, s), 0o644)
			return VerifyOptions{}
		}, BadSignature, -1},
		{"since a checkpoint of a fork", func(t *testing.T, dir string, s note.Signer, cps [][]byte) VerifyOptions {
			text, _ := noteText(cps[0])
			c, _ := ParseCheckpoint(text)
			c.Root[0] ^= 1
			return VerifyOptions{Since: signCheckpoint(t, c, s)}
		}, Equivocation, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s, v, cps := tamperLog(t)
			if _, err := VerifyDir(dir, v, VerifyOptions{Since: cps[0]}); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			opts := tt.tamper(t, dir, s, cps)
			if opts.Since == nil {
				// Without an earlier checkpoint, only what the log
				// itself proves can be detected.
				_, err := VerifyDir(dir, v, opts)
				wantClass(t, err, tt.class, tt.index)
				return
			}
			if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil && tt.class != Inconsistent {
				t.Logf("without --since: %v", err)
			}
			_, err := VerifyDir(dir, v, opts)
			wantClass(t, err, tt.class, tt.index)
		})
	}
}

// TestRebuildUndetectedWithoutSince documents why --since matters: an
// insider with the key who rebuilds the whole log passes a verifier that
// holds no earlier checkpoint.
func TestRebuildUndetectedWithoutSince(t *testing.T) {
	dir, s, v, _ := tamperLog(t)
	_, _, frames := segFrames(t, dir)
	var entries [][]byte
	for _, f := range frames {
		entries = append(entries, f.payload)
	}
	entries[3] = []byte(strings.Replace(string(entries[3]), `"decision":"deny"`, `"decision":"allow"`, 1))
	rebuildLog(t, dir, s, entries)
	if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
		t.Fatalf("got %v, want the rebuilt log to verify on its own", err)
	}
}

func TestReceiptTamper(t *testing.T) {
	dir, s, v, _ := tamperLog(t)
	l := openTest(t, dir, Options{})
	defer l.Close()
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	good, err := cp.Receipt(6)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := VerifyReceipt(good, v); err != nil {
		t.Fatal(err)
	}
	r, _ := ParseReceipt(good)
	reformat := func(f func(r ParsedReceipt) ParsedReceipt) []byte {
		x := f(*r)
		return FormatReceipt(x.Entry, x.Index, x.Proof, x.Checkpoint)
	}
	other, _ := testKey(t, testOrigin)
	text, _ := noteText(r.Checkpoint)
	c, _ := ParseCheckpoint(text)
	// The interior node over entries 6 and 7, passed off as a leaf: its
	// children's hashes as the "entry", with the proof of the parent.
	h6, _ := l.HashReader().ReadHashes([]int64{tlog.StoredHashIndex(0, 6), tlog.StoredHashIndex(0, 7)})
	interior := append(h6[0][:], h6[1][:]...)
	tests := []struct {
		name    string
		receipt []byte
		class   Class
	}{
		{"extra hash", reformat(func(r ParsedReceipt) ParsedReceipt { r.Proof = append(r.Proof, tlog.Hash{}); return r }), BadProof},
		{"missing hash", reformat(func(r ParsedReceipt) ParsedReceipt { r.Proof = r.Proof[:len(r.Proof)-1]; return r }), BadProof},
		{"modified entry", reformat(func(r ParsedReceipt) ParsedReceipt {
			r.Entry = []byte(strings.Replace(string(r.Entry), "deny", "allo", 1))
			return r
		}), BadProof},
		{"wrong index", reformat(func(r ParsedReceipt) ParsedReceipt { r.Index = 7; return r }), BadProof},
		{"leaf passed off as interior node", reformat(func(r ParsedReceipt) ParsedReceipt {
			r.Entry, r.Index, r.Proof = interior, 3, r.Proof[1:]
			return r
		}), BadProof},
		{"checkpoint by another key", reformat(func(r ParsedReceipt) ParsedReceipt { r.Checkpoint = signCheckpoint(t, c, other); return r }), UnknownKey},
		{"garbage", []byte("c2sp.org/tlog-proof@v1\nextra !!\n"), BadProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := VerifyReceipt(tt.receipt, v)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Class != tt.class {
				t.Fatalf("got %v, want %s", err, tt.class)
			}
		})
	}
}

// TestVerifyReportsFirstFailure: the verifier checks encodings in chunks on
// several goroutines while it reads on; whichever check finishes first, the
// failure it reports is the one with the lowest index.
func TestVerifyReportsFirstFailure(t *testing.T) {
	const n = 3 * checkChunk
	dir := t.TempDir()
	l := openTest(t, dir, Options{SegmentSize: 16 << 20}) // one segment
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
				if _, err := l.Append(context.Background(), testEntry(int(i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, frames := segFrames(t, dir)
	if len(frames) != n {
		t.Fatalf("%d frames, want %d", len(frames), n)
	}
	s, v := testKey(t, testOrigin)
	for _, tc := range []struct {
		name      string
		escaped   []int // entries whose kind is written with an escape: decodes, but not canonical
		chainAt   int   // the frame whose hash chain is broken, -1 for none
		want      int64
		wantCause string
	}{
		{"non-canonical entry before a chain break", []int{100}, 2500, 100, "non-canonical"},
		{"chain break before a non-canonical entry", []int{2500}, 100, 100, "hash chain broken"},
		{"two non-canonical entries", []int{2900, 1500}, -1, 1500, "non-canonical"},
		{"non-canonical entry in the last chunk", []int{n - 1}, -1, n - 1, "non-canonical"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := make([][]byte, n)
			for i, f := range frames {
				entries[i] = f.payload
			}
			for _, i := range tc.escaped {
				e := strings.Replace(string(entries[i]), `"kind":"decision"`, `"kind":"d\u0065cision"`, 1)
				if e == string(entries[i]) {
					t.Fatal("entry has no kind to escape")
				}
				entries[i] = []byte(e)
			}
			rebuildLog(t, dir, s, entries)
			if tc.chainAt >= 0 {
				path, data, fs := segFrames(t, dir)
				raw := make([][]byte, len(fs))
				for i, f := range fs {
					raw[i] = frameBytes(data, f)
				}
				f := fs[tc.chainAt]
				bad := f.chain
				bad[0] ^= 1
				raw[tc.chainAt] = appendFrame(nil, f.index, bad, f.payload)
				writeFrames(t, path, len(data), raw...)
			}
			_, err := VerifyDir(dir, v, VerifyOptions{})
			wantClass(t, err, ModifiedEntry, tc.want)
			if !strings.Contains(err.Error(), tc.wantCause) {
				t.Fatalf("got %v, want a failure saying %q", err, tc.wantCause)
			}
		})
	}
}

// TestEncodingChecksKeepLowestIndex: a later chunk's failure found first is
// replaced by an earlier chunk's failure found after it.
func TestEncodingChecksKeepLowestIndex(t *testing.T) {
	e := testEntry(0)
	e.ActionSHA256 = sha256.Sum256([]byte(e.Action.Text))
	good, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	bad := []byte(strings.Replace(string(good), `"kind":"decision"`, `"kind":"d\u0065cision"`, 1))
	chunk := func(first, badAt int64) []scanned {
		frames := make([]scanned, checkChunk)
		for i := range frames {
			idx := first + int64(i)
			frames[i] = scanned{frame{index: idx, payload: good}, "seg"}
			if idx == badAt {
				frames[i].payload = bad
			}
		}
		return frames
	}
	c := newEncodingChecks()
	var chk entryChecker
	c.check(&chk, chunk(checkChunk, checkChunk+6))
	c.check(&chk, chunk(0, checkChunk-24))
	wantClass(t, c.wait(), ModifiedEntry, checkChunk-24)
}

// TestOpenChecksEntriesAgainstCheckpoint: the untouched log opens at every
// size (the root Open recomputes from the entries matches each checkpoint),
// and an entry below the last checkpoint changed on disk, with its frame's
// CRC and the hash chain redone and the stored hashes left as they are,
// makes Open refuse the log.
func TestOpenChecksEntriesAgainstCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s, _ := testKey(t, testOrigin)
	for i := range 37 {
		l := openTest(t, dir, Options{})
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
		cp, err := NewCheckpointer(l, s, CheckpointOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	l := openTest(t, dir, Options{})
	l.Close()

	path, data, frames := segFrames(t, dir)
	raw := make([][]byte, len(frames))
	var chain tlog.Hash
	for i, f := range frames {
		p := f.payload
		if i == 5 {
			p = []byte(strings.Replace(string(p), `"decision":"deny"`, `"decision":"allo"`, 1))
		}
		chain = nextChain(chain, tlog.RecordHash(p))
		raw[i] = appendFrame(nil, f.index, chain, p)
	}
	writeFrames(t, path, len(data), raw...)
	if l, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("open after changing entry 5: got %v, want ErrCorrupt", err)
	}
}
