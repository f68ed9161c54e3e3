package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
	"github.com/rulelock/rulelock/policy/policytest"
)

// candidateBundle reads the bundle in dir and returns it ready to activate:
// signed by the trust file's quorum, unexpired, compiled, its own tests
// passed. Every failure says why; nothing is activated here.
func candidateBundle(dir string, trust *bundle.Trust, now time.Time) (*gateway.Active, *bundle.Bundle, error) {
	b, err := bundle.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	v, err := b.Verify(trust, now)
	if err != nil {
		return nil, nil, err
	}
	p, err := policy.FromSources(v.Sources, policy.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("bundle %s: the policy does not compile: %v", v.Digest, err)
	}
	var suites []*policytest.Suite
	for _, t := range v.Tests {
		s, err := policytest.Parse(t.Name, t.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("bundle %s: %v", v.Digest, err)
		}
		suites = append(suites, s)
	}
	if len(suites) == 0 {
		return nil, nil, fmt.Errorf("bundle %s has no policy tests", v.Digest)
	}
	res, err := policytest.Run(p, suites, policytest.Options{})
	if err != nil {
		return nil, nil, err
	}
	if res.Failed > 0 {
		return nil, nil, fmt.Errorf("bundle %s: %d of %d of its policy tests fail", v.Digest, res.Failed, res.Failed+res.Passed)
	}
	return &gateway.Active{Policy: p, Digest: v.Digest, Version: v.Manifest.Version, Signers: v.Signers, Source: dir}, b, nil
}

// activateBundle activates the bundle in the configured directory unless it
// is older than (or as old as, with another digest) the last bundle the
// log says was active: anti-rollback survives restarts because it is read
// from the log and the archive, both tamper-evident. The bundle is archived
// under <data>/bundles/<digest> so any decision can be replayed.
func (g *running) activateBundle(ctx context.Context) error {
	now := time.Now()
	cand, b, err := candidateBundle(g.cfg.Bundle, g.trust, now)
	if err != nil {
		return err
	}
	if last, dev, ok := g.gw.LastActivation(); ok && !dev {
		if last == cand.Digest {
			cand.Source += " (active before the restart)"
		} else {
			prev, err := bundle.ReadDir(g.archivePath(last))
			if err != nil || prev.Digest() != last {
				return fmt.Errorf("the archive of the active bundle %s is missing or altered (%v): refusing to activate anything", last, err)
			}
			if cand.Version <= prev.Manifest.Version {
				return fmt.Errorf("bundle %s has version %d, not higher than the active version %d: %w", cand.Digest, cand.Version, prev.Manifest.Version, gateway.ErrRollback)
			}
		}
	}
	if err := g.archive(b); err != nil {
		return fmt.Errorf("archive bundle: %w", err)
	}
	return g.gw.Activate(ctx, cand)
}

func (g *running) archivePath(digest string) string {
	return filepath.Join(g.cfg.DataDir, "bundles", strings.TrimPrefix(digest, "sha256:"))
}

// archive keeps an activated bundle; an existing archive must match.
func (g *running) archive(b *bundle.Bundle) error {
	dir := g.archivePath(b.Digest())
	if prev, err := bundle.ReadDir(dir); err == nil {
		if prev.Digest() != b.Digest() {
			return fmt.Errorf("%s holds another bundle", dir)
		}
		return nil
	} else if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		return fmt.Errorf("%s is damaged: %v", dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	return writeBundle(dir, b.Manifest, b.Files)
}

// activateAtStart activates the configured bundle. When it is rejected
// the gateway still starts, but not ready: the rejection is logged, /readyz
// answers 503 with the reason, every action is refused (no_policy) and
// nothing is decided or executed until a SIGHUP activates a valid bundle.
func (g *running) activateAtStart(ctx context.Context) error {
	err := g.activateBundle(ctx)
	if err == nil {
		a := g.gw.Active()
		fmt.Fprintf(g.e.stderr, "rulelock: active policy: bundle %s version %d, signed by %s\n", a.Digest, a.Version, strings.Join(a.Signers, ", "))
		return nil
	}
	if _, lerr := g.log.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(), EngineVersion: gateway.EngineVersion,
		Message: "bundle rejected at start: " + err.Error()}); lerr != nil {
		return lerr
	}
	reason := "no valid policy bundle: " + err.Error()
	g.rejected.Store(&reason)
	fmt.Fprintf(g.e.stderr, "rulelock: NOT READY: %s\nrulelock: every action is refused (no_policy) until a SIGHUP activates a valid bundle\n", reason)
	return nil
}

// notReadyReason says why /readyz answers 503.
func (g *running) notReadyReason() string {
	if err := g.cp.WitnessConflict(); err != nil {
		return err.Error()
	}
	if r := g.rejected.Load(); r != nil && g.gw.Active().None {
		return *r
	}
	return "starting or shutting down"
}

// reload tries the bundle directory again (SIGHUP). A rejected candidate is
// logged with its reason and the active policy (or the lack of one) stays.
func (g *running) reload(ctx context.Context) {
	if g.cfg.Bundle == "" {
		fmt.Fprintln(g.e.stderr, "rulelock: SIGHUP ignored: development mode has no bundle to reload")
		return
	}
	if err := g.activateBundle(ctx); err != nil {
		stays := "the active policy stays"
		if g.gw.Active().None {
			reason := "no valid policy bundle: " + err.Error()
			g.rejected.Store(&reason)
			stays = "still no policy: not ready"
		}
		fmt.Fprintf(g.e.stderr, "rulelock: bundle rejected, %s: %v\n", stays, err)
		g.log.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(), EngineVersion: gateway.EngineVersion,
			BundleDigest: g.gw.Active().Digest, Message: "bundle rejected: " + err.Error()})
		return
	}
	a := g.gw.Active()
	fmt.Fprintf(g.e.stderr, "rulelock: activated bundle %s version %d, signed by %s\n", a.Digest, a.Version, strings.Join(a.Signers, ", "))
}

// orExecutor resolves an action type with first, then with second.
func orExecutor(first, second func(string) gateway.Executor) func(string) gateway.Executor {
	if first == nil {
		return second
	}
	return func(t string) gateway.Executor {
		if ex := first(t); ex != nil {
			return ex
		}
		return second(t)
	}
}

// archiveDev keeps a development-mode policy's files under its digest, as
// bundles are kept, so that `verify --replay` can re-run its decisions.
func (g *running) archiveDev(p *policy.Policy) error {
	dir := g.archivePath(p.Digest())
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	srcs, err := readPolicySources(g.cfg.Policy)
	if err != nil {
		return err
	}
	var files []policy.Source
	for _, s := range srcs {
		files = append(files, policy.Source{Name: filepath.Base(s.Name), Data: s.Data})
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".dev-")
	if err != nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return err
		}
		if tmp, err = os.MkdirTemp(filepath.Dir(dir), ".dev-"); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(tmp, f.Name), f.Data); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	return os.Rename(tmp, dir)
}
