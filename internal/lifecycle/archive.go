package lifecycle

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/policy"
)

// Archive errors. Load wraps one of them, so a caller can tell a policy that
// was never archived from one whose archive no longer matches its digest.
var (
	// ErrNotArchived: the archive holds nothing under the digest.
	ErrNotArchived = errors.New("not in the archive")
	// ErrAltered: what the archive holds under the digest is not the policy
	// the digest names (a file changed, added or removed), or it no longer
	// reads or compiles.
	ErrAltered = errors.New("archive altered")
)

// Archive is the directory where a gateway keeps every policy it activated,
// one subdirectory per digest (the hex after "sha256:"), so that any
// decision can be replayed under the exact policy it names. A signed bundle
// is kept as a bundle directory (MANIFEST, its files, SIGNATURES); a
// development-mode policy as its policy files, named by the policy's own
// digest. The archive is append-only: an entry, once written, is never
// replaced.
type Archive struct {
	Dir string // a gateway's <data>/bundles
}

// Archived is a policy read back from the archive and checked against its
// digest.
type Archived struct {
	Digest  string
	Policy  *policy.Policy
	Version uint64 // the bundle's version; 0 for a development-mode policy
	Dev     bool   // a development-mode policy, not a signed bundle
}

// path returns where the archive keeps digest. Only "sha256:" and 64
// lowercase hex digits name an entry: a digest read from a log never
// reaches outside the archive.
func (a Archive) path(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !isHex64(h) {
		return "", fmt.Errorf("%q is not a policy digest (sha256:<64 hex>)", digest)
	}
	return filepath.Join(a.Dir, h), nil
}

func isHex64(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Digests lists the digests the archive holds entries for, without reading
// them (Load checks each).
func (a Archive) Digests() ([]string, error) {
	ents, err := os.ReadDir(a.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && isHex64(e.Name()) {
			out = append(out, "sha256:"+e.Name())
		}
	}
	return out, nil
}

// Load reads the policy archived under digest, checks that it is exactly
// the policy the digest names and compiles it. The error wraps
// ErrNotArchived or ErrAltered.
func (a Archive) Load(digest string) (*Archived, error) {
	dir, err := a.path(digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotArchived, err)
	}
	if _, err := os.Lstat(dir); err != nil {
		return nil, fmt.Errorf("%s is %w (%s)", digest, ErrNotArchived, a.Dir)
	}
	if _, err := os.Lstat(filepath.Join(dir, bundle.ManifestFile)); err != nil {
		return a.loadDev(dir, digest)
	}
	b, err := bundle.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("archive of %s: %w: %v", digest, ErrAltered, err)
	}
	if b.Digest() != digest {
		return nil, fmt.Errorf("archive of %s: %w: its manifest hashes to %s", digest, ErrAltered, b.Digest())
	}
	p, err := compileBundle(b)
	if err != nil {
		return nil, fmt.Errorf("archive of %s: %w: it does not compile: %v", digest, ErrAltered, err)
	}
	return &Archived{Digest: digest, Policy: p, Version: b.Manifest.Version}, nil
}

// Manifest returns the manifest of the bundle archived under digest,
// its files checked against it and it against the digest, without
// compiling the policy. The error wraps ErrNotArchived or ErrAltered (a
// development-mode policy has no manifest: ErrAltered).
func (a Archive) Manifest(digest string) (*bundle.Manifest, error) {
	dir, err := a.path(digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotArchived, err)
	}
	if _, err := os.Lstat(dir); err != nil {
		return nil, fmt.Errorf("%s is %w (%s)", digest, ErrNotArchived, a.Dir)
	}
	b, err := bundle.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("archive of %s: %w: %v", digest, ErrAltered, err)
	}
	if b.Digest() != digest {
		return nil, fmt.Errorf("archive of %s: %w: its manifest hashes to %s", digest, ErrAltered, b.Digest())
	}
	return b.Manifest, nil
}

// loadDev reads a development-mode policy: its files, named by the policy's
// own digest.
func (a Archive) loadDev(dir, digest string) (*Archived, error) {
	p, err := policy.Load(os.DirFS(dir), policy.Options{})
	if err != nil {
		return nil, fmt.Errorf("archive of %s: %w: %v", digest, ErrAltered, err)
	}
	if p.Digest() != digest {
		return nil, fmt.Errorf("archive of %s: %w: it hashes to %s", digest, ErrAltered, p.Digest())
	}
	return &Archived{Digest: digest, Policy: p, Dev: true}, nil
}

// compileBundle compiles a bundle's rules and data (not its tests).
func compileBundle(b *bundle.Bundle) (*policy.Policy, error) {
	var srcs []policy.Source
	for _, f := range b.Files {
		if !policy.IsTestFile(f.Name) {
			srcs = append(srcs, f)
		}
	}
	return policy.FromSources(srcs, policy.Options{})
}

// Store keeps the bundle b, as read (manifest, files and signature files),
// under its digest. An existing entry must hold the same bundle; a damaged
// one is an error, never overwritten.
func (a Archive) Store(b *bundle.Bundle) error {
	d := b.Digest()
	dir, err := a.path(d)
	if err != nil {
		return err
	}
	if done, err := a.existing(dir, d); done || err != nil {
		return err
	}
	files := []file{{bundle.ManifestFile, b.Text}}
	for _, f := range b.Files {
		files = append(files, file{f.Name, f.Data})
	}
	for _, s := range b.Signatures {
		files = append(files, file{s.Path, s.Data})
	}
	return writeDir(dir, files)
}

// StoreDev keeps a development-mode policy p, compiled from srcs, under
// p's digest. Only the base names of srcs are kept. An existing entry must
// hold the same policy.
func (a Archive) StoreDev(p *policy.Policy, srcs []policy.Source) error {
	dir, err := a.path(p.Digest())
	if err != nil {
		return err
	}
	if done, err := a.existing(dir, p.Digest()); done || err != nil {
		return err
	}
	var files []file
	var base []policy.Source
	for _, s := range srcs {
		files = append(files, file{filepath.Base(s.Name), s.Data})
		base = append(base, policy.Source{Name: filepath.Base(s.Name), Data: s.Data})
	}
	// What is archived must be what runs: the same sources, read once.
	if q, err := policy.FromSources(base, policy.Options{}); err != nil || q.Digest() != p.Digest() {
		return fmt.Errorf("the development policy's sources are not those of %s (%v)", p.Digest(), errOr(err, "they changed"))
	}
	return writeDir(dir, files)
}

// existing reports whether dir already holds digest's policy; an entry that
// holds anything else is an error.
func (a Archive) existing(dir, digest string) (bool, error) {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if _, err := a.Load(digest); err != nil {
		return false, fmt.Errorf("%s is damaged: %w", dir, err)
	}
	return true, nil
}

type file struct {
	name string // a clean relative path: NAME or SIGNATURES/NAME
	data []byte
}

// writeDir writes files into the new directory final durably: into a
// temporary directory next to it, each file synced, the directories
// synced, renamed into place, the parent synced. Nothing is left behind
// on an error, and final is never replaced.
func writeDir(final string, files []file) (err error) {
	parent := filepath.Dir(final)
	if err := mkdirDurable(parent); err != nil {
		return err
	}
	// A crash before the rename leaves a temporary directory: never read,
	// removed here (one gateway holds the data directory).
	stale, _ := filepath.Glob(filepath.Join(parent, ".tmp-"+filepath.Base(final)+"-*"))
	for _, d := range stale {
		os.RemoveAll(d)
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-"+filepath.Base(final)+"-")
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	dirs := map[string]bool{tmp: true}
	for _, f := range files {
		path := filepath.Join(tmp, filepath.FromSlash(f.name))
		if d := filepath.Dir(path); !dirs[d] {
			if err := os.Mkdir(d, 0o755); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
			dirs[d] = true
		}
		if err := fsx.CreateSynced(path, f.data, 0o444); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
	}
	for d := range dirs {
		if d != tmp {
			if err := fsx.SyncDir(d); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
		}
	}
	if err := fsx.SyncDir(tmp); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := fsx.SyncDir(parent); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// mkdirDurable creates dir (and its parents) if it is missing and syncs
// the parent of each directory it created.
func mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirDurable(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("archive: %w", err)
	}
	if err := fsx.SyncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}
