package audit

import (
	"context"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestCheckpointCosigners: a cosigner's signature is on every checkpoint,
// and a verifier holding only the log's key still verifies the log.
func TestCheckpointCosigners(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	s, v := testKey(t, testOrigin)
	co, cv := testKey(t, testOrigin+"/boot")
	if _, err := NewCheckpointer(l, s, CheckpointOptions{Cosigners: []note.Signer{s}}); err == nil {
		t.Fatal("a cosigner named like the log's key was accepted")
	}
	cp, err := NewCheckpointer(l, s, CheckpointOptions{Cosigners: []note.Signer{co}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := cp.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []note.Verifier{v, cv} {
		if _, err := note.Open(msg, note.VerifierList(key)); err != nil {
			t.Errorf("checkpoint not signed by %s: %v\n%s", key.Name(), err, msg)
		}
	}
	l.Close()
	if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
		t.Fatalf("verify with the log's key only: %v", err)
	}
}
