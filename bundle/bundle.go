// Package bundle implements rulelock's policy bundles: a directory holding a
// policy (rules, data documents and policy tests), a MANIFEST that lists
// every file with its size and SHA-256, and one signature file per signer.
// The gateway activates a bundle only when Verify accepts it: the files are
// exactly those listed, a quorum of trusted keys signed the manifest, and it
// has not expired. (Anti-rollback, compiling and running the bundle's own
// tests are the gateway's checks, on the Verified result: its internal
// lifecycle package.)
//
// # Layout
//
//	payments-7/
//	  MANIFEST
//	  payments.rules
//	  payments_test.yaml
//	  SIGNATURES/
//	    alice-1a2b3c4d.sig
//	    bob-5e6f7a8b.sig
//
// Only the root holds policy files (the policy loader reads no
// subdirectories), and SIGNATURES is the only directory. Every name is a
// clean portable file name (A-Z a-z 0-9 . _ -, not starting with . or -, at
// most 128 bytes), so no name escapes the directory and no two names differ
// only in Unicode normalisation; names that differ only in case are
// rejected. Symlinks and other non-regular files are rejected, as are files
// over MaxFileSize and bundles over MaxTotalSize.
//
// # Manifest
//
// One canonical text encoding, in the style of x/mod's go.sum and notes:
//
//	rulelock bundle v1
//	name payments
//	version 7
//	created 2026-11-22T10:00:00Z
//	expires 2026-12-22T10:00:00Z
//	file sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 2741 payments.rules
//	file sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 5068 payments_test.yaml
//
// Lines come in exactly that order; expires is optional; files are sorted by
// path. Numbers are decimal without leading zeros, times are RFC 3339 in UTC
// and whole seconds. The bundle digest, which every decision in the audit
// log names, is "sha256:" and the hex SHA-256 of the manifest's bytes.
//
// # Signatures
//
// Each signer adds one file SIGNATURES/<name>-<hash>.sig (<name> is the key
// name with characters outside the portable set replaced by '_'; the file
// name is for people, the key is identified by the signature): a C2SP
// signed note (golang.org/x/mod/sumdb/note, Ed25519) whose text is exactly
// the manifest and which carries exactly one signature. Signers sign
// independently, with key files or a PKCS#11 token: anything that is a
// note.Signer.
//
// # Trust
//
// A Trust lists N verifier keys and a threshold M (see ParseTrust). A bundle
// verifies when M distinct trusted keys signed it. A key that signed twice
// counts once; a signature by an unknown key counts zero (and is reported);
// a trusted key's signature that does not verify over this manifest, or a
// malformed signature file, rejects the bundle.
//
// # Example
//
//	trust, err := bundle.ParseTrust(trustFile)
//	...
//	v, err := bundle.VerifyDir("/etc/rulelock/bundles/payments-7", trust, time.Now())
//	if err != nil {
//		// errors.Is(err, bundle.ErrBelowThreshold), ...; log err's Code.
//	}
//	p, err := policy.FromSources(v.Sources, policy.Options{})
//	// run v.Tests with policytest, check v.Manifest.Version > active, activate,
//	// and log v.Digest and v.Signers.
package bundle

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/policy"
)

// Names at a bundle's root that are not policy files.
const (
	ManifestFile  = "MANIFEST"
	SignaturesDir = "SIGNATURES"
)

// A Bundle is a bundle read from a directory: its manifest and files, which
// Read checked against each other, and its signature files, which it did
// not check.
type Bundle struct {
	Manifest   *Manifest
	Text       []byte          // MANIFEST, exactly as read
	Files      []policy.Source // in manifest order, each matching its size and hash
	Signatures []Signature
}

// A Signature is one signature file, unverified.
type Signature struct {
	Path string // SIGNATURES/<name>.sig
	Data []byte
}

// Digest returns the bundle digest.
func (b *Bundle) Digest() string { return digest(b.Text) }

// Verified is a bundle that Verify accepted.
type Verified struct {
	Manifest *Manifest       // name, version, created, expires, files
	Digest   string          // "sha256:" + hex SHA-256 of the manifest
	Signers  []string        // names of the distinct trusted keys that signed, sorted
	Unknown  []string        // name+hash of signers not in the trust, sorted; they counted for nothing
	Sources  []policy.Source // rules and data documents: what policy.FromSources compiles
	Tests    []policy.Source // policy test files (policytest.Parse each)
}

// VerifyDir reads the bundle in dir and verifies it. The directory is opened
// with os.Root, so nothing outside it is read even if it changes meanwhile.
func VerifyDir(dir string, trust *Trust, now time.Time) (*Verified, error) {
	b, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return b.Verify(trust, now)
}

// Verify reads the bundle at the root of fsys and verifies it: see
// Bundle.Verify.
func Verify(fsys fs.FS, trust *Trust, now time.Time) (*Verified, error) {
	b, err := Read(fsys)
	if err != nil {
		return nil, err
	}
	return b.Verify(trust, now)
}

// ReadDir reads the bundle in dir (see Read) through an os.Root.
func ReadDir(dir string) (*Bundle, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, errorf(ErrUnreadable, "", "%v", err)
	}
	defer root.Close()
	return Read(root.FS())
}

// Read reads the bundle at the root of fsys and checks that its files are
// exactly those its manifest lists, with their sizes and hashes. It does not
// check signatures. Every failure is an *Error.
func Read(fsys fs.FS) (*Bundle, error) {
	entries, err := readDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	text, err := readFile(fsys, entries, ManifestFile, MaxManifestSize)
	if errors.Is(err, ErrMissingFile) {
		return nil, errorf(ErrBadManifest, ManifestFile, "no manifest")
	}
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(text)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Manifest: m, Text: text}
	if err := checkListed(entries, m); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		data, err := readFile(fsys, entries, f.Path, MaxFileSize)
		if err != nil {
			return nil, err
		}
		if int64(len(data)) != f.Size {
			return nil, errorf(ErrHashMismatch, f.Path, "%d bytes, manifest says %d", len(data), f.Size)
		}
		if sha256.Sum256(data) != f.SHA256 {
			return nil, errorf(ErrHashMismatch, f.Path, "SHA-256 differs from the manifest")
		}
		b.Files = append(b.Files, policy.Source{Name: f.Path, Data: data})
	}
	if b.Signatures, err = readSignatures(fsys, entries); err != nil {
		return nil, err
	}
	return b, nil
}

// readDir lists dir, rejecting bad names and case twins.
func readDir(fsys fs.FS, dir string) (map[string]fs.DirEntry, error) {
	list, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, errorf(ErrUnreadable, "", "%v", err)
	}
	entries := map[string]fs.DirEntry{}
	folded := map[string]string{}
	for _, e := range list {
		p := e.Name()
		if dir != "." {
			p = dir + "/" + p
		}
		if err := checkName(e.Name()); err != nil {
			return nil, errorf(ErrBadPath, p, "%v", err)
		}
		if twin, ok := folded[strings.ToLower(e.Name())]; ok {
			return nil, errorf(ErrBadPath, p, "differs from %s only in case", twin)
		}
		folded[strings.ToLower(e.Name())] = e.Name()
		entries[e.Name()] = e
	}
	return entries, nil
}

// checkListed rejects anything at the root that is neither the manifest,
// the signature directory nor a listed file.
func checkListed(entries map[string]fs.DirEntry, m *Manifest) error {
	listed := map[string]bool{ManifestFile: true, SignaturesDir: true}
	for _, f := range m.Files {
		listed[f.Path] = true
	}
	for _, name := range sortedKeys(entries) {
		if !listed[name] {
			return errorf(ErrUnlistedFile, name, "not in the manifest")
		}
	}
	return nil
}

// readFile reads the regular file name (a path relative to fsys; entries
// lists its directory), refusing more than max bytes.
func readFile(fsys fs.FS, entries map[string]fs.DirEntry, name string, max int64) ([]byte, error) {
	base := name[strings.LastIndexByte(name, '/')+1:]
	e, ok := entries[base]
	if !ok {
		return nil, errorf(ErrMissingFile, name, "listed but not in the bundle")
	}
	if !e.Type().IsRegular() {
		return nil, errorf(ErrNotRegular, name, "not a regular file (%v)", e.Type())
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, errorf(ErrUnreadable, name, "%v", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, errorf(ErrNotRegular, name, "not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, errorf(ErrUnreadable, name, "%v", err)
	}
	if int64(len(data)) > max {
		return nil, errorf(ErrTooLarge, name, "over the %d-byte cap", max)
	}
	return data, nil
}

// readSignatures reads SIGNATURES/*.sig.
func readSignatures(fsys fs.FS, root map[string]fs.DirEntry) ([]Signature, error) {
	e, ok := root[SignaturesDir]
	if !ok {
		return nil, nil
	}
	if !e.IsDir() {
		return nil, errorf(ErrNotRegular, SignaturesDir, "not a directory (%v)", e.Type())
	}
	entries, err := readDir(fsys, SignaturesDir)
	if err != nil {
		return nil, err
	}
	if len(entries) > MaxSignatures {
		return nil, errorf(ErrTooLarge, SignaturesDir, "more than %d signature files", MaxSignatures)
	}
	var sigs []Signature
	for _, name := range sortedKeys(entries) {
		p := SignaturesDir + "/" + name
		if !strings.HasSuffix(name, ".sig") {
			return nil, errorf(ErrUnlistedFile, p, "not a signature file (*.sig)")
		}
		data, err := readFile(fsys, entries, p, MaxSignatureSize)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, Signature{Path: p, Data: data})
	}
	return sigs, nil
}

// Verify checks b's signatures against trust and its expiry against now.
// It returns an *Error of class ErrBadSignature for a malformed signature
// file or a trusted key's signature that does not verify over b's manifest,
// ErrUnsigned when there is no signature, ErrUnknownKey when no signature is
// by a trusted key, ErrBelowThreshold when fewer than trust.Threshold()
// distinct trusted keys signed, and ErrExpired when now is at or after the
// manifest's expiry.
func (b *Bundle) Verify(trust *Trust, now time.Time) (*Verified, error) {
	if trust == nil {
		return nil, errorf(ErrBadTrust, "", "no trust")
	}
	// The quorum counts public keys, not names: one private key counts
	// once, whatever it is called (ParseTrust also refuses one key under
	// two names).
	byKey := map[string]string{} // public key -> the name it signed under
	unknown := map[string]bool{}
	for _, s := range b.Signatures {
		name, known, err := b.checkSignature(s, trust)
		if err != nil {
			return nil, err
		}
		if known {
			byKey[trust.names[name]] = name
		} else {
			unknown[name] = true
		}
	}
	signers := map[string]bool{}
	for _, name := range byKey {
		signers[name] = true
	}
	v := &Verified{Manifest: b.Manifest, Digest: b.Digest(), Signers: sortedKeys(signers), Unknown: sortedKeys(unknown)}
	if err := v.checkQuorum(trust, len(b.Signatures)); err != nil {
		return nil, err
	}
	if !b.Manifest.Expires.IsZero() && !now.Before(b.Manifest.Expires) {
		return nil, errorf(ErrExpired, ManifestFile, "expired at %s", b.Manifest.Expires.Format(timeLayout))
	}
	for _, f := range b.Files {
		if policy.IsTestFile(f.Name) {
			v.Tests = append(v.Tests, f)
		} else {
			v.Sources = append(v.Sources, f)
		}
	}
	return v, nil
}

func (v *Verified) checkQuorum(trust *Trust, files int) error {
	switch {
	case len(v.Signers) >= trust.threshold:
		return nil
	case files == 0:
		return errorf(ErrUnsigned, SignaturesDir, "no signatures; %d of the %d trusted keys must sign", trust.threshold, len(trust.keys))
	case len(v.Signers) == 0:
		return errorf(ErrUnknownKey, SignaturesDir, "no signature by a trusted key (signed by %s); %d must sign", strings.Join(v.Unknown, ", "), trust.threshold)
	}
	return errorf(ErrBelowThreshold, SignaturesDir, "%d distinct trusted keys signed (%s), %d must", len(v.Signers), strings.Join(v.Signers, ", "), trust.threshold)
}

// checkSignature checks that s is a note over exactly b's manifest with
// exactly one signature, and verifies it if its key is trusted. It returns
// the key's name when trusted, name+hash when not.
func (b *Bundle) checkSignature(s Signature, trust *Trust) (name string, known bool, err error) {
	rest, ok := bytes.CutPrefix(s.Data, b.Text)
	if !ok || !bytes.HasPrefix(rest, []byte("\n")) {
		return "", false, errorf(ErrBadSignature, s.Path, "not a note over this manifest (signed a different manifest?)")
	}
	if bytes.Count(rest, []byte("\n")) != 2 {
		return "", false, errorf(ErrBadSignature, s.Path, "want exactly one signature line")
	}
	n, err := note.Open(s.Data, trust.verifiers)
	var unverified *note.UnverifiedNoteError
	switch {
	case errors.As(err, &unverified):
		sig := unverified.Note.UnverifiedSigs[0]
		return fmt.Sprintf("%s+%08x", sig.Name, sig.Hash), false, nil
	case err != nil:
		return "", false, errorf(ErrBadSignature, s.Path, "%v", err)
	}
	return n.Sigs[0].Name, true, nil
}

func sortedKeys[V any](m map[string]V) []string {
	var list []string
	for k := range m {
		list = append(list, k)
	}
	sort.Strings(list)
	return list
}

// Sign returns a signature of b's manifest by signer: the path of the
// signature file (SIGNATURES/<name>-<hash>.sig) and its contents.
func Sign(b *Bundle, signer note.Signer) (path string, data []byte, err error) {
	data, err = note.Sign(&note.Note{Text: string(b.Text)}, signer)
	if err != nil {
		return "", nil, fmt.Errorf("sign bundle: %w", err)
	}
	return SignaturePath(signer.Name(), signer.KeyHash()), data, nil
}

// SignaturePath returns the path of the signature file of the key name+hash:
// SIGNATURES/<name>-<hash>.sig, with name cut to 100 bytes and its bytes
// outside the portable file name set replaced by '_'. The name is a
// convenience for people: Verify identifies the key by the signature.
func SignaturePath(name string, hash uint32) string {
	safe := []byte(name)
	if len(safe) > 100 {
		safe = safe[:100]
	}
	for i, c := range safe {
		if !validName(string(c)) && !(i > 0 && (c == '.' || c == '-')) {
			safe[i] = '_'
		}
	}
	return fmt.Sprintf("%s/%s-%08x.sig", SignaturesDir, safe, hash)
}
