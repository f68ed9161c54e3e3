package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestREADMEQuickstart runs the README's first set-up command and checks
// that the second is `make test`: the quickstart must stay true.
func TestREADMEQuickstart(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := firstShellBlock(t, string(readme))
	if len(cmds) != 2 {
		t.Fatalf("the quickstart has %d commands, want exactly 2: %q", len(cmds), cmds)
	}
	if cmds[1] != "make test" {
		t.Errorf("second command is %q, want make test", cmds[1])
	}
	const prefix = "go run ./cmd/rulelock "
	if !strings.HasPrefix(cmds[0], prefix) {
		t.Fatalf("first command %q does not run rulelock", cmds[0])
	}
	t.Chdir(repo)
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	if code := run(context.Background(), e, strings.Fields(strings.TrimPrefix(cmds[0], prefix))); code != 0 {
		t.Fatalf("%s: exit %d\n%s", cmds[0], code, stderr.String())
	}
	var d struct {
		Decision string `json:"decision"`
		Rules    []struct {
			Name string `json:"name"`
		} `json:"rules"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &d); err != nil {
		t.Fatalf("output is not a JSON decision: %v\n%s", err, stdout.String())
	}
	// What the README says the command prints.
	if d.Decision != "require_approval" || !strings.Contains(stdout.String(), `"NoHighValueTransfers"`) {
		t.Fatalf("got %s, the README promises require_approval by NoHighValueTransfers:\n%s", d.Decision, stdout.String())
	}
}

// firstShellBlock returns the commands of the README's first ```sh block.
func firstShellBlock(t *testing.T, md string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(md, "```sh\n")
	if !ok {
		t.Fatal("README has no ```sh block")
	}
	block, _, _ := strings.Cut(rest, "```")
	var cmds []string
	for _, line := range strings.Split(block, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			cmds = append(cmds, line)
		}
	}
	return cmds
}
