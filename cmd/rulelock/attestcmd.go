package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/gateway"
)

// attestationConfig is the config's attestation section (off when absent):
//
//	attestation:
//	  provider: tpm            # the only provider that produces evidence here
//	  device: /dev/tpmrm0      # or the socket of a software TPM
//	  identity_pcr: 15         # default 15: the engine, then the per-boot key
//	  bundle_pcr: 14           # default 14: every bundle activated
//	  interval: 1h             # periodic attestation entries (default 1h)
//	  max_gap: 2h              # no decision later than this after the last attestation entry (default 2 × interval)
type attestationConfig struct {
	Provider    string   `yaml:"provider"`
	Device      string   `yaml:"device"`
	IdentityPCR uint     `yaml:"identity_pcr"`
	BundlePCR   uint     `yaml:"bundle_pcr"`
	Interval    duration `yaml:"interval"`
	MaxGap      duration `yaml:"max_gap"`
}

const defaultAttestInterval = time.Hour

// every is the interval of periodic attestation entries.
func (c *attestationConfig) every() time.Duration {
	if c.Interval.Duration == 0 {
		return defaultAttestInterval
	}
	return c.Interval.Duration
}

// maxGap is the longest a decision may follow the last attestation entry.
func (c *attestationConfig) maxGap() time.Duration {
	if c.MaxGap.Duration == 0 {
		return 2 * c.every()
	}
	return c.MaxGap.Duration
}

// openAttestation opens the configured platform, before the log's first
// entry of this run.
func (g *running) openAttestation() error {
	c := g.cfg.Attestation
	if c == nil {
		return nil
	}
	switch {
	case c.Provider != "tpm":
		return &exitError{code: 2, err: fmt.Errorf("invalid config: attestation.provider %q: want tpm (SEV-SNP, TDX and Nitro evidence is verified, not yet produced: docs/attestation.md)", c.Provider)}
	case c.Device == "":
		return &exitError{code: 2, err: fmt.Errorf("invalid config: attestation.device: want the TPM device (/dev/tpmrm0) or a swtpm socket")}
	case c.Interval.Duration < 0:
		return &exitError{code: 2, err: fmt.Errorf("invalid config: attestation.interval: negative")}
	case c.maxGap() <= c.every():
		// Periodic entries come every interval: a max_gap no longer than
		// that refuses actions before each one, every time.
		return &exitError{code: 2, err: fmt.Errorf("invalid config: attestation.max_gap %s: want more than attestation.interval %s", c.maxGap(), c.every())}
	}
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: c.Device, IdentityPCR: c.IdentityPCR, BundlePCR: c.BundlePCR})
	if err != nil {
		return fmt.Errorf("attestation: %w", err)
	}
	g.tpm = tp
	return nil
}

// newRecorder makes the per-boot key (measured and sealed into the TPM)
// once the log's key, whose name is the origin, is open.
func (g *running) newRecorder() error {
	if g.tpm == nil {
		return nil
	}
	engine, err := attest.EngineDigest()
	if err != nil {
		return err
	}
	prev, err := attest.LastStatement(g.log)
	if err != nil {
		return fmt.Errorf("attestation: read the log's last attestation: %w", err)
	}
	opts := attest.RecorderOptions{Origin: g.signer.Name(), Engine: engine, Prev: prev,
		Checkpoint: func() []byte { return g.cp.Latest() }, MaxGap: g.cfg.Attestation.maxGap()}
	if g.trust != nil {
		opts.Signers, opts.Threshold = g.trust.Keys(), g.trust.Threshold()
	}
	if g.rec, err = attest.NewRecorder(g.tpm, opts); err != nil {
		return fmt.Errorf("attestation: %w", err)
	}
	fmt.Fprintf(g.e.stderr, "rulelock: attested: engine %s, per-boot key %s\n", engine, g.rec.Key())
	return nil
}

// cosigners is the per-boot key, which signs every checkpoint after the
// log's key, when attestation is on.
func (g *running) cosigners() []note.Signer {
	if g.rec == nil {
		return nil
	}
	return []note.Signer{g.rec.Signer()}
}

// attestAtStart logs the first attestation entry of this run, before any
// decision.
func (g *running) attestAtStart(ctx context.Context) error {
	if g.rec == nil {
		return nil
	}
	if err := g.rec.Record(ctx, g.log); err != nil {
		return fmt.Errorf("attestation at start: %w", err)
	}
	return nil
}

type activationAttestor struct{ g *running }

func (a activationAttestor) Activated(ctx context.Context, digest string) error {
	return a.g.rec.Activated(ctx, a.g.log, digest)
}

func (a activationAttestor) Attested(now time.Time) error { return a.g.rec.Attested(now) }

func (g *running) attestor() gateway.Attestor {
	if g.rec == nil {
		return nil
	}
	return activationAttestor{g}
}

// Retries of a failed attestation: the first after attestRetry, then
// twice as long each time, up to attestRetryMax (and never longer than
// the interval).
const (
	attestRetry    = time.Second
	attestRetryMax = time.Minute
)

// runAttestation logs an attestation entry every interval until ctx ends.
// While an attestation fails (this loop's or an activation's) the
// recorder's gate refuses every decision (gateway.ErrUnattested), and the
// loop retries with backoff until one succeeds: then actions are accepted
// again.
func (g *running) runAttestation(ctx context.Context) {
	if g.rec == nil {
		return
	}
	every := g.cfg.Attestation.every()
	go g.watchAttestation(ctx)
	wait, failing := every, false
	t := time.NewTimer(wait)
	defer t.Stop()
	failed := func(err error) {
		if !failing {
			wait = attestRetry
		} else {
			wait = min(2*wait, attestRetryMax, every)
		}
		failing = true
		fmt.Fprintf(g.e.stderr, "rulelock: ATTESTATION FAILED: %v; every new action is refused (attestation_failed) until an attestation succeeds; retrying in %s\n", err, wait)
	}
	for {
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-g.rec.Failed():
			// An activation's attestation failed: retry soon rather than
			// at the next interval.
			if _, err := g.rec.Last(); err != nil && !failing {
				failed(err)
			}
			continue
		case <-t.C:
		}
		err := g.gw.BetweenActivations(func() error { return g.rec.Record(ctx, g.log) })
		select {
		case <-g.rec.Failed(): // this very failure
		default:
		}
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			failed(err)
		case failing:
			fmt.Fprintf(g.e.stderr, "rulelock: attestation succeeded again: actions are accepted\n")
			wait, failing = every, false
		}
	}
}

// watchAttestation says so on stderr, once per stretch, when the last
// attestation entry becomes older than max_gap without an attestation
// failing (a platform that hangs: the retry loop is then waiting on it).
func (g *running) watchAttestation(ctx context.Context) {
	maxGap := g.cfg.Attestation.maxGap()
	t := time.NewTicker(max(maxGap/20, 100*time.Millisecond))
	defer t.Stop()
	overdue := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			last, err := g.rec.Last()
			switch late := err == nil && now.Sub(last) > maxGap; {
			case late && !overdue:
				fmt.Fprintf(g.e.stderr, "rulelock: ATTESTATION OVERDUE: the last attestation entry is %s old (attestation.max_gap %s) and the platform has not answered; every new action is refused (attestation_failed) until an attestation succeeds\n",
					now.Sub(last).Round(time.Second), maxGap)
				overdue = true
			case !late:
				overdue = false
			}
		}
	}
}
