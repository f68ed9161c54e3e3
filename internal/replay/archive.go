package replay

import (
	"errors"
	"sync"

	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/policy"
)

// archive loads archived policies by the digest decisions name, once each,
// through the lifecycle's Archive (the one reader of the archive: the
// gateway's anti-rollback reads it the same way). It is safe for concurrent
// use.
type archive struct {
	ar lifecycle.Archive

	mu    sync.Mutex
	cache map[string]*policy.Policy
	errs  map[string]Finding
}

func newArchive(dir string, known []*policy.Policy) *archive {
	a := &archive{ar: lifecycle.Archive{Dir: dir}, cache: map[string]*policy.Policy{}, errs: map[string]Finding{}}
	for _, p := range known {
		a.cache[p.Digest()] = p
	}
	return a
}

// get returns the policy archived under digest, or the finding that says
// why there is none: bundle_missing when nothing is archived under it,
// bundle_hash_mismatch when what is archived is not the policy the digest
// names (a byte changed, a file added or removed) or does not compile.
func (a *archive) get(digest string) (*policy.Policy, *Finding) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.cache[digest]; ok {
		return p, nil
	}
	if f, ok := a.errs[digest]; ok {
		return nil, &f
	}
	got, err := a.ar.Load(digest)
	if err != nil {
		f := Finding{Class: BundleHashMismatch, Detail: err.Error()}
		if errors.Is(err, lifecycle.ErrNotArchived) {
			f.Class = BundleMissing
		}
		a.errs[digest] = f
		return nil, &f
	}
	a.cache[digest] = got.Policy
	return got.Policy, nil
}

// all returns every policy in the archive that loads (what does not is
// reported when a decision names it).
func (a *archive) all() []*policy.Policy {
	var out []*policy.Policy
	for _, p := range a.cache {
		out = append(out, p)
	}
	digests, _ := a.ar.Digests() // an unreadable archive: each decision reports it
	for _, d := range digests {
		if _, known := a.cache[d]; known {
			continue
		}
		if p, f := a.get(d); f == nil {
			out = append(out, p)
		}
	}
	return out
}
