package bundle_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/txtar"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.txtar")

var goodManifest = "rulelock bundle v1\nname payments\nversion 7\ncreated 2026-11-22T10:00:00Z\nexpires 2026-12-22T10:00:00Z\n" +
	"file sha256:" + hexA + " 12 a.rules\n" +
	"file sha256:" + hexB + " 0 b_test.yaml\n"

var (
	hexA = strings.Repeat("ab", 32)
	hexB = strings.Repeat("0f", 32)
)

func TestParseManifest(t *testing.T) {
	m, err := bundle.ParseManifest([]byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "payments" || m.Version != 7 || !m.Created.Equal(created) || !m.Expires.Equal(created.Add(30*24*time.Hour)) ||
		len(m.Files) != 2 || m.Files[0].Path != "a.rules" || m.Files[0].Size != 12 || m.Files[0].SHA256 != [32]byte(bytes.Repeat([]byte{0xab}, 32)) {
		t.Errorf("ParseManifest: got %+v", m)
	}
	if got := string(m.Marshal()); got != goodManifest {
		t.Errorf("Marshal: got %q, want %q", got, goodManifest)
	}
	noExpiry := strings.Replace(goodManifest, "expires 2026-12-22T10:00:00Z\n", "", 1)
	if m, err := bundle.ParseManifest([]byte(noExpiry)); err != nil || !m.Expires.IsZero() {
		t.Errorf("without expires: got %v, %v", m, err)
	}
}

func TestParseManifestRejects(t *testing.T) {
	line := func(old, new string) string { return strings.Replace(goodManifest, old, new, 1) }
	fileA := "file sha256:" + hexA + " 12 a.rules\n"
	tests := []struct {
		name, text string
		want       bundle.Code
	}{
		{"empty", "", bundle.ErrBadManifest},
		{"no final newline", strings.TrimSuffix(goodManifest, "\n"), bundle.ErrBadManifest},
		{"another header", line("v1", "v2"), bundle.ErrBadManifest},
		{"CRLF", strings.ReplaceAll(goodManifest, "\n", "\r\n"), bundle.ErrBadManifest},
		{"trailing space", line("payments\n", "payments \n"), bundle.ErrBadManifest},
		{"double space", line("version 7", "version  7"), bundle.ErrBadManifest},
		{"blank line", line("version 7\n", "version 7\n\n"), bundle.ErrBadManifest},
		{"a comment", line("version 7\n", "version 7\n# hi\n"), bundle.ErrBadManifest},
		{"lines out of order", line("name payments\nversion 7\n", "version 7\nname payments\n"), bundle.ErrBadManifest},
		{"expires before created line", line("created 2026-11-22T10:00:00Z\nexpires 2026-12-22T10:00:00Z\n", "expires 2026-12-22T10:00:00Z\ncreated 2026-11-22T10:00:00Z\n"), bundle.ErrBadManifest},
		{"bad name", line("name payments", "name pay/ments"), bundle.ErrBadManifest},
		{"leading zero", line("version 7", "version 07"), bundle.ErrBadManifest},
		{"plus sign", line("version 7", "version +7"), bundle.ErrBadManifest},
		{"version 0", line("version 7", "version 0"), bundle.ErrBadManifest},
		{"version overflow", line("version 7", "version 18446744073709551616"), bundle.ErrBadManifest},
		{"time offset", line("created 2026-11-22T10:00:00Z", "created 2026-11-22T10:00:00+00:00"), bundle.ErrBadManifest},
		{"fractional seconds", line("created 2026-11-22T10:00:00Z", "created 2026-11-22T10:00:00.5Z"), bundle.ErrBadManifest},
		{"lowercase z", line("created 2026-11-22T10:00:00Z", "created 2026-11-22T10:00:00z"), bundle.ErrBadManifest},
		{"expires before created", line("expires 2026-12-22", "expires 2025-12-22"), bundle.ErrBadManifest},
		{"expires equals created", line("expires 2026-12-22", "expires 2026-11-22"), bundle.ErrBadManifest},
		{"no files", strings.Split(goodManifest, "file ")[0], bundle.ErrBadManifest},
		{"no rules file", line(fileA, ""), bundle.ErrBadManifest},
		{"unsorted", line(fileA, "") + fileA, bundle.ErrBadManifest},
		{"duplicate", line(fileA, fileA+fileA), bundle.ErrBadManifest},
		{"uppercase hex", line(hexA, strings.ToUpper(hexA)), bundle.ErrBadManifest},
		{"short hash", line(hexA, hexA[2:]), bundle.ErrBadManifest},
		{"other algorithm", line("sha256:"+hexA, "sha512:"+hexA), bundle.ErrBadManifest},
		{"size leading zero", line(" 12 ", " 012 "), bundle.ErrBadManifest},
		{"negative size", line(" 12 ", " -12 "), bundle.ErrBadManifest},
		{"size over the cap", line(" 12 ", fmt.Sprintf(" %d ", bundle.MaxFileSize+1)), bundle.ErrTooLarge},
		{"size overflow", line(" 12 ", " 18446744073709551616 "), bundle.ErrBadManifest},
		{"space in path", line(" a.rules", " a b.rules"), bundle.ErrBadManifest},
		{"dot slash", line(" a.rules", " ./a.rules"), bundle.ErrBadPath},
		{"dot dot", line(" a.rules", " ../a.rules"), bundle.ErrBadPath},
		{"absolute", line(" a.rules", " /a.rules"), bundle.ErrBadPath},
		{"subdirectory", line(" a.rules", " d/a.rules"), bundle.ErrBadPath},
		{"backslash", line(" a.rules", ` d\a.rules`), bundle.ErrBadPath},
		{"hidden", line(" a.rules", " .a.rules"), bundle.ErrBadPath},
		{"NFC", line(" a.rules", " caf\u00e9.rules"), bundle.ErrBadPath},
		{"NFD", line(" a.rules", " cafe\u0301.rules"), bundle.ErrBadPath},
		{"case twins", line(fileA, "file sha256:"+hexA+" 12 A.rules\n"+fileA), bundle.ErrBadPath},
		{"not a policy file", line(" b_test.yaml", " b.txt"), bundle.ErrBadPath},
		{"the manifest itself", line(" b_test.yaml", " MANIFEST"), bundle.ErrBadPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bundle.ParseManifest([]byte(tt.text))
			if !errors.Is(err, tt.want) {
				t.Errorf("ParseManifest: got %v, want %s", err, tt.want)
			}
		})
	}
}

func TestNewManifestRejects(t *testing.T) {
	files := []policy.Source{{Name: "p.rules", Data: []byte(testRules)}}
	if _, err := bundle.NewManifest("p", 1, created.Add(time.Millisecond), time.Time{}, files); !errors.Is(err, bundle.ErrBadManifest) {
		t.Errorf("fractional created: got %v, want bad_manifest", err)
	}
	twins := append(files, policy.Source{Name: "P.rules", Data: []byte(testRules)})
	if _, err := bundle.NewManifest("p", 1, created, time.Time{}, twins); !errors.Is(err, bundle.ErrBadPath) {
		t.Errorf("case twins: got %v, want bad_path", err)
	}
}

// TestVectors checks the published vectors in testdata/vectors.txtar: the
// manifest of the files in the archive, its digest, and a signature that
// verifies with the published key. With -update it rewrites them.
func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.txtar")
	if *update {
		writeVectors(t, path)
	}
	ar, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	var srcs []policy.Source
	for _, f := range ar.Files {
		files[f.Name] = f.Data
		if policy.IsPolicyFile(f.Name) || policy.IsTestFile(f.Name) {
			srcs = append(srcs, policy.Source{Name: f.Name, Data: f.Data})
		}
	}
	m, err := bundle.ParseManifest(files["MANIFEST"])
	if err != nil {
		t.Fatal(err)
	}
	rebuilt, err := bundle.NewManifest(m.Name, m.Version, m.Created, m.Expires, srcs)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rebuilt.Marshal(), files["MANIFEST"]; !bytes.Equal(got, want) {
		t.Errorf("manifest of the files:\n%s\nwant:\n%s", got, want)
	}
	sum := sha256.Sum256(files["MANIFEST"])
	if got, want := fmt.Sprintf("sha256:%x\n", sum), string(files["digest"]); got != want || m.Digest()+"\n" != want {
		t.Errorf("digest: got %s and %s, want %s", got, m.Digest(), want)
	}
	trust, err := bundle.ParseTrust(files["trust"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range files {
		if name != "digest" && name != "trust" && name != "alice.key" {
			write(t, filepath.Join(dir, name), data)
		}
	}
	v, err := bundle.VerifyDir(dir, trust, m.Created)
	if err != nil {
		t.Fatal(err)
	}
	if v.Digest+"\n" != string(files["digest"]) || strings.Join(v.Signers, ",") != "alice" {
		t.Errorf("VerifyDir: got digest %s, signers %v", v.Digest, v.Signers)
	}
}

// writeVectors regenerates the vectors with a key derived from a fixed seed
// (Ed25519 signatures are deterministic, so the signature is reproducible).
func writeVectors(t *testing.T, path string) {
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 64)), "alice")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	seed := []policy.Source{
		{Name: "seed.rules"}, {Name: "seed_test.yaml"},
	}
	for i := range seed {
		if seed[i].Data, err = os.ReadFile(filepath.Join("..", "examples", "seed", seed[i].Name)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := bundle.NewManifest("seed", 1, created, created.Add(365*24*time.Hour), seed)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := bundle.NewTrust(1, vkey)
	if err != nil {
		t.Fatal(err)
	}
	text := m.Marshal()
	sigPath, sig, err := bundle.Sign(&bundle.Bundle{Manifest: m, Text: text}, signer)
	if err != nil {
		t.Fatal(err)
	}
	ar := &txtar.Archive{
		Comment: []byte("Bundle test vectors: MANIFEST is the canonical manifest of the policy files below, digest is \"sha256:\" and the SHA-256 of MANIFEST,\n" +
			"and the signature file is alice's C2SP signed note over MANIFEST, which the trust file (alice, threshold 1) accepts.\n" +
			"alice.key is the private key that made it (a test key from a fixed seed; Ed25519 signatures are deterministic).\n"),
		Files: []txtar.File{
			{Name: seed[0].Name, Data: seed[0].Data},
			{Name: seed[1].Name, Data: seed[1].Data},
			{Name: "MANIFEST", Data: text},
			{Name: "digest", Data: []byte(m.Digest() + "\n")},
			{Name: sigPath, Data: sig},
			{Name: "trust", Data: trust.Marshal()},
			{Name: "alice.key", Data: []byte(skey + "\n")},
		},
	}
	if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
		t.Fatal(err)
	}
}
