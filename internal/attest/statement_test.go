package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// vkey returns a fixed verifier key named name.
func vkey(t testing.TB, name string, seed byte) string {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	k, err := note.NewEd25519VerifierKey(name, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sampleStatement(t testing.TB) *Statement {
	return &Statement{
		Origin:    "rulelock.example.com/audit",
		Engine:    "sha256:" + strings.Repeat("ab", 32),
		Bundle:    "sha256:" + strings.Repeat("cd", 32),
		Threshold: 2,
		Signers:   sortedSigners([]string{vkey(t, "carol", 3), vkey(t, "alice", 1), vkey(t, "bob", 2)}),
		Key:       vkey(t, "rulelock.example.com/audit/boot", 9),
		Prev:      strings.Repeat("ef", 32),
		Size:      42,
		Root:      sha256.Sum256([]byte("root")),
	}
}

func TestStatementRoundTrip(t *testing.T) {
	s := sampleStatement(t)
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseStatement(b)
	if err != nil {
		t.Fatalf("parse %q: %v", b, err)
	}
	b2, _ := got.Marshal()
	if !bytes.Equal(b, b2) {
		t.Errorf("round trip:\n%s\nbecame\n%s", b, b2)
	}
	// The first statement: no bundle yet, no previous entry, no checkpoint.
	first := &Statement{Origin: s.Origin, Engine: s.Engine, Key: s.Key}
	fb, err := first.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseStatement(fb); err != nil {
		t.Errorf("parse the first statement %q: %v", fb, err)
	}
}

func TestStatementRefused(t *testing.T) {
	good, err := sampleStatement(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	g := string(good)
	lines := strings.Split(g, "\n")
	cases := map[string]string{
		"no final newline":   strings.TrimSuffix(g, "\n"),
		"extra blank line":   g + "\n",
		"wrong header":       strings.Replace(g, "v1", "v2", 1),
		"trailing space":     strings.Replace(g, "threshold 2\n", "threshold 2 \n", 1),
		"leading zero":       strings.Replace(g, "threshold 2\n", "threshold 02\n", 1),
		"threshold above N":  strings.Replace(g, "threshold 2\n", "threshold 4\n", 1),
		"unsorted signers":   strings.Replace(g, lines[5]+"\n"+lines[6], lines[6]+"\n"+lines[5], 1),
		"duplicate signer":   strings.Replace(g, lines[6], lines[5], 1),
		"upper-case digest":  strings.Replace(g, "abab", "ABAB", 1),
		"bundle without sha": strings.Replace(g, "bundle sha256:", "bundle ", 1),
		"bad key":            strings.Replace(g, "key rulelock", "key x", 1),
		"lines swapped":      strings.Replace(g, lines[1]+"\n"+lines[2], lines[2]+"\n"+lines[1], 1),
		"extra line":         g + "time 2026\n",
		"short root":         strings.Replace(g, lines[len(lines)-2], "checkpoint 42 AAAA", 1),
		"negative size":      strings.Replace(g, "checkpoint 42", "checkpoint -42", 1),
	}
	for name, in := range cases {
		if in == g {
			t.Fatalf("%s: the case did not change the statement", name)
		}
		if _, err := ParseStatement([]byte(in)); err == nil {
			t.Errorf("%s: parsed %q", name, in)
		}
	}
}

func FuzzParseStatement(f *testing.F) {
	good, err := sampleStatement(f).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(StatementHeader + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStatement(b)
		if err != nil {
			return
		}
		out, err := s.Marshal()
		if err != nil {
			t.Fatalf("parsed %q, cannot marshal: %v", b, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("parse→marshal changed %q into %q", b, out)
		}
	})
}

func ExampleStatement() {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	boot, _ := note.NewEd25519VerifierKey("example.com/log/boot", priv.Public().(ed25519.PublicKey))
	s := &Statement{
		Origin: "example.com/log",
		Engine: "sha256:" + strings.Repeat("0f", 32),
		Key:    boot,
	}
	b, _ := s.Marshal()
	rd, _ := s.ReportData()
	fmt.Printf("%s%x\n", b, rd[:8])
	// Output:
	// rulelock attestation v1
	// origin example.com/log
	// engine sha256:0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f
	// bundle none
	// threshold 0
	// key example.com/log/boot+a0b2ecde+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs
	// prev none
	// checkpoint 0 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
	// 5aa3720387f7f7b1
}
