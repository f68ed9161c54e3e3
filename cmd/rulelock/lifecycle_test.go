package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestVerifyReplayDevelopmentPolicy: a log whose policy was loaded from a
// directory (development mode, no quorum) is a finding of `verify
// --replay`, with the activation's index; --allow-development accepts it
// for development logs, and the decisions replay clean either way.
func TestVerifyReplayDevelopmentPolicy(t *testing.T) {
	data := t.TempDir()
	url, token, stop := testServe(t, data)
	post(t, url, token, `{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}}`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", filepath.Join(data, "log"), "--key", filepath.Join(data, "log.pub"), "--replay"}
	out, code, stderr := cliCode(t, data, args...)
	if code != 1 || !strings.Contains(out, "1 decisions replayed, 1 findings") || !strings.Contains(out, "FAIL development_policy at entry ") {
		t.Fatalf("verify --replay of a development log: exit %d, want 1 and a development_policy finding:\n%s%s", code, out, stderr)
	}
	out, code, _ = cliCode(t, data, append(args, "--json")...)
	var doc struct {
		OK     bool `json:"ok"`
		Replay struct {
			Findings []struct {
				Index int64  `json:"index"`
				Class string `json:"class"`
			} `json:"findings"`
		} `json:"replay"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 1 || doc.OK || len(doc.Replay.Findings) != 1 || doc.Replay.Findings[0].Class != "development_policy" {
		t.Fatalf("--json: exit %d, %+v (%v)\n%s", code, doc, err, out)
	}
	out, code, stderr = cliCode(t, data, append(args, "--allow-development")...)
	if code != 0 || !strings.Contains(out, "1 decisions replayed, 0 findings") {
		t.Fatalf("verify --replay --allow-development: exit %d, want 0 findings:\n%s%s", code, out, stderr)
	}
}

// TestVerifyReplayArchivedBundleAltered: the archive of a signed bundle
// changed after activation is a bundle_hash_mismatch for every decision
// under it, whether one byte changed or the files and the manifest were
// rewritten consistently into another policy: never a replay under a
// policy the log does not name.
func TestVerifyReplayArchivedBundleAltered(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	g, err := serveBundle(t, data, filepath.Join(dir, "b2"), filepath.Join(dir, "trust"))
	if err != nil {
		t.Fatal(err)
	}
	digest := g.gw.Active().Digest
	for _, amount := range []float64{500, 20000} {
		act, err := policy.NewAction(map[string]any{"type": "transfer", "amount": amount, "to": "acct-1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.gw.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: "a", Roles: []string{"payments"}}, Action: act}, false); err != nil {
			t.Fatal(err)
		}
	}
	g.close()

	verify := func() (string, int) {
		out, code, stderr := cliCode(t, dir, "verify", filepath.Join(data, "log"), "--key", filepath.Join(data, "log.pub"), "--replay")
		if code > 1 {
			t.Fatalf("verify: exit %d: %s", code, stderr)
		}
		return out, code
	}
	if out, code := verify(); code != 0 || !strings.Contains(out, "2 decisions replayed, 0 findings") {
		t.Fatalf("the honest log: exit %d\n%s", code, out)
	}
	archived := filepath.Join(data, "bundles", strings.TrimPrefix(digest, "sha256:"))
	rules := filepath.Join(archived, "payments.rules")
	orig, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(rules, 0o644) // archived files are read-only
	mismatches := func(what string) {
		t.Helper()
		out, code := verify()
		if code != 1 || strings.Count(out, "FAIL bundle_hash_mismatch") != 2 || strings.Contains(out, "replay_mismatch") {
			t.Errorf("%s: exit %d, want exit 1 and a bundle_hash_mismatch for each decision, no replay:\n%s", what, code, out)
		}
	}

	// One byte of the rules.
	altered := append([]byte(nil), orig...)
	altered[len(altered)-2] ^= 0x01
	writeOrFail(t, rules, altered)
	mismatches("a byte changed")

	// The rules rewritten to allow everything, and the manifest with them.
	allowAll := []byte("policy \"payments\" {\n  default: allow\n}\n")
	writeOrFail(t, rules, allowAll)
	manifest := filepath.Join(archived, bundle.ManifestFile)
	text, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(orig)
	newSum := sha256.Sum256(allowAll)
	rewritten := strings.Replace(string(text), fmt.Sprintf("sha256:%s %d payments.rules", hex.EncodeToString(sum[:]), len(orig)),
		fmt.Sprintf("sha256:%s %d payments.rules", hex.EncodeToString(newSum[:]), len(allowAll)), 1)
	if rewritten == string(text) {
		t.Fatalf("the manifest does not list payments.rules as expected:\n%s", text)
	}
	os.Chmod(manifest, 0o644)
	writeOrFail(t, manifest, []byte(rewritten))
	mismatches("rules and manifest rewritten consistently")
}

func writeOrFail(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestServeReloadRejectionUnrecorded: a bundle rejected on SIGHUP while the
// log cannot take the rejection is reported on stderr as not logged (on
// the old main the append's error was discarded: nothing said so).
func TestServeReloadRejectionUnrecorded(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	g, err := serveBundle(t, filepath.Join(dir, "data"), filepath.Join(dir, "b2"), filepath.Join(dir, "trust"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	active := g.gw.Active().Digest
	g.log.Close() // the log fails: every append is refused
	g.cfg.Bundle = filepath.Join(dir, "b3")
	g.reload(context.Background())
	stderr := fmt.Sprint(g.e.stderr)
	if !strings.Contains(stderr, "NOT in the log") || !strings.Contains(stderr, "unsigned") {
		t.Errorf("stderr after an unrecordable rejection:\n%s\nwant the reason (unsigned) and that it is NOT in the log", stderr)
	}
	if g.gw.Active().Digest != active {
		t.Errorf("the active policy changed")
	}
}

// TestReplayCandidateBundle: `rulelock replay` reads a candidate bundle
// through the lifecycle: a bundle whose files no longer match its manifest
// is refused, not replayed as another policy, and --trust judges it as the
// gateway would.
func TestReplayCandidateBundle(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	g, err := serveBundle(t, data, filepath.Join(dir, "b1"), filepath.Join(dir, "trust"))
	if err != nil {
		t.Fatal(err)
	}
	act, err := policy.NewAction(map[string]any{"type": "transfer", "amount": 500.0, "to": "acct-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.gw.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: "a", Roles: []string{"payments"}}, Action: act}, false); err != nil {
		t.Fatal(err)
	}
	g.close()
	logDir := filepath.Join(data, "log")
	if out := cli(t, dir, "replay", "--log", logDir, "--policy", filepath.Join(dir, "b2"), "--trust", filepath.Join(dir, "trust")); !strings.Contains(out, "1 unchanged, 0 would change") {
		t.Errorf("replay of a signed candidate:\n%s", out)
	}
	if _, code, stderr := cliCode(t, dir, "replay", "--log", logDir, "--policy", filepath.Join(dir, "b3"), "--trust", filepath.Join(dir, "trust")); code != 2 || !strings.Contains(stderr, "unsigned") {
		t.Errorf("replay of an unsigned candidate with --trust: exit %d\n%s", code, stderr)
	}
	rules := filepath.Join(dir, "b3", "payments.rules")
	writeOrFail(t, rules, []byte("policy \"payments\" {\n  default: allow\n}\n"))
	if _, code, stderr := cliCode(t, dir, "replay", "--log", logDir, "--policy", filepath.Join(dir, "b3")); code != 2 || !strings.Contains(stderr, "hash_mismatch") {
		t.Errorf("replay of a candidate whose rules no longer match its manifest: exit %d\n%s", code, stderr)
	}
}
