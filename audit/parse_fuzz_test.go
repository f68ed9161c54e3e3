package audit

import (
	"bytes"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// FuzzParseCheckpoint checks that a parsed checkpoint without extension
// lines formats back to its input.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte("example.com/log\n03\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b)
		if err != nil {
			return
		}
		if bytes.Count(b, []byte("\n")) == 3 && !bytes.Equal(c.Text(), b) {
			t.Fatalf("parse→format changed %q to %q", b, c.Text())
		}
	})
}

// FuzzParseReceipt checks that a parsed receipt formats back to its input.
func FuzzParseReceipt(f *testing.F) {
	f.Add(FormatReceipt([]byte(`{"kind":"note"}`), 5, tlog.RecordProof{{1}, {2}}, []byte("example.com/log\n6\nAAAA\n\n— example.com/log AAAA\n")))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReceipt(b)
		if err != nil {
			return
		}
		again := FormatReceipt(r.Entry, r.Index, r.Proof, r.Checkpoint)
		if !bytes.Equal(again, b) {
			t.Fatalf("parse→format changed\n%q\nto\n%q", b, again)
		}
	})
}
