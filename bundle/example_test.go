package bundle_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/policy"
)

// Example builds a bundle, has two of three reviewers sign it and verifies
// it as the gateway does.
func Example() {
	dir, _ := os.MkdirTemp("", "bundle")
	defer os.RemoveAll(dir)

	// The author: the policy files and their manifest.
	files := []policy.Source{
		{Name: "seed.rules", Data: []byte("rule \"NoHighValueTransfers\" {\nprecondition: action.type == \"transfer\"\ncondition: action.amount <= 10000\ndeny: \"Transfers over $10,000 require human approval\"\n}\n")},
	}
	created := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	m, _ := bundle.NewManifest("seed", 1, created, time.Time{}, files)
	os.WriteFile(filepath.Join(dir, "seed.rules"), files[0].Data, 0o644)
	os.WriteFile(filepath.Join(dir, bundle.ManifestFile), m.Marshal(), 0o644)
	fmt.Printf("%s", m.Marshal())

	// Three reviewers hold keys (from fixed seeds, so the output is stable);
	// the gateway trusts all three and needs two.
	var signers []note.Signer
	var vkeys []string
	for i, name := range []string{"alice", "bob", "carol"} {
		skey, vkey, _ := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 32)), name)
		s, _ := note.NewSigner(skey)
		signers, vkeys = append(signers, s), append(vkeys, vkey)
	}
	trust, _ := bundle.NewTrust(2, vkeys...)

	// Each reviewer reads the bundle (which checks the files against the
	// manifest) and adds a signature file.
	sign := func(s note.Signer) {
		b, _ := bundle.ReadDir(dir)
		path, data, _ := bundle.Sign(b, s)
		os.MkdirAll(filepath.Join(dir, bundle.SignaturesDir), 0o755)
		os.WriteFile(filepath.Join(dir, path), data, 0o644)
	}
	sign(signers[0])
	_, err := bundle.VerifyDir(dir, trust, created)
	fmt.Println("one signature:", errors.Is(err, bundle.ErrBelowThreshold))

	sign(signers[2])
	v, err := bundle.VerifyDir(dir, trust, created)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("two signatures:", v.Manifest.Name, v.Manifest.Version, v.Signers, v.Digest)
	// Output:
	// rulelock bundle v1
	// name seed
	// version 1
	// created 2026-11-22T10:00:00Z
	// file sha256:b41ee9d4c8caf02ca3dea7aaf664acf169c166031c649c522058781844efbf64 160 seed.rules
	// one signature: true
	// two signatures: seed 1 [alice carol] sha256:93d4af394f70ac3a8a429b01954f8fd00cbf5387a31a9f46395968d8b4867a31
}
