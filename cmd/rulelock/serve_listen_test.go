package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeBusyPort starts serve on an address another listener holds: it
// must fail naming the address and how to choose another, and leave the
// data directory uncreated (no log, no key, no tokens, no approvers).
func TestServeBusyPort(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	data := filepath.Join(t.TempDir(), "data")
	_, code, stderr := cliCode(t, t.TempDir(), "serve", "--policy", "../../examples/payments", "--data", data, "--listen", addr)
	if code == 0 {
		t.Fatalf("serve on a busy port: exit 0")
	}
	for _, want := range []string{addr, "already in use", "--listen ADDR", "listen in the config"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		ents, _ := os.ReadDir(data)
		t.Errorf("data directory after a failed start: %v, entries %v; want none", err, ents)
	}
}

// TestServeBusyPortConfig is TestServeBusyPort with the address and the
// data directory from a config file, and a data directory that exists:
// nothing new appears in it.
func TestServeBusyPortConfig(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o700)
	cfg := filepath.Join(dir, "rulelock.yaml")
	policyDir, _ := filepath.Abs("../../examples/payments")
	os.WriteFile(cfg, []byte("policy: "+policyDir+"\ndata_dir: "+data+"\nlisten: "+held.Addr().String()+"\n"), 0o644)
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	if err := runServe(context.Background(), e, []string{"--config", cfg}); err == nil || !strings.Contains(err.Error(), held.Addr().String()) {
		t.Fatalf("serve on a busy port: %v, want an error naming %s", err, held.Addr())
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Errorf("data directory after a failed start holds %v; want nothing", ents)
	}
}

// TestServeBundleNoDevApprovers serves a signed bundle without configured
// approvers: no development approvers are invented (alice and bob are the
// bundle's signers here), and an action the policy parks for approval is
// denied no_approvers.
func TestServeBundleNoDevApprovers(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	// Beside a bundle no agent is invented either: configure one, whose
	// token testServe reads from the usual file.
	const agentToken = "bundle-agent-token"
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "agent.token"), []byte(agentToken), 0o600); err != nil {
		t.Fatal(err)
	}
	url, token, stop := testServe(t, data, func(c *serveConfig) {
		c.Policy, c.Bundle, c.Trust = "", filepath.Join(dir, "b1"), filepath.Join(dir, "trust")
		c.Agents = []agentConfig{{ID: "agent-42", Roles: []string{"payments"}, TokenSHA256: fmt.Sprintf("%x", sha256.Sum256([]byte(agentToken)))}}
	})
	defer stop()
	if _, err := os.Stat(filepath.Join(data, "approvers")); !os.IsNotExist(err) {
		t.Errorf("bundle mode created %s (%v); want no development approvers", filepath.Join(data, "approvers"), err)
	}
	got := post(t, url, token, `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`)
	if d, _ := got["decision"].(map[string]any); decisionOf(got) != "deny" || d["reason"] != "no_approvers" {
		t.Errorf("a trade needing approval with no approvers: %v, want deny no_approvers", got)
	}
}
