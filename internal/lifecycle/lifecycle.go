// Package lifecycle owns the life of a policy from candidate to archive: it
// is the only code that judges a bundle, refuses a rollback, writes or reads
// the archive of activated policies, and records every verdict in the audit
// log. `rulelock serve` activates through an Activator; `rulelock replay`
// and `rulelock verify --replay` (package replay) read policies back through
// an Archive, so a gateway and a verifier agree on what a digest means.
//
// # Acceptance
//
// Accept takes a bundle directory and a trust file and returns a policy
// ready to activate, or the first reason not to:
//
//  1. the files are exactly those the MANIFEST lists, with their hashes,
//     and M distinct keys of the trust file signed the manifest, and it has
//     not expired (bundle.Bundle.Verify);
//  2. the rules and data compile (policy.FromSources);
//  3. the bundle has policy tests, and they all pass (policytest.Run).
//
// # Anti-rollback
//
// A signed bundle activates only when its version is strictly higher than
// that of the last signed bundle activated: in this process, or before a
// restart, as the log records it. The log names the last bundle by its
// digest (Options.Logged, from gateway.Gateway.LastBundle after Rebuild);
// its version is read from the archive, whose entry must match that digest:
// a missing or altered archive refuses every bundle. The one exception is
// the same bundle again after a restart (nothing active yet, candidate
// digest = the logged one). Development-mode activations in between do
// not lower the floor.
//
// # Archive
//
// Every activated policy is kept under its digest (see Archive) before its
// activation is logged: written to a temporary directory, every file and
// directory synced, renamed into place, the parent synced. Reading it back
// (Archive.Load) checks it against the digest, so an altered archive is an
// error (a finding in a replay), never silently another policy.
//
// # Logging
//
// An activation is the gateway's POLICY_ACTIVATION entry
// (gateway.Gateway.Activate). A rejected candidate is a NOTE entry
// "bundle rejected: <reason>" ("bundle rejected at start: " at start) naming
// the policy still active. When that entry cannot be written, the error
// wraps ErrUnrecorded as well as the reason: a rejection is never dropped
// silently.
//
// # Example
//
//	act := lifecycle.New(gw, lifecycle.Options{
//		Trust: trust, Archive: lifecycle.Archive{Dir: data + "/bundles"},
//		Log: log, Logged: last, // last, _ := gw.LastBundle()
//	})
//	if err := act.Start(ctx, "/etc/rulelock/bundle"); errors.Is(err, lifecycle.ErrUnrecorded) {
//		// the log failed: stop
//	} else if err != nil {
//		// rejected and logged: serve, not ready, until a Reload activates one
//	}
//
// # Why internal
//
// The lifecycle is policy for this gateway (its archive layout, its log
// entries, its anti-rollback floor), not a format others implement: the
// public bundle package stays the format and its verification, small enough
// for a third party to import; this package wires it to the gateway.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
	"github.com/rulelock/rulelock/policy/policytest"
)

var (
	// ErrRollback refuses a bundle whose version is not higher than the
	// last activated one.
	ErrRollback = errors.New("bundle version is not higher than the active one")
	// ErrUnrecorded: a candidate was rejected and the rejection could not
	// be written to the log.
	ErrUnrecorded = errors.New("the rejection could not be recorded in the log")
)

// Gateway is what an Activator activates policies in: *gateway.Gateway.
type Gateway interface {
	Active() *gateway.Active
	Activate(ctx context.Context, a *gateway.Active) error
}

// Options configure an Activator.
type Options struct {
	// Trust is the keys that may sign bundles and the quorum; nil refuses
	// every bundle (development mode activates with ActivateDev).
	Trust *bundle.Trust
	// Archive keeps every activated policy.
	Archive Archive
	// Log records rejections (the gateway records activations).
	Log gateway.Recorder
	// Logged is the digest of the last signed bundle the log activated
	// (gateway.Gateway.LastBundle after Rebuild); "" for none.
	Logged string
	// Now is the clock for bundle expiry and entry times (default
	// time.Now).
	Now func() time.Time
}

// An Activator activates policies in one gateway. It is safe for
// concurrent use: activations are serialised.
type Activator struct {
	gw   Gateway
	opts Options

	mu    sync.Mutex
	floor *floor // the last signed bundle activated; nil for none
}

// floor is the bundle a candidate's version must exceed.
type floor struct {
	digest  string
	version uint64
	logged  bool // known from the log only: not activated by this process
}

// New returns an Activator for gw.
func New(gw Gateway, opts Options) *Activator {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Activator{gw: gw, opts: opts}
}

// Start activates the bundle in dir when the gateway starts. A rejection is
// logged as "bundle rejected at start: <reason>" and returned.
func (a *Activator) Start(ctx context.Context, dir string) error {
	return a.activate(ctx, dir, "bundle rejected at start: ")
}

// Reload activates the bundle in dir on a running gateway (SIGHUP). A
// rejection is logged as "bundle rejected: <reason>" and returned; the
// active policy stays.
func (a *Activator) Reload(ctx context.Context, dir string) error {
	return a.activate(ctx, dir, "bundle rejected: ")
}

func (a *Activator) activate(ctx context.Context, dir, prefix string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cand, err := a.admit(ctx, dir)
	if err != nil {
		return a.reject(ctx, prefix, err)
	}
	a.floor = &floor{digest: cand.Digest, version: cand.Version}
	return nil
}

// admit judges the bundle in dir, archives it and activates it.
func (a *Activator) admit(ctx context.Context, dir string) (*gateway.Active, error) {
	cand, b, err := Accept(dir, a.opts.Trust, a.opts.Now())
	if err != nil {
		return nil, err
	}
	if err := a.checkRollback(cand); err != nil {
		return nil, err
	}
	if err := a.opts.Archive.Store(b); err != nil {
		return nil, fmt.Errorf("archive bundle: %w", err)
	}
	if err := a.gw.Activate(ctx, cand); err != nil {
		return nil, err
	}
	return cand, nil
}

// ActivateDev activates a development-mode policy p, compiled from srcs
// (the directory source): archived under p's digest, logged as a
// development-mode activation. It judges nothing: development mode is the
// operator's choice, and `verify --replay` reports it.
func (a *Activator) ActivateDev(ctx context.Context, p *policy.Policy, srcs []policy.Source, source string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.opts.Archive.StoreDev(p, srcs)
	if err != nil {
		err = fmt.Errorf("archive the development policy: %w", err)
	} else {
		err = a.gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: source})
	}
	if err != nil {
		return a.reject(ctx, "development policy rejected: ", err)
	}
	return nil
}

// checkRollback refuses cand unless its version is higher than the floor's.
// The floor is read from the archive the first time it is needed.
func (a *Activator) checkRollback(cand *gateway.Active) error {
	if a.floor == nil && a.opts.Logged != "" {
		if a.opts.Logged == cand.Digest {
			// The same bundle as before the restart: its archive is
			// written again if it went missing, checked if it is there.
			cand.Source += " (active before the restart)"
			return nil
		}
		m, err := a.opts.Archive.Manifest(a.opts.Logged)
		if err != nil {
			return fmt.Errorf("the archive of the active bundle %s is missing or altered (%v): refusing to activate anything", a.opts.Logged, err)
		}
		a.floor = &floor{digest: a.opts.Logged, version: m.Version, logged: true}
	}
	if a.floor == nil {
		return nil
	}
	if a.floor.logged && a.floor.digest == cand.Digest && a.gw.Active().None {
		cand.Source += " (active before the restart)"
		return nil
	}
	if cand.Version <= a.floor.version {
		return fmt.Errorf("bundle %s has version %d, not higher than the active version %d: %w", cand.Digest, cand.Version, a.floor.version, ErrRollback)
	}
	return nil
}

// reject records a rejected candidate, naming the policy still active.
func (a *Activator) reject(ctx context.Context, prefix string, err error) error {
	_, lerr := a.opts.Log.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: a.opts.Now().UTC(), EngineVersion: gateway.EngineVersion,
		BundleDigest: a.gw.Active().Digest, Message: prefix + err.Error()})
	if lerr != nil {
		return fmt.Errorf("%w; %w: %w", err, ErrUnrecorded, lerr)
	}
	return err
}

// Accept judges the bundle in dir against trust at time now (see the
// package documentation) and returns it ready to activate, with the bundle
// as read (what Archive.Store keeps). It judges the bundle alone: the
// version against the active one is the Activator's check.
func Accept(dir string, trust *bundle.Trust, now time.Time) (*gateway.Active, *bundle.Bundle, error) {
	if trust == nil {
		return nil, nil, fmt.Errorf("bundle %s: no trust file: no bundle can be accepted", dir)
	}
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
	if err := runTests(p, v); err != nil {
		return nil, nil, err
	}
	return &gateway.Active{Policy: p, Digest: v.Digest, Version: v.Manifest.Version, Signers: v.Signers, Source: dir}, b, nil
}

// runTests runs the bundle's own policy tests against p: there must be
// some, and all must pass.
func runTests(p *policy.Policy, v *bundle.Verified) error {
	var suites []*policytest.Suite
	for _, t := range v.Tests {
		s, err := policytest.Parse(t.Name, t.Data)
		if err != nil {
			return fmt.Errorf("bundle %s: %v", v.Digest, err)
		}
		suites = append(suites, s)
	}
	if len(suites) == 0 {
		return fmt.Errorf("bundle %s has no policy tests", v.Digest)
	}
	res, err := policytest.Run(p, suites, policytest.Options{})
	if err != nil {
		return fmt.Errorf("bundle %s: %w", v.Digest, err)
	}
	if res.Failed > 0 {
		return fmt.Errorf("bundle %s: %d of %d of its policy tests fail", v.Digest, res.Failed, res.Failed+res.Passed)
	}
	return nil
}

// IsBundle reports whether dir looks like a bundle: it holds a MANIFEST.
func IsBundle(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, bundle.ManifestFile))
	return err == nil && fi.Mode().IsRegular()
}

// Candidate reads the bundle in dir for a what-if (`rulelock replay`),
// without activating it: its files are checked against its manifest and
// its policy compiled, exactly as the archive will hold it. With trust, it
// is judged first as the gateway would judge it (Accept), so the report
// is about a bundle that could be activated.
func Candidate(dir string, trust *bundle.Trust, now time.Time) (*policy.Policy, string, error) {
	if trust != nil {
		a, _, err := Accept(dir, trust, now)
		if err != nil {
			return nil, "", err
		}
		return a.Policy, a.Digest, nil
	}
	b, err := bundle.ReadDir(dir)
	if err != nil {
		return nil, "", err
	}
	p, err := compileBundle(b)
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: the policy does not compile: %v", b.Digest(), err)
	}
	return p, b.Digest(), nil
}

// Development reports whether e activates a development-mode policy: a
// policy loaded from a directory, which no key signed.
func Development(e *audit.Entry) bool {
	return e.Kind == audit.KindPolicyActivation && len(e.Signers) == 0
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}
