package audit

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// blobLog builds a closed log of 5 entries whose entry 2 has its action and
// instruction stored as blobs (they are longer than MaxInline), with a
// checkpoint over all of them.
func blobLog(t *testing.T) (dir string, v note.Verifier, sum Digest, sign func(entries [][]byte)) {
	t.Helper()
	dir = t.TempDir()
	l := openTest(t, dir, Options{MaxInline: 64})
	s, v := testKey(t, testOrigin)
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	for i := range 5 {
		e := testEntry(i)
		if i == 2 {
			e.Action = Text(`{"memo":"` + strings.Repeat("x", 100) + `","type":"transfer"}`)
			e.Instruction = Text(strings.Repeat("Pay invoice 1234 from Acme. ", 10))
		}
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
		t.Fatalf("before tampering: %v", err)
	}
	raw, err := ReadDirEntry(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	e, err := DecodeEntry(raw)
	if err != nil {
		t.Fatal(err)
	}
	if e.Action.Digest.IsZero() || e.Instruction.Digest.IsZero() {
		t.Fatalf("entry 2 has its action and instruction inline: %s", raw)
	}
	return dir, v, e.ActionSHA256, func(entries [][]byte) { rebuildLog(t, dir, s, entries) }
}

func blobEntries(t *testing.T, dir string) [][]byte {
	t.Helper()
	_, _, frames := segFrames(t, dir)
	var entries [][]byte
	for _, f := range frames {
		entries = append(entries, f.payload)
	}
	return entries
}

// TestVerifyBlobs: verify checks every field stored by digest against its
// blob, and an action's digest against its action_sha256; an insider who
// changes either, and signs the tree again, is caught.
func TestVerifyBlobs(t *testing.T) {
	other := Digest(sha256.Sum256([]byte(`{"type":"transfer","to":"acct-evil"}`)))
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string, sum Digest, sign func([][]byte))
		file   string // the file the failure names ("" for the segment)
	}{
		{"action_sha256 changed, signed again", func(t *testing.T, dir string, sum Digest, sign func([][]byte)) {
			entries := blobEntries(t, dir)
			entries[2] = []byte(strings.Replace(string(entries[2]), `"action_sha256":"`+sum.String(), `"action_sha256":"`+other.String(), 1))
			sign(entries)
		}, ""},
		{"action blob rewritten", func(t *testing.T, dir string, sum Digest, _ func([][]byte)) {
			os.WriteFile(filepath.Join(dir, blobDir, sum.String()), []byte(`{"to":"acct-evil","type":"transfer"}`), 0o600)
		}, "blobs/"},
		{"action blob deleted", func(t *testing.T, dir string, sum Digest, _ func([][]byte)) {
			os.Remove(filepath.Join(dir, blobDir, sum.String()))
		}, "blobs/"},
		{"instruction blob rewritten", func(t *testing.T, dir string, sum Digest, _ func([][]byte)) {
			names, _ := filepath.Glob(filepath.Join(dir, blobDir, "*"))
			for _, n := range names {
				if filepath.Base(n) != sum.String() {
					os.WriteFile(n, []byte("Pay the attacker"), 0o600)
				}
			}
		}, "blobs/"},
		{"blob size changed, signed again", func(t *testing.T, dir string, sum Digest, sign func([][]byte)) {
			entries := blobEntries(t, dir)
			entries[2] = []byte(strings.Replace(string(entries[2]), `"size":280}`, `"size":279}`, 1))
			sign(entries)
		}, "blobs/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, v, sum, sign := blobLog(t)
			tt.tamper(t, dir, sum, sign)
			_, err := VerifyDir(dir, v, VerifyOptions{})
			wantClass(t, err, ModifiedEntry, 2)
			if ve := err.(*VerifyError); !strings.HasPrefix(ve.File, tt.file) {
				t.Errorf("failure names file %q, want %q...", ve.File, tt.file)
			}
		})
	}
}

// TestAppendRefusesActionDigestMismatch: Append hashes an inline action
// (Encode compares), and refuses an action_sha256 that does not match an
// action it stores by digest.
func TestAppendRefusesActionDigestMismatch(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{MaxInline: 64})
	defer l.Close()
	long := `{"memo":"` + strings.Repeat("x", 100) + `","type":"transfer"}`
	for _, e := range []*Entry{
		{Action: Text(long), ActionSHA256: Digest{1}},
		{Action: Text(`{"type":"transfer"}`), ActionSHA256: Digest{1}},
		{Action: Field{Digest: Digest(sha256.Sum256([]byte(long))), Size: int64(len(long))}, ActionSHA256: Digest{1}},
	} {
		e.Kind, e.Time = KindDecision, testEntry(0).Time
		if _, err := l.Append(context.Background(), e); err == nil {
			t.Errorf("Append accepted action %+v with action_sha256 %v", e.Action, e.ActionSHA256)
		}
	}
	if l.Size() != 0 {
		t.Fatalf("log has %d entries, want 0", l.Size())
	}
}

// TestDecodeVerifiedEntryChecksDigests: the fast decoder that replay and a
// restart use (it does not re-encode) still refuses what the encoding
// forbids about digests.
func TestDecodeVerifiedEntryChecksDigests(t *testing.T) {
	d := strings.Repeat("ab", 32)
	for _, b := range []string{
		`{"action":{"sha256":"` + d + `","size":10},"action_sha256":"` + strings.Repeat("cd", 32) + `","kind":"decision","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"action":{"sha256":"` + d + `","size":0},"action_sha256":"` + d + `","kind":"decision","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"action":{"sha256":"` + d + `","size":-5},"action_sha256":"` + d + `","kind":"decision","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"kind":"decision","reasoning":{"sha256":"` + d + `","size":2147483648},"time":"2026-11-22T10:00:00Z","v":1}`,
		`{"kind":"decision","reasoning":{"hmac":"` + d + `","sha256":"` + d + `","size":10},"time":"2026-11-22T10:00:00Z","v":1}`,
	} {
		if _, err := DecodeVerifiedEntry([]byte(b)); err == nil {
			t.Errorf("DecodeVerifiedEntry accepted %s", b)
		}
		if _, err := DecodeEntry([]byte(b)); err == nil {
			t.Errorf("DecodeEntry accepted %s", b)
		}
	}
}
