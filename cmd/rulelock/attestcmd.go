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
type attestationConfig struct {
	Provider    string   `yaml:"provider"`
	Device      string   `yaml:"device"`
	IdentityPCR uint     `yaml:"identity_pcr"`
	BundlePCR   uint     `yaml:"bundle_pcr"`
	Interval    duration `yaml:"interval"`
}

const defaultAttestInterval = time.Hour

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
	prev, err := attest.LastStatement(func(yield func([]byte) bool) {
		const batch = 1024
		for lo, n := int64(0), g.log.Size(); lo < n; lo += batch {
			bs, rerr := g.log.ReadEntries(lo, min(lo+batch, n))
			if rerr != nil {
				err = rerr
				return
			}
			for _, b := range bs {
				if !yield(b) {
					return
				}
			}
		}
	})
	if err != nil {
		return fmt.Errorf("attestation: read the log's last attestation: %w", err)
	}
	opts := attest.RecorderOptions{Origin: g.signer.Name(), Engine: engine, Prev: prev,
		Checkpoint: func() []byte { return g.cp.Latest() }}
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

func (g *running) attestor() gateway.Attestor {
	if g.rec == nil {
		return nil
	}
	return activationAttestor{g}
}

// runAttestation logs an attestation entry every interval until ctx ends.
// A failure is reported; the decisions that follow then lack a fresh
// attestation, which verify --attestation refuses past the policy's
// max-gap.
func (g *running) runAttestation(ctx context.Context) {
	if g.rec == nil {
		return
	}
	every := g.cfg.Attestation.Interval.Duration
	if every == 0 {
		every = defaultAttestInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := g.rec.Record(ctx, g.log); err != nil {
				fmt.Fprintf(g.e.stderr, "rulelock: ATTESTATION FAILED: %v\n", err)
			}
		}
	}
}
