package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/witness"
)

// logWitnesses are the witnesses that cosign the log's checkpoints
// (C2SP tlog-witness), in the config's log section:
//
//	log:
//	  witnesses:
//	    - name: w1
//	      url: https://witness.example/w1   # the submission prefix
//	      key: witness.example/w1+1b2c3d4e+BFk...
//	  witness_quorum: 1   # cosignatures a checkpoint needs (default all)
type logWitnesses struct {
	Witnesses     []witnessConfig `yaml:"witnesses"`
	WitnessQuorum int             `yaml:"witness_quorum"`
}

type witnessConfig struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	Key  string `yaml:"key"` // Ed25519 cosignature/v1 vkey (type 0x04)
}

func (c *logWitnesses) validate() error {
	names, keys := map[string]bool{}, map[string]string{}
	for i, w := range c.Witnesses {
		where := fmt.Sprintf("log.witnesses[%d]", i)
		if w.Name == "" {
			return fmt.Errorf("%s: name is required", where)
		}
		if names[w.Name] {
			return fmt.Errorf("%s: witness %s listed twice", where, w.Name)
		}
		names[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s (%s): url %q is not an http(s) URL", where, w.Name, w.URL)
		}
		key, err := audit.ParseCosignerKey(w.Key)
		if err != nil {
			return fmt.Errorf("%s (%s): key: %v", where, w.Name, err)
		}
		parts := strings.SplitN(strings.TrimSpace(w.Key), "+", 3) // name, hash, public key
		for _, k := range []string{"name " + key.Name(), "key " + parts[2]} {
			if prev, ok := keys[k]; ok {
				return fmt.Errorf("%s (%s): the same witness key as %s: one witness would count twice", where, w.Name, prev)
			}
			keys[k] = w.Name
		}
	}
	if c.WitnessQuorum < 0 || c.WitnessQuorum > len(c.Witnesses) {
		return fmt.Errorf("log.witness_quorum %d: want 0 (all) to %d, the number of witnesses", c.WitnessQuorum, len(c.Witnesses))
	}
	return nil
}

// checkpointWitnesses returns the audit.Checkpointer's witnesses.
func (c *logWitnesses) checkpointWitnesses() ([]audit.CheckpointWitness, error) {
	var ws []audit.CheckpointWitness
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, w := range c.Witnesses {
		key, err := audit.ParseCosignerKey(w.Key)
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", w.Name, err)
		}
		ws = append(ws, audit.CheckpointWitness{Key: key, Witness: &witness.Client{URL: w.URL, HTTP: hc}})
	}
	return ws, nil
}

// loadWitnessPolicy reads a witness policy file (C2SP tlog-policy).
func loadWitnessPolicy(path string) (*audit.WitnessPolicy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--witnesses: %w", err)
	}
	return audit.ParseWitnessPolicy(path, b)
}

// policyLogKey is the log key to verify with: --key, which the policy must
// list if it lists logs, or the policy's only log.
func policyLogKey(keyArg string, pol *audit.WitnessPolicy) (note.Verifier, error) {
	if keyArg == "" {
		if pol == nil || len(pol.Logs) != 1 {
			return nil, errors.New("--key is required (or a witness policy with one log line)")
		}
		return pol.Logs[0], nil
	}
	key, err := loadVerifier(keyArg)
	if err != nil {
		return nil, err
	}
	if pol != nil && !pol.HasLog(key) {
		return nil, fmt.Errorf("--key %s is not among the witness policy's logs", key.Name())
	}
	return key, nil
}

// runVerifyEquivocation checks two signed checkpoints against each other,
// without the log.
func runVerifyEquivocation(e *env, key note.Verifier, a, b, proofPath, tiles string, asJSON bool) error {
	na, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	nb, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	opts := audit.CompareOptions{TilesDir: tiles}
	if proofPath != "" {
		if opts.Proof, err = readProof(proofPath); err != nil {
			return usageError("--proof: %v", err)
		}
	}
	err = audit.CompareCheckpoints(na, nb, key, opts)
	if errors.Is(err, audit.ErrNeedConsistencyProof) {
		if asJSON {
			writeJSON(e.stdout, map[string]any{"ok": false, "proven": false, "detail": err.Error()})
			return &exitError{code: 1}
		}
		return &exitError{code: 1, err: fmt.Errorf("cannot tell: %v (--proof FILE or --tiles DIR)", err)}
	}
	var ve *audit.VerifyError
	if errors.As(err, &ve) && ve.Class == audit.Equivocation && !asJSON {
		fmt.Fprintf(e.stdout, "FAIL %v\nproof: the two checkpoints, each signed by %s:\n\n%s\n%s", ve, key.Name(), ve.Notes[0], ve.Notes[1])
		return &exitError{code: 1}
	}
	if err != nil {
		return verifyFailure(e, err, asJSON)
	}
	if asJSON {
		return writeJSON(e.stdout, map[string]any{"ok": true})
	}
	fmt.Fprintln(e.stdout, "ok: the two checkpoints are consistent")
	return nil
}

// readProof reads a consistency proof: one base64 hash a line.
func readProof(path string) (tlog.TreeProof, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p tlog.TreeProof
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize || i >= 64 {
			return nil, fmt.Errorf("%s:%d: want a base64 hash (at most 64 lines)", path, i+1)
		}
		p = append(p, tlog.Hash(h))
	}
	return p, nil
}

// witnessConflict raises the alarm when a witness has seen a larger or a
// different tree: checkpoints are no longer published and /readyz is
// false until an operator looks.
func (g *running) witnessConflict(err error) {
	fmt.Fprintf(g.e.stderr, "rulelock: ALERT: %v\nrulelock: ALERT: checkpoints are no longer published; /readyz is false until the log is investigated\n", err)
	g.metrics.WitnessConflict.Set(1)
}

// firstWitnessedCheckpoint, with witnesses configured, signs a checkpoint
// at start and has it cosigned: a log rolled back or forked since the
// witnesses last saw it refuses to start. A witness that is merely
// unreachable is reported, and the checkpointer tries again.
func (g *running) firstWitnessedCheckpoint() error {
	if len(g.cfg.Log.Witnesses) == 0 {
		return nil
	}
	_, err := g.cp.Checkpoint()
	switch {
	case errors.Is(err, audit.ErrWitnessConflict):
		return &exitError{code: 1, err: fmt.Errorf("refusing to start: %w", err)}
	case err != nil:
		fmt.Fprintf(g.e.stderr, "rulelock: warning: the first checkpoint is not witnessed yet: %v\n", err)
	}
	return nil
}
