package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigAuditors: an auditor is named with a token hash and becomes a
// read-only auditor token; one without a token, or with an id another
// caller has, is refused.
func TestConfigAuditors(t *testing.T) {
	const hash = "0000000000000000000000000000000000000000000000000000000000000001"
	agent := "agents:\n  - id: agent-a\n    token_sha256: " + strings.Repeat("ab", 32) + "\n"
	for _, c := range []struct{ name, yaml, err string }{
		{"auditor", agent + "auditors:\n  - id: audrey\n    token_sha256: " + hash + "\n", ""},
		{"no token", agent + "auditors:\n  - id: audrey\n", `auditor "audrey": token_sha256 must be 64 hex digits`},
		{"no id", agent + "auditors:\n  - token_sha256: " + hash + "\n", "auditors[0]: id is required"},
		{"an agent's id", agent + "auditors:\n  - id: agent-a\n    token_sha256: " + hash + "\n", `auditor "agent-a" has the id of`},
	} {
		path := filepath.Join(t.TempDir(), "rulelock.yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := readConfig(path)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: got %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var found bool
		for _, tok := range cfg.tokens() {
			if tok.Agent.ID == "audrey" {
				found = tok.Auditor && !tok.Approver && tok.SHA256[31] == 1
			}
		}
		if !found {
			t.Errorf("%s: tokens %+v, want audrey's auditor token", c.name, cfg.tokens())
		}
	}
}
