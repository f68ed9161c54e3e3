package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
)

// cli runs `rulelock args...` in-process in dir and fails the test on a
// non-zero exit; it returns stdout.
func cli(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, code, stderr := cliCode(t, dir, args...)
	if code != 0 {
		t.Fatalf("rulelock %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return out
}

func cliCode(t *testing.T, dir string, args ...string) (string, int, string) {
	t.Helper()
	abs := func(p string) string {
		if filepath.IsAbs(p) || strings.HasPrefix(p, "-") {
			return p
		}
		return filepath.Join(dir, p)
	}
	for i, a := range args {
		if i > 1 && (strings.HasSuffix(a, ".key") || strings.HasSuffix(a, ".vkey") || strings.HasPrefix(a, "b") && !strings.Contains(a, "/") || a == "trust") {
			args[i] = abs(a)
		}
	}
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	code := run(context.Background(), e, args)
	return stdout.String(), code, stderr.String()
}

// signedBundles builds version 1, 2 and an unsigned 3 of the payments
// policy, signed by two of three keys, and writes the 2-of-3 trust file.
func signedBundles(t *testing.T, dir string) {
	t.Helper()
	var vkeys []string
	for _, name := range []string{"alice", "bob", "carol"} {
		vk := cli(t, dir, "keygen", "--name", name, "--out", filepath.Join(dir, name+".key"))
		os.WriteFile(filepath.Join(dir, name+".vkey"), []byte(vk), 0o644)
		vkeys = append(vkeys, filepath.Join(dir, name+".vkey"))
	}
	trust := cli(t, dir, append([]string{"bundle", "trust", "--threshold", "2"}, vkeys...)...)
	os.WriteFile(filepath.Join(dir, "trust"), []byte(trust), 0o644)
	for _, v := range []string{"1", "2", "3"} {
		out := filepath.Join(dir, "b"+v)
		cli(t, dir, "bundle", "build", "../../examples/payments", "-o", out, "--version", v)
		if v != "3" {
			cli(t, dir, "bundle", "sign", out, "--key", filepath.Join(dir, "alice.key"))
			cli(t, dir, "bundle", "sign", out, "--key", filepath.Join(dir, "carol.key"))
		}
	}
}

func serveBundle(t *testing.T, data, bundleDir, trust string) (*running, error) {
	t.Helper()
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg := &serveConfig{Bundle: bundleDir, Trust: trust, DataDir: data, Listen: "127.0.0.1:0", Origin: "test.rulelock/log",
		Agents: []agentConfig{{ID: "a", TokenSHA256: strings.Repeat("0", 64)}}}
	cfg.CheckpointInterval.Duration = time.Second
	return startGateway(context.Background(), e, cfg, false)
}

// activations lists the log's policy activation entries: digest, signers.
func activations(t *testing.T, dir string) []string {
	t.Helper()
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []string
	for i := int64(0); i < l.Size(); i++ {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		switch {
		case e.Kind == audit.KindPolicyActivation:
			out = append(out, "activated "+e.BundleDigest+" by "+strings.Join(e.Signers, ","))
		case e.Kind == audit.KindNote && strings.Contains(e.Message, "rejected"):
			out = append(out, "rejected: "+e.Message)
		}
	}
	return out
}

func TestServeBundles(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	trust := filepath.Join(dir, "trust")
	data := filepath.Join(dir, "data")

	// An unsigned bundle never starts a gateway.
	if _, err := serveBundle(t, data, filepath.Join(dir, "b3"), trust); err == nil || !strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("unsigned bundle: got %v, want a refusal naming unsigned", err)
	}

	// Version 2 starts it.
	g, err := serveBundle(t, data, filepath.Join(dir, "b2"), trust)
	if err != nil {
		t.Fatal(err)
	}
	a := g.gw.Active()
	if a.Dev || a.Version != 2 || strings.Join(a.Signers, ",") != "alice,carol" {
		t.Fatalf("active: %+v", a)
	}
	v2 := a.Digest
	// A reload with an older, validly signed version keeps version 2.
	g.cfg.Bundle = filepath.Join(dir, "b1")
	g.reload(context.Background())
	if g.gw.Active().Digest != v2 {
		t.Fatal("an older bundle replaced the active one")
	}
	// An unsigned newer version is rejected too.
	g.cfg.Bundle = filepath.Join(dir, "b3")
	g.reload(context.Background())
	if g.gw.Active().Digest != v2 {
		t.Fatal("an unsigned bundle was activated")
	}
	g.close()

	// After a restart, the older version is still refused: the log remembers.
	if _, err := serveBundle(t, data, filepath.Join(dir, "b1"), trust); err == nil || !strings.Contains(err.Error(), "not higher than the active version 2") {
		t.Fatalf("rollback across a restart: got %v", err)
	}
	// The same bundle restarts fine, and its archive is kept.
	g, err = serveBundle(t, data, filepath.Join(dir, "b2"), trust)
	if err != nil {
		t.Fatalf("restart with the active bundle: %v", err)
	}
	g.close()
	archived := filepath.Join(data, "bundles", strings.TrimPrefix(v2, "sha256:"))
	if _, err := os.Stat(filepath.Join(archived, "MANIFEST")); err != nil {
		t.Fatalf("archive: %v", err)
	}
	// A tampered archive stops everything: nothing activates.
	rules := filepath.Join(archived, "payments.rules")
	os.Chmod(rules, 0o644)
	if err := os.WriteFile(rules, []byte("rule \"x\" {\n  allow: \"everything\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b4 := filepath.Join(dir, "b4")
	cli(t, dir, "bundle", "build", "../../examples/payments", "-o", b4, "--version", "4")
	cli(t, dir, "bundle", "sign", b4, "--key", filepath.Join(dir, "alice.key"))
	cli(t, dir, "bundle", "sign", b4, "--key", filepath.Join(dir, "bob.key"))
	if _, err := serveBundle(t, data, b4, trust); err == nil || !strings.Contains(err.Error(), "missing or altered") {
		t.Fatalf("tampered archive: got %v", err)
	}

	got := strings.Join(activations(t, data), "\n")
	for _, want := range []string{"activated " + v2 + " by alice,carol", "rejected: bundle rejected: ", "unsigned", "not higher than the active version 2", "missing or altered"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}
