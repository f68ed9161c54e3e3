package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// testCosigner signs cosignature/v1 cosignatures at a fixed time.
type testCosigner struct {
	name string
	key  ed25519.PrivateKey
}

func newTestCosigner(t testing.TB, name string) (*testCosigner, string) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testCosigner{name, priv}, FormatCosignerKey(name, pub)
}

func (c *testCosigner) Name() string { return c.name }
func (c *testCosigner) KeyHash() uint32 {
	return CosignatureV1KeyHash(c.name, c.key.Public().(ed25519.PublicKey))
}
func (c *testCosigner) Sign(msg []byte) ([]byte, error) {
	const ts = 1_800_000_000
	return append(binary.BigEndian.AppendUint64(nil, ts), ed25519.Sign(c.key, CosignatureV1Message(ts, msg))...), nil
}

// cosign appends the cosigners' signature lines to a signed note.
func cosign(t testing.TB, msg []byte, cs ...note.Signer) []byte {
	t.Helper()
	_, err := note.Open(msg, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		t.Fatalf("open note: %v", err)
	}
	n := uv.Note
	out := bytes.Clone(msg)
	for _, c := range cs {
		signed, err := note.Sign(&note.Note{Text: n.Text}, c)
		if err != nil {
			t.Fatal(err)
		}
		_, sig, _ := bytes.Cut(signed, []byte("\n\n"))
		out = append(out, sig...)
	}
	return out
}

// TestCosignatureVector checks a cosignature made by transparency-dev/formats.
func TestCosignatureVector(t *testing.T) {
	b, err := os.ReadFile("testdata/cosignature-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	_, b, _ = bytes.Cut(b, []byte("\n")) // the line saying what it proves
	head, msg, _ := bytes.Cut(b, []byte("\n\n"))
	lines := strings.Split(string(head), "\n")
	logKey, witKey := strings.TrimPrefix(lines[0], "log "), strings.TrimPrefix(lines[1], "witness ")
	pol, err := ParseWitnessPolicy("vector", fmt.Appendf(nil, "log %s\nwitness w1 %s\nquorum w1\n", logKey, witKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := pol.Check(msg, "vector"); err != nil {
		t.Fatalf("formats' cosignature: %v", err)
	}
	lv, _ := note.NewVerifier(logKey)
	if !pol.HasLog(lv) {
		t.Error("HasLog(the policy's log key) = false")
	}
	// The timestamp is signed: change it and the cosignature fails.
	i := bytes.LastIndex(msg, []byte("— witness.example/w1 ")) + len("— witness.example/w1 ")
	bad := bytes.Clone(msg)
	bad[i+8] ^= 'A' ^ 'B' // in the timestamp's base64
	var ve *VerifyError
	if err := pol.Check(bad, "vector"); !errors.As(err, &ve) || ve.Class != BadSignature {
		t.Fatalf("altered timestamp: got %v, want bad_signature", err)
	}
}

func TestWitnessPolicyErrors(t *testing.T) {
	_, logKey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	_, w1 := newTestCosigner(t, "w.example/1")
	_, w2 := newTestCosigner(t, "w.example/2")
	for _, tc := range []struct{ text, want string }{
		{"", "p: no quorum line"},
		{"quorum none\nquorum none\n", "p:2:1: a second quorum line"},
		{"witness w1 " + w1 + "\nquorum w2\n", "p:2:8: quorum \"w2\" is not a witness or group"},
		{"witness w1 " + w1 + "\nwitness w1 " + w2 + "\nquorum w1\n", "p:2:9: w1 defined twice"},
		{"witness w1 " + w1 + "\nwitness w2 " + w1 + "\nquorum w1\n", "p:2:12: witness w2 has the same public key as witness w1 (line 1)"},
		{"witness w1 " + logKey + "\nquorum w1\n", "p:1:12: witness w1: parse cosigner key"},
		{"witness w1 " + w1 + "\ngroup g 2 w1\nquorum g\n", "p:2:9: group g: threshold \"2\""},
		{"witness w1 " + w1 + "\ngroup g 0 w1\nquorum g\n", "p:2:9: group g: threshold \"0\""},
		{"witness w1 " + w1 + "\ngroup g any w1 w1\nquorum g\n", "p:2:16: group g: w1 listed twice"},
		{"group g any w1\n", "p:1:13: group g: \"w1\" is not a witness or group defined above"},
		{"witness none " + w1 + "\n", "p:1:9: the name none is reserved"},
		{"log " + logKey + "\nlog " + logKey + "\nquorum none\n", "p:2:5: log rulelock.test/audit has the same public key"},
		{"monitor x\n", "p:1:1: unknown keyword \"monitor\""},
		{"  quorum\tnone\x01\n", "p:1:14: control character 0x01"},
	} {
		_, err := ParseWitnessPolicy("p", []byte(tc.text))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseWitnessPolicy(%q):\ngot  %v\nwant %s...", tc.text, err, tc.want)
		}
	}
}

func TestWitnessPolicyQuorum(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	var cs []note.Signer
	var keys []string
	for i := range 4 {
		c, k := newTestCosigner(t, fmt.Sprintf("w.example/%d", i))
		cs, keys = append(cs, c), append(keys, k)
	}
	msg := signCheckpoint(t, Checkpoint{Origin: testOrigin, Size: 3, Root: tlog.Hash{1}}, s)
	policy := fmt.Sprintf(`# two of ours and the other one
log %s
witness a %s
witness b %s https://b.example/
  witness c %s
witness d %s
group ours 2 a b c
group both all ours d
quorum both
`, vkey, keys[0], keys[1], keys[2], keys[3])
	pol, err := ParseWitnessPolicy("policy", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	if pol.Witnesses[1].URL != "https://b.example/" {
		t.Errorf("witness b's URL = %q", pol.Witnesses[1].URL)
	}
	for _, tc := range []struct {
		signers []int
		ok      bool
	}{
		{nil, false},
		{[]int{0, 1, 2}, false}, // ours, but not d
		{[]int{0, 3}, false},    // d and only one of ours: k-1
		{[]int{0, 1, 3}, true},
		{[]int{1, 2, 3}, true},
		{[]int{0, 1, 2, 3}, true},
	} {
		var signers []note.Signer
		for _, i := range tc.signers {
			signers = append(signers, cs[i])
		}
		err := pol.Check(cosign(t, msg, signers...), "cp")
		if tc.ok && err != nil {
			t.Errorf("cosigned by %v: %v", tc.signers, err)
		}
		var ve *VerifyError
		if !tc.ok && (!errors.As(err, &ve) || ve.Class != Unwitnessed) {
			t.Errorf("cosigned by %v: got %v, want unwitnessed", tc.signers, err)
		}
	}
	none, err := ParseWitnessPolicy("none", []byte("quorum none\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := none.Check(msg, "cp"); err != nil {
		t.Errorf("quorum none: %v", err)
	}
}

// forkedLogs builds a log of 10 entries with checkpoints at 5 and 10 and
// its tiles, and a fork signed with the same key whose entries differ from
// entry 3 on, with a checkpoint at 5 and one at 7.
func forkedLogs(t *testing.T) (honest [][]byte, fork [][]byte, tiles string, v note.Verifier) {
	s, v := testKey(t, testOrigin)
	tiles = t.TempDir()
	build := func(tiles string, from int, sizes ...int64) [][]byte {
		l := openTest(t, t.TempDir(), Options{})
		defer l.Close()
		cp, err := NewCheckpointer(l, s, CheckpointOptions{TilesDir: tiles})
		if err != nil {
			t.Fatal(err)
		}
		var cps [][]byte
		for i := range 10 {
			e := testEntry(i)
			if i >= 3 {
				e = testEntry(i + from)
			}
			if _, err := l.Append(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			for _, n := range sizes {
				if l.Size() == n {
					msg, err := cp.Checkpoint()
					if err != nil {
						t.Fatal(err)
					}
					cps = append(cps, msg)
				}
			}
		}
		return cps
	}
	return build(tiles, 0, 5, 10), build("", 100, 5, 7), tiles, v
}

func TestCompareCheckpoints(t *testing.T) {
	honest, fork, tiles, v := forkedLogs(t)
	equivocation := func(err error, a, b []byte) {
		t.Helper()
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Class != Equivocation {
			t.Fatalf("got %v, want equivocation", err)
		}
		if len(ve.Notes) != 2 || !bytes.Equal(ve.Notes[0], a) || !bytes.Equal(ve.Notes[1], b) {
			t.Fatalf("the proof is not the two notes: %q", ve.Notes)
		}
	}
	// One size, two roots: proven without anything else.
	equivocation(CompareCheckpoints(honest[0], fork[0], v, CompareOptions{}), honest[0], fork[0])
	if err := CompareCheckpoints(honest[0], honest[0], v, CompareOptions{}); err != nil {
		t.Errorf("a checkpoint against itself: %v", err)
	}
	// Different sizes: a proof or the tiles are needed.
	if err := CompareCheckpoints(honest[1], fork[1], v, CompareOptions{}); !errors.Is(err, ErrNeedConsistencyProof) {
		t.Errorf("sizes 10 and 7 alone: got %v, want ErrNeedConsistencyProof", err)
	}
	// The honest log's tiles, authenticated by its checkpoint of 10,
	// give the tree of 7 another root than the fork signed.
	equivocation(CompareCheckpoints(honest[1], fork[1], v, CompareOptions{TilesDir: tiles}), fork[1], honest[1])
	if err := CompareCheckpoints(honest[0], honest[1], v, CompareOptions{TilesDir: tiles}); err != nil {
		t.Errorf("honest 5 and 10 with tiles: %v", err)
	}
	// A consistency proof that verifies shows they fit; a bad one
	// proves nothing.
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	for i := range 10 {
		l.Append(context.Background(), testEntry(i))
	}
	proof, err := tlog.ProveTree(10, 5, l.hashes)
	if err != nil {
		t.Fatal(err)
	}
	if err := CompareCheckpoints(honest[1], honest[0], v, CompareOptions{Proof: proof}); err != nil {
		t.Errorf("honest 10 and 5 with a proof: %v", err)
	}
	var ve *VerifyError
	if err := CompareCheckpoints(honest[1], fork[0], v, CompareOptions{Proof: proof}); !errors.As(err, &ve) || ve.Class != BadProof {
		t.Errorf("a proof that does not fit: got %v, want bad_proof", err)
	}
	// Both notes must verify under the log's key.
	_, other := testKey(t, testOrigin)
	if err := CompareCheckpoints(honest[0], fork[0], other, CompareOptions{}); !errors.As(err, &ve) || ve.Class != UnknownKey {
		t.Errorf("another key: got %v, want unknown_key", err)
	}
}

func TestVerifyDirEquivocation(t *testing.T) {
	dir, s, v, cps := tamperLog(t)
	// A checkpoint of size 10 the log signed for someone else.
	fork := signCheckpoint(t, Checkpoint{Origin: testOrigin, Size: 10, Root: tlog.Hash{9}}, s)
	_, err := VerifyDir(dir, v, VerifyOptions{Since: fork})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Class != Equivocation || len(ve.Notes) != 2 {
		t.Fatalf("since a fork of the same size: got %v, want equivocation with two notes", err)
	}
	if !bytes.Equal(ve.Notes[0], cps[0]) || !bytes.Equal(ve.Notes[1], fork) {
		t.Errorf("notes %q, want the log's checkpoint of 10 and the fork", ve.Notes)
	}
	// Of a size the log has no checkpoint of: the latest one proves it.
	fork = signCheckpoint(t, Checkpoint{Origin: testOrigin, Size: 7, Root: tlog.Hash{9}}, s)
	_, err = VerifyDir(dir, v, VerifyOptions{Since: fork})
	if !errors.As(err, &ve) || ve.Class != Equivocation || !bytes.Equal(ve.Notes[0], fork) || !bytes.Equal(ve.Notes[1], cps[1]) {
		t.Fatalf("since a fork of size 7: got %v (notes %q), want equivocation with the fork and the latest", err, ve.Notes)
	}
}

// FuzzParseWitnessPolicy: any input parses or fails with file:line, never
// panics; a parsed policy checks any note without panicking.
func FuzzParseWitnessPolicy(f *testing.F) {
	_, w1 := newTestCosigner(f, "w.example/1")
	_, w2 := newTestCosigner(f, "w.example/2")
	f.Add([]byte("witness a " + w1 + "\nwitness b " + w2 + " https://b/\ngroup g 2 a b\nquorum g\n"))
	f.Add([]byte("# none\nquorum none\n"))
	f.Add([]byte("group g any a\n"))
	s, _ := testKey(f, testOrigin)
	msg := signCheckpoint(&testing.T{}, Checkpoint{Origin: testOrigin, Size: 1, Root: tlog.Hash{1}}, s)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseWitnessPolicy("p", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "p:") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		p.Check(msg, "cp")
	})
}

// FuzzParseCosignerKey: a key that parses formats back to itself.
func FuzzParseCosignerKey(f *testing.F) {
	_, w1 := newTestCosigner(f, "w.example/1")
	f.Add(w1)
	f.Add("w+00000000+BAAA")
	f.Fuzz(func(t *testing.T, vkey string) {
		v, err := ParseCosignerKey(vkey)
		if err != nil {
			return
		}
		cv := v.(*cosignerVerifier)
		if got := FormatCosignerKey(cv.name, cv.key); got != strings.TrimSpace(vkey) {
			t.Fatalf("parse→format: %q → %q", vkey, got)
		}
	})
}

// TestVerifyTilesEquivocation: a saved checkpoint that the tiles' own
// checkpoint contradicts is an equivocation, with both notes.
func TestVerifyTilesEquivocation(t *testing.T) {
	honest, fork, tiles, v := forkedLogs(t)
	if _, err := VerifyTiles(tiles, v, VerifyOptions{Since: honest[0]}); err != nil {
		t.Fatalf("since the honest checkpoint of 5: %v", err)
	}
	for _, since := range fork {
		_, err := VerifyTiles(tiles, v, VerifyOptions{Since: since})
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Class != Equivocation || !bytes.Equal(ve.Notes[0], since) || !bytes.Equal(ve.Notes[1], honest[1]) {
			t.Errorf("since a fork's checkpoint: got %v, want equivocation with it and the tiles' checkpoint", err)
		}
	}
}
