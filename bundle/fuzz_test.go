package bundle_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/rulelock/rulelock/bundle"
)

// FuzzParseManifest checks that ParseManifest accepts only canonical
// encodings: whatever it accepts, Marshal gives back byte for byte.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(goodManifest))
	if ar, err := txtar.ParseFile(filepath.Join("testdata", "vectors.txtar")); err == nil {
		for _, file := range ar.Files {
			if file.Name == "MANIFEST" {
				f.Add(file.Data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		m, err := bundle.ParseManifest(text)
		if err != nil {
			return
		}
		if got := m.Marshal(); !bytes.Equal(got, text) {
			t.Fatalf("Marshal(ParseManifest(%q)) = %q", text, got)
		}
	})
}

// FuzzParseTrust checks that ParseTrust accepts only canonical encodings.
func FuzzParseTrust(f *testing.F) {
	f.Add([]byte("rulelock trust v1\nthreshold 1\nkey alice+bc68c201+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs\n"))
	if ar, err := txtar.ParseFile(filepath.Join("testdata", "vectors.txtar")); err == nil {
		for _, file := range ar.Files {
			if file.Name == "trust" {
				f.Add(file.Data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		tr, err := bundle.ParseTrust(text)
		if err != nil {
			return
		}
		if got := tr.Marshal(); !bytes.Equal(got, text) {
			t.Fatalf("Marshal(ParseTrust(%q)) = %q", text, got)
		}
	})
}

// FuzzVerify feeds arbitrary manifests and signature files to Verify: it
// must never panic, and whatever it accepts must be signed by the trusted key.
func FuzzVerify(f *testing.F) {
	ar, err := txtar.ParseFile(filepath.Join("testdata", "vectors.txtar"))
	if err != nil {
		f.Fatal(err)
	}
	files := map[string][]byte{}
	var sigName string
	for _, file := range ar.Files {
		files[file.Name] = file.Data
		if filepath.Dir(file.Name) == "SIGNATURES" {
			sigName = file.Name
		}
	}
	trust, err := bundle.ParseTrust(files["trust"])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(files["MANIFEST"], files[sigName])
	f.Fuzz(func(t *testing.T, manifest, sig []byte) {
		dir := t.TempDir()
		for _, name := range []string{"seed.rules", "seed_test.yaml"} {
			os.WriteFile(filepath.Join(dir, name), files[name], 0o644)
		}
		os.WriteFile(filepath.Join(dir, "MANIFEST"), manifest, 0o644)
		os.Mkdir(filepath.Join(dir, "SIGNATURES"), 0o755)
		os.WriteFile(filepath.Join(dir, sigName), sig, 0o644)
		v, err := bundle.VerifyDir(dir, trust, created)
		if err != nil {
			return
		}
		if !bytes.Equal(manifest, files["MANIFEST"]) || len(v.Signers) != 1 {
			t.Fatalf("accepted a manifest other than the signed one: %q", manifest)
		}
	})
}
