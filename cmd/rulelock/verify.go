package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/replay"
)

const verifyUsage = `usage: rulelock verify DIR --key VKEY [--since FILE] [--witnesses POLICY] [--attestation POLICY] [--json]
       rulelock verify --receipt FILE --key VKEY [--witnesses POLICY] [--json]
       rulelock verify --equivocation NOTE1 NOTE2 --key VKEY [--proof FILE | --tiles DIR] [--json]

Verifies an audit log directory offline: every frame, the hash chain, every
entry's encoding, every checkpoint's signature, the Merkle tree against every
checkpoint and consistency between checkpoints. DIR may also be a C2SP
tlog-tiles directory (checkpoint, tile/...): then the checkpoint, the hash
tiles and every entry bundle are verified. With --since, also that the
log extends a checkpoint saved earlier (no rollback, no fork). With
--receipt, verifies one receipt (from rulelock log proof) on its own.
With --witnesses, the latest checkpoint (or the receipt's) must carry the
cosignatures the witness policy's quorum requires (C2SP tlog-policy: log,
witness NAME VKEY [URL], group NAME k|any|all MEMBERS..., quorum NAME);
--key may then be left out if the policy names one log.
With --attestation, every attestation entry is verified offline against the
attestation policy (docs/attestation.md), every checkpoint covering
decisions must carry the attested per-boot key's signature, and the log's
attested segments are printed.
With --equivocation, checks two signed checkpoints against each other
without the log: one size with two roots proves an equivocation (both
notes are printed as the proof); for two sizes give the log's tiles
(--tiles, authenticated by the larger checkpoint) or a consistency proof
(--proof, one base64 hash a line; a bad one proves nothing).

VKEY is the log's verifier key (NAME+HASH+KEY, as keygen prints it) or a file
holding it. Exit status: 0 when everything verified, 1 on the first failure
(printed with its class and position), 2 on bad usage.

`

// runVerify implements `rulelock verify`.
func runVerify(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), verifyUsage)
		fs.PrintDefaults()
	}
	keyArg := fs.String("key", "", "verifier `key` (NAME+HASH+KEY) or a file holding it (required)")
	since := fs.String("since", "", "signed checkpoint `file` saved earlier")
	receipt := fs.String("receipt", "", "verify this receipt `file` alone")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	replay := fs.Bool("replay", false, "also re-run every decision under the archived policy it names and check completeness (a running gateway's log too: it is read without its lock)")
	bundles := fs.String("bundles", "", "with --replay: the archive of activated policies (default: DIR/../bundles)")
	witnesses := fs.String("witnesses", "", "witness `policy` file the checkpoint's cosignatures must meet")
	equivocation := fs.Bool("equivocation", false, "check the two signed checkpoint files given against each other, without the log")
	proofFile := fs.String("proof", "", "with --equivocation: a consistency proof `file` between the two checkpoints")
	tilesDir := fs.String("tiles", "", "with --equivocation: the log's tiles `directory`")
	config := fs.String("config", "", "with --replay: the gateway config, for the approvers' keys and the limits (default: DIR/../approvers/*.pub and the default limits)")
	attestPolicy := fs.String("attestation", "", "attestation `policy` file the log's attestation entries must meet (docs/attestation.md)")
	allowDev := fs.Bool("allow-development", false, "with --replay: accept development-mode activations (policies no quorum signed) in a development log instead of reporting them")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *equivocation && (len(pos) != 2 || *receipt != "" || *since != "" || *witnesses != "" || *replay):
		return usageError("--equivocation takes two checkpoint files and no other mode")
	case !*equivocation && (*proofFile != "" || *tilesDir != ""):
		return usageError("--proof and --tiles go with --equivocation")
	case *equivocation:
	case *receipt == "" && len(pos) != 1:
		return usageError("want one log directory (or --receipt FILE)")
	case *receipt != "" && (len(pos) != 0 || *since != ""):
		return usageError("--receipt takes no directory and no --since")
	}
	var opts audit.VerifyOptions
	if *witnesses != "" {
		if opts.Witnesses, err = loadWitnessPolicy(*witnesses); err != nil {
			return usageError("%v", err)
		}
	}
	key, err := policyLogKey(*keyArg, opts.Witnesses)
	if err != nil {
		return usageError("%v", err)
	}
	if *equivocation {
		return runVerifyEquivocation(e, key, pos[0], pos[1], *proofFile, *tilesDir, *asJSON)
	}
	if *receipt != "" {
		return verifyReceipt(e, key, *receipt, opts.Witnesses, *asJSON)
	}
	if *since != "" {
		if opts.Since, err = readFileMax(*since, audit.MaxCheckpointSize); err != nil {
			return err
		}
	}
	verify := audit.VerifyDir
	if audit.IsTilesDir(pos[0]) {
		verify = audit.VerifyTiles
	}
	var pol *attest.Policy
	if *attestPolicy != "" {
		b, err := readFileMax(*attestPolicy, 1<<20)
		if err != nil {
			return usageError("%v", err)
		}
		if pol, err = attest.ParsePolicy(*attestPolicy, b); err != nil {
			return usageError("%v", err)
		}
		if audit.IsTilesDir(pos[0]) {
			return usageError("--attestation reads a log directory, not tiles")
		}
	}
	rep, err := verify(pos[0], key, opts)
	if err != nil {
		return verifyFailure(e, err, *asJSON)
	}
	var attested *attest.LogReport
	if pol != nil {
		if attested, err = verifyAttestation(e, pos[0], pol, *asJSON); err != nil {
			return err
		}
	}
	if *asJSON {
		out := map[string]any{
			"ok": true, "entries": rep.Entries, "checkpoints": rep.Checkpoints,
			"size": rep.Size, "root": rep.Root.String(), "uncovered": rep.Uncovered,
		}
		if opts.Witnesses != nil {
			out["witnessed_by"], _ = opts.Witnesses.Witnessed(rep.Latest)
		}
		if attested != nil {
			out["attestation"] = attested
		}
		if !*replay {
			return writeJSON(e.stdout, out)
		}
		// One JSON document: the log's verification with the replay's
		// summary under "replay", and ok false when it found anything.
		sum, err := replaySummary(pos[0], *bundles, *config, *allowDev)
		if err != nil {
			return err
		}
		out["replay"], out["ok"] = sum, len(sum.Findings) == 0
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
		if len(sum.Findings) > 0 {
			return &exitError{code: 1}
		}
		return nil
	}
	fmt.Fprintf(e.stdout, "ok: %d entries, %d checkpoints; latest checkpoint covers %d entries, root %s\n",
		rep.Entries, rep.Checkpoints, rep.Size, rep.Root)
	if opts.Witnesses != nil {
		names, _ := opts.Witnesses.Witnessed(rep.Latest)
		if len(names) == 0 {
			names = []string{"no witness"}
		}
		fmt.Fprintf(e.stdout, "witnessed: the latest checkpoint is cosigned by %s; the quorum is met\n", strings.Join(names, ", "))
	}
	if rep.Uncovered > 0 {
		fmt.Fprintf(e.stdout, "note: %d entries after the latest checkpoint are not yet signed\n", rep.Uncovered)
	}
	if attested != nil {
		printAttested(e, attested)
	}
	if *replay {
		return runReplayVerify(e, pos[0], *bundles, *config, *allowDev, *asJSON)
	}
	return nil
}

// replaySummary runs verify --replay's re-evaluation of the log in logDir.
func replaySummary(logDir, bundles, config string, allowDev bool) (*replay.Summary, error) {
	dataDir := filepath.Dir(filepath.Clean(logDir))
	if bundles == "" {
		bundles = filepath.Join(dataDir, "bundles")
	}
	opts, err := replayOptions(config, dataDir)
	if err != nil {
		return nil, err
	}
	opts.AllowDevelopment = allowDev
	return verifyReplay(logDir, bundles, opts)
}

func runReplayVerify(e *env, logDir, bundles, config string, allowDev, asJSON bool) error {
	sum, err := replaySummary(logDir, bundles, config, allowDev)
	if err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(e.stdout, sum); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "replay: %d entries, %d decisions replayed, %d findings, %d allowed without an outcome yet, %.2fs\n",
			sum.Entries, sum.Decisions, len(sum.Findings), sum.Open, sum.Seconds)
		if sum.Passkeys > 0 {
			fmt.Fprintf(e.stdout, "replay: %d passkeys enrolled, %d passkey (WebAuthn) approvals verified\n", sum.Passkeys, sum.PasskeyApprovals)
		}
		for _, f := range sum.Findings {
			fmt.Fprintf(e.stdout, "FAIL %s at entry %d: %s\n", f.Class, f.Index, f.Detail)
		}
	}
	if len(sum.Findings) > 0 {
		return &exitError{code: 1}
	}
	return nil
}

func verifyReceipt(e *env, key note.Verifier, path string, witnesses *audit.WitnessPolicy, asJSON bool) error {
	b, err := readFileMax(path, audit.MaxReceiptSize)
	if err != nil {
		return err
	}
	ent, r, err := audit.VerifyReceipt(b, key)
	if err == nil && witnesses != nil {
		err = witnesses.Check(r.Checkpoint, "receipt checkpoint")
	}
	if err != nil {
		return verifyFailure(e, err, asJSON)
	}
	if asJSON {
		return writeJSON(e.stdout, map[string]any{"ok": true, "index": r.Index, "kind": ent.Kind, "entry": json.RawMessage(r.Entry)})
	}
	fmt.Fprintf(e.stdout, "ok: entry %d (%s) is in the log\n", r.Index, ent.Kind)
	return nil
}

// verifyFailure prints a verification failure and returns exit status 1.
func verifyFailure(e *env, err error, asJSON bool) error {
	var ve *audit.VerifyError
	if !errors.As(err, &ve) {
		return err
	}
	if asJSON {
		out := map[string]any{"ok": false, "class": ve.Class, "index": ve.Index, "detail": fmt.Sprint(ve.Err)}
		if ve.File != "" {
			out["file"], out["offset"] = ve.File, ve.Offset
		}
		if len(ve.Notes) > 0 {
			notes := make([]string, len(ve.Notes))
			for i, n := range ve.Notes {
				notes[i] = string(n)
			}
			out["proof"] = notes // the signed notes that prove an equivocation
		}
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
		return &exitError{code: 1}
	}
	if len(ve.Notes) > 0 {
		fmt.Fprintf(e.stdout, "proof: the signed checkpoints that do not fit:\n\n%s\n%s", ve.Notes[0], ve.Notes[1])
	}
	return &exitError{code: 1, err: fmt.Errorf("FAIL %w", ve)}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// loadVerifier takes a verifier key or the name of a file holding one.
func loadVerifier(arg string) (note.Verifier, error) {
	if v, err := audit.ParseVerifierKey(arg); err == nil {
		return v, nil
	}
	b, err := readFileMax(arg, 4096)
	if err != nil {
		return nil, fmt.Errorf("--key: neither a verifier key nor a readable file: %w", err)
	}
	v, err := audit.ParseVerifierKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", arg, err)
	}
	return v, nil
}

// readFileMax reads the file at path, refusing one over max bytes (or one
// that never ends, such as /dev/zero) without reading it to its end.
func readFileMax(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: over %d bytes", path, max)
	}
	return b, nil
}

// parseInterspersed parses flags that may come before or after the
// positional arguments (rulelock verify DIR --key K) and returns those.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &exitError{code: 0}
			}
			return nil, &exitError{code: 2}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// verifyAttestation checks the log in dir, already verified, against an
// attestation policy.
func verifyAttestation(e *env, dir string, pol *attest.Policy, asJSON bool) (*attest.LogReport, error) {
	cps, err := audit.DirCheckpoints(dir)
	if err != nil {
		return nil, err
	}
	snap, err := audit.OpenSnapshot(dir)
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	rep, err := attest.VerifyLog(snap, cps, pol)
	if err != nil {
		if asJSON {
			if werr := writeJSON(e.stdout, map[string]any{"ok": false, "class": "attestation", "detail": err.Error()}); werr != nil {
				return nil, werr
			}
			return nil, &exitError{code: 1}
		}
		return nil, &exitError{code: 1, err: fmt.Errorf("FAIL attestation: %w", err)}
	}
	return rep, nil
}

// printAttested prints an attestation report: the log's segments.
func printAttested(e *env, rep *attest.LogReport) {
	fmt.Fprintf(e.stdout, "attested: %d attestation entries, %d decisions, %d checkpoints covering decisions signed by the attested key\n",
		rep.Attestations, rep.Decisions, rep.Checkpoints)
	if rep.Refusals > 0 {
		fmt.Fprintf(e.stdout, "refused before any evaluation (need no attestation): %d requests\n", rep.Refusals)
	}
	for _, s := range rep.Segments {
		bundle := s.Bundle
		if bundle == "" {
			bundle = "none"
		}
		fmt.Fprintf(e.stdout, "segment entries %d-%d: %s engine %s (release %s), bundle %s, key %s, %s; %d attestations, %d decisions\n",
			s.First, s.Last, s.Provider, s.Engine, s.Release, bundle, s.Key, s.Platform, s.Attestations, s.Decisions)
	}
}
