package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// fileKey returns a key as LoadKeyFile gives it (a signer that knows its
// verifier key), with its verifier key.
func fileKey(t *testing.T) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "log.key")
	if err := os.WriteFile(path, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(interface{ VerifierKey() string }).VerifierKey(); got != vkey {
		t.Fatalf("LoadKeyFile's VerifierKey %q, want %q", got, vkey)
	}
	return s, vkey
}

func verifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// appendN appends n test entries.
func appendN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// checkpoint signs a checkpoint of l with s through NewCheckpointer.
func checkpoint(t *testing.T, l *Log, s note.Signer) {
	t.Helper()
	c, err := NewCheckpointer(l, s, CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
}

// forceCheckpoint signs a checkpoint of l with s, bypassing key custody, as
// an insider with another key would.
func forceCheckpoint(t *testing.T, l *Log, s note.Signer) {
	t.Helper()
	last, err := latestCheckpoint(filepath.Join(l.dir, checkpointDir))
	if err != nil {
		t.Fatal(err)
	}
	c := &Checkpointer{log: l, signer: s, last: last}
	if _, err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
}

func TestCustodyRefusesAnotherKey(t *testing.T) {
	a, _ := fileKey(t)
	b, _ := fileKey(t)
	l := openTest(t, t.TempDir(), Options{})
	appendN(t, l, 3)
	checkpoint(t, l, a)
	appendN(t, l, 1)

	_, err := NewCheckpointer(l, b, CheckpointOptions{})
	var ke *KeyError
	if !errors.Is(err, ErrWrongKey) || !errors.As(err, &ke) {
		t.Fatalf("NewCheckpointer with another key: got %v, want a *KeyError", err)
	}
	for _, id := range []string{signerID(a), signerID(b)} {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("error %q does not name key %s", err, id)
		}
	}
	checkpoint(t, l, a) // the log's own key still signs
}

// TestCustodyPlainSigner: a note.Signer that does not tell its verifier key
// is compared by name and key hash.
func TestCustodyPlainSigner(t *testing.T) {
	a, _ := testKey(t, testOrigin)
	b, _ := testKey(t, testOrigin)
	l := openTest(t, t.TempDir(), Options{})
	appendN(t, l, 2)
	checkpoint(t, l, a)
	appendN(t, l, 1)
	if _, err := NewCheckpointer(l, b, CheckpointOptions{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another plain key: got %v, want ErrWrongKey", err)
	}
	checkpoint(t, l, a)
}

func TestEmpty(t *testing.T) {
	a, _ := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	if e, err := l.Empty(); err != nil || !e {
		t.Fatalf("new log: Empty() = %v, %v; want true", e, err)
	}
	checkpoint(t, l, a) // a checkpoint of size 0
	if e, err := l.Empty(); err != nil || e {
		t.Fatalf("log with a checkpoint: Empty() = %v, %v; want false", e, err)
	}
	l2 := openTest(t, t.TempDir(), Options{})
	appendN(t, l2, 1)
	if e, err := l2.Empty(); err != nil || e {
		t.Fatalf("log with an entry: Empty() = %v, %v; want false", e, err)
	}
}

// TestRotateKey rotates A to B to C and verifies the log with each key:
// any key of the chain that signed a checkpoint is enough to follow it.
func TestRotateKey(t *testing.T) {
	a, avk := fileKey(t)
	b, bvk := fileKey(t)
	c, cvk := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	appendN(t, l, 3)
	checkpoint(t, l, a)

	if _, err := RotateKey(l, a, bvk, CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCheckpointer(l, a, CheckpointOptions{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("the retired key: got %v, want ErrWrongKey", err)
	}
	appendN(t, l, 2)
	checkpoint(t, l, b)
	if _, err := RotateKey(l, b, cvk, CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 2)
	checkpoint(t, l, c)
	appendN(t, l, 1)
	checkpoint(t, l, c)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	for _, vk := range []string{avk, bvk, cvk} {
		rep, err := VerifyDir(dir, verifier(t, vk), VerifyOptions{})
		if err != nil {
			t.Fatalf("verify with %s: %v", vkeyID(vk), err)
		}
		if rep.Checkpoints != 6 || rep.Size != 10 {
			t.Fatalf("verify with %s: %d checkpoints of size %d, want 6 of size 10", vkeyID(vk), rep.Checkpoints, rep.Size)
		}
	}
	_, dvk := fileKey(t)
	_, err := VerifyDir(dir, verifier(t, dvk), VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
}

// TestRotateKeyChecks: RotateKey takes only the log's key as the old key,
// and a new key of the same name.
func TestRotateKeyChecks(t *testing.T) {
	a, avk := fileKey(t)
	b, bvk := fileKey(t)
	l := openTest(t, t.TempDir(), Options{})
	appendN(t, l, 1)
	checkpoint(t, l, a)
	if _, err := RotateKey(l, b, avk, CheckpointOptions{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("rotation signed by another key: got %v, want ErrWrongKey", err)
	}
	if _, err := RotateKey(l, a, avk, CheckpointOptions{}); err == nil {
		t.Fatal("rotation to the same key accepted")
	}
	_, other, _ := note.GenerateKey(nil, "other.example/log")
	if _, err := RotateKey(l, a, other, CheckpointOptions{}); err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Fatalf("rotation to another name: got %v", err)
	}
	if l.Size() != 1 {
		t.Fatalf("refused rotations appended entries: size %d, want 1", l.Size())
	}
	if _, err := RotateKey(l, a, bvk, CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRotateKeyResumes: a rotation entry that no checkpoint covers stops
// every signer until RotateKey, run again, signs its checkpoint.
func TestRotateKeyResumes(t *testing.T) {
	a, avk := fileKey(t)
	b, bvk := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	appendN(t, l, 2)
	checkpoint(t, l, a)
	// RotateKey interrupted after its append.
	if _, err := l.Append(context.Background(), &Entry{Kind: KindKeyRotation, Time: testEntry(0).Time, OldKey: avk, NewKey: bvk}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []note.Signer{a, b} {
		_, err := NewCheckpointer(l, s, CheckpointOptions{})
		if err == nil || !strings.Contains(err.Error(), "no checkpoint covers it") {
			t.Fatalf("NewCheckpointer(%s) over an unfinished rotation: got %v", signerID(s), err)
		}
	}
	if _, err := RotateKey(l, a, bvk, CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	if l.Size() != 3 {
		t.Fatalf("resumed rotation appended again: size %d, want 3", l.Size())
	}
	appendN(t, l, 1)
	checkpoint(t, l, b)
	l.Close()
	if _, err := VerifyDir(dir, verifier(t, avk), VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyKeyChangeWithoutRotation: checkpoints signed by a new key with no
// rotation entry fail verification, whichever of the two keys is trusted.
func TestVerifyKeyChangeWithoutRotation(t *testing.T) {
	a, avk := fileKey(t)
	b, bvk := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	appendN(t, l, 2)
	checkpoint(t, l, a)
	appendN(t, l, 2)
	forceCheckpoint(t, l, b)
	l.Close()
	_, err := VerifyDir(dir, verifier(t, avk), VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
	_, err = VerifyDir(dir, verifier(t, bvk), VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
}

// TestVerifyRotationNotCoveredByOldKey: a rotation entry that the old key's
// checkpoint never covered authorises nothing.
func TestVerifyRotationNotCoveredByOldKey(t *testing.T) {
	a, avk := fileKey(t)
	b, bvk := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	appendN(t, l, 2)
	checkpoint(t, l, a)
	if _, err := l.Append(context.Background(), &Entry{Kind: KindKeyRotation, Time: testEntry(0).Time, OldKey: avk, NewKey: bvk}); err != nil {
		t.Fatal(err)
	}
	forceCheckpoint(t, l, b)
	l.Close()
	_, err := VerifyDir(dir, verifier(t, avk), VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
	_, err = VerifyDir(dir, verifier(t, bvk), VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
}

// TestVerifyRetiredKeySigns: once a checkpoint of the old key covers the
// rotation, a checkpoint of the old key is refused.
func TestVerifyRetiredKeySigns(t *testing.T) {
	a, avk := fileKey(t)
	_, bvk := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	appendN(t, l, 2)
	checkpoint(t, l, a)
	if _, err := RotateKey(l, a, bvk, CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1)
	forceCheckpoint(t, l, a)
	l.Close()
	_, err := VerifyDir(dir, verifier(t, avk), VerifyOptions{})
	wantClass(t, err, UnknownKey, -1)
}

// TestVerifyBrokenChain: a rotation from a key that is not the log's key by
// then is a bad_rotation.
func TestVerifyBrokenChain(t *testing.T) {
	a, avk := fileKey(t)
	_, bvk := fileKey(t)
	_, cvk := fileKey(t)
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	appendN(t, l, 1)
	checkpoint(t, l, a)
	if _, err := RotateKey(l, a, bvk, CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	// A second rotation that claims to start from C.
	if _, err := l.Append(context.Background(), &Entry{Kind: KindKeyRotation, Time: testEntry(0).Time, OldKey: cvk, NewKey: avk}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	_, err := VerifyDir(dir, verifier(t, avk), VerifyOptions{})
	wantClass(t, err, BadRotation, 2)
}

func TestRotationEntryEncoding(t *testing.T) {
	_, avk := fileKey(t)
	_, bvk := fileKey(t)
	e := &Entry{Kind: KindKeyRotation, Time: testEntry(0).Time, OldKey: avk, NewKey: bvk}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.OldKey != avk || got.NewKey != bvk {
		t.Fatalf("decoded keys %q, %q; want %q, %q", got.OldKey, got.NewKey, avk, bvk)
	}
	for _, bad := range []*Entry{
		{Kind: KindKeyRotation, Time: e.Time, OldKey: avk},
		{Kind: KindKeyRotation, Time: e.Time, OldKey: avk, NewKey: avk},
		{Kind: KindKeyRotation, Time: e.Time, OldKey: avk, NewKey: "garbage"},
		{Kind: KindNote, Time: e.Time, OldKey: avk, NewKey: bvk},
	} {
		if _, err := bad.Encode(); err == nil {
			t.Errorf("Encode(%+v) succeeded", bad)
		}
	}
}

// BenchmarkCustody measures NewCheckpointer's key custody on a log of b.N
// entries and no checkpoint: the whole log is its uncovered tail, scanned
// for rotation entries.
func BenchmarkCustody(b *testing.B) {
	l := openTest(b, b.TempDir(), Options{SegmentSize: 64 << 20})
	var ps []Pending
	for i := range 100_000 {
		p, err := l.Enqueue(context.Background(), testEntry(i))
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if _, err := p.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	s, _ := testKey(b, testOrigin)
	b.ResetTimer()
	for range b.N {
		if _, err := NewCheckpointer(l, s, CheckpointOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100_000, "ns/entry")
}
