package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/policy"
)

// startPolicy activates the policy the gateway starts with, through the
// bundle lifecycle (package lifecycle): the configured bundle, or in
// development mode the policy p loaded from a directory.
func (g *running) startPolicy(ctx context.Context, p *policy.Policy) error {
	last, _ := g.gw.LastBundle()
	g.act = lifecycle.New(g.gw, lifecycle.Options{Trust: g.trust, Log: g.recorder(), Logged: last,
		Archive: lifecycle.Archive{Dir: filepath.Join(g.cfg.DataDir, "bundles")}})
	if g.cfg.Bundle != "" {
		return g.activateAtStart(ctx)
	}
	srcs, err := readPolicySources(g.cfg.Policy)
	if err != nil {
		return err
	}
	return g.act.ActivateDev(ctx, p, srcs, g.cfg.Policy)
}

// activateAtStart activates the configured bundle. When it is rejected
// the gateway still starts, but not ready: the rejection is logged, /readyz
// answers 503 with the reason, every action is refused (no_policy) and
// nothing is decided or executed until a SIGHUP activates a valid bundle.
func (g *running) activateAtStart(ctx context.Context) error {
	err := g.act.Start(ctx, g.cfg.Bundle)
	if err == nil {
		a := g.gw.Active()
		fmt.Fprintf(g.e.stderr, "rulelock: active policy: bundle %s version %d, signed by %s\n", a.Digest, a.Version, strings.Join(a.Signers, ", "))
		return nil
	}
	if errors.Is(err, lifecycle.ErrUnrecorded) {
		return err
	}
	reason := "no valid policy bundle: " + err.Error()
	g.rejected.Store(&reason)
	fmt.Fprintf(g.e.stderr, "rulelock: NOT READY: %s\nrulelock: every action is refused (no_policy) until a SIGHUP activates a valid bundle\n", reason)
	return nil
}

// notReadyReason says why /readyz answers 503.
func (g *running) notReadyReason() string {
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
	if err := g.act.Reload(ctx, g.cfg.Bundle); err != nil {
		stays := "the active policy stays"
		if g.gw.Active().None {
			reason := "no valid policy bundle: " + err.Error()
			g.rejected.Store(&reason)
			stays = "still no policy: not ready"
		}
		if errors.Is(err, lifecycle.ErrUnrecorded) {
			fmt.Fprintf(g.e.stderr, "rulelock: ERROR: bundle rejected, %s, and the rejection is NOT in the log: %v\n", stays, err)
			return
		}
		fmt.Fprintf(g.e.stderr, "rulelock: bundle rejected, %s: %v\n", stays, err)
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
