package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/policy"
)

// archive loads archived policies by the digest decisions name, once each.
// It is safe for concurrent use.
type archive struct {
	dir string

	mu    sync.Mutex
	cache map[string]*policy.Policy
	errs  map[string]Finding
}

func newArchive(dir string, known []*policy.Policy) *archive {
	a := &archive{dir: dir, cache: map[string]*policy.Policy{}, errs: map[string]Finding{}}
	for _, p := range known {
		a.cache[p.Digest()] = p
	}
	return a
}

// get returns the policy archived under digest, or the finding that says
// why there is none.
func (a *archive) get(digest string) (*policy.Policy, *Finding) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.cache[digest]; ok {
		return p, nil
	}
	if f, ok := a.errs[digest]; ok {
		return nil, &f
	}
	p, f := a.load(digest)
	if f != nil {
		a.errs[digest] = *f
		return nil, f
	}
	a.cache[digest] = p
	return p, nil
}

// all returns every policy in the archive that loads (what does not is
// reported when a decision names it).
func (a *archive) all() []*policy.Policy {
	var out []*policy.Policy
	for _, p := range a.cache {
		out = append(out, p)
	}
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if _, known := a.cache["sha256:"+e.Name()]; known || !e.IsDir() {
			continue
		}
		if p, f := a.get("sha256:" + e.Name()); f == nil {
			out = append(out, p)
		}
	}
	return out
}

func (a *archive) load(digest string) (*policy.Policy, *Finding) {
	dir := filepath.Join(a.dir, strings.TrimPrefix(digest, "sha256:"))
	if _, err := os.Stat(dir); err != nil {
		return nil, &Finding{Class: BundleMissing, Detail: fmt.Sprintf("no archive of %s in %s", digest, a.dir)}
	}
	if _, err := os.Stat(filepath.Join(dir, bundle.ManifestFile)); err == nil {
		b, err := bundle.ReadDir(dir)
		if err != nil || b.Digest() != digest {
			return nil, &Finding{Class: BundleHashMismatch, Detail: fmt.Sprintf("archive of %s: %v", digest, errOr(err, "digest "+safeDigest(b)))}
		}
		var srcs []policy.Source
		for _, f := range b.Files {
			if !policy.IsTestFile(f.Name) {
				srcs = append(srcs, f)
			}
		}
		p, err := policy.FromSources(srcs, policy.Options{})
		if err != nil {
			return nil, &Finding{Class: BundleHashMismatch, Detail: fmt.Sprintf("archive of %s does not compile: %v", digest, err)}
		}
		return p, nil
	}
	// A development-mode policy: its files, named by the policy's own digest.
	p, err := policy.Load(os.DirFS(dir), policy.Options{})
	if err != nil || p.Digest() != digest {
		return nil, &Finding{Class: BundleHashMismatch, Detail: fmt.Sprintf("archive of %s: %v", digest, errOr(err, "it hashes to "+policyDigest(p)))}
	}
	return p, nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func safeDigest(b *bundle.Bundle) string {
	if b == nil {
		return ""
	}
	return b.Digest()
}

func policyDigest(p *policy.Policy) string {
	if p == nil {
		return ""
	}
	return p.Digest()
}
