package audit

import (
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// FuzzVerifyReceipt checks that VerifyReceipt returns on any input: no
// size, index or proof in a receipt makes it spin or panic. It verifies
// without a key, so that mutated checkpoints reach tlog.CheckRecord (with
// a key, only the log could sign them; a verifier must not hang either
// way). testdata/fuzz/FuzzVerifyReceipt holds receipts of trees over 2^62
// that hung tlog before ParseCheckpoint bounded sizes.
func FuzzVerifyReceipt(f *testing.F) {
	cp := "example.com/log\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log AAAAAAA=\n"
	f.Add(FormatReceipt([]byte(`{"kind":"note","time":"2026-11-22T10:00:00Z","v":1}`), 5, tlog.RecordProof{{1}, {2}, {3}}, []byte(cp)))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, r, err := VerifyReceipt(b, nil)
		if err == nil && (e == nil || r == nil || r.Index >= MaxTreeSize) {
			t.Fatalf("verified %q without an entry or beyond the bound", b)
		}
	})
}

// FuzzCheckpointTreeBounds checks that every checkpoint ParseCheckpoint
// accepts is one tlog's proof checks return on: its size is within the
// bound under which tlog's maxpow2 terminates.
func FuzzCheckpointTreeBounds(f *testing.F) {
	f.Add([]byte("example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte("example.com/log\n4611686018427387903\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte("example.com/log\n4611686018427387905\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b)
		if err != nil || c.Size < 1 {
			return
		}
		if c.Size > MaxTreeSize {
			t.Fatalf("accepted size %d over the bound", c.Size)
		}
		_ = tlog.CheckRecord(nil, c.Size, c.Root, c.Size-1, tlog.Hash{})
		_ = tlog.CheckTree(nil, c.Size, c.Root, 1, tlog.Hash{})
	})
}
