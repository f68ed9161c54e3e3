package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/rulelock/rulelock/internal/testenv"
)

// TestREADMEQuickstart runs the README as written: the quickstart's first
// command (the gateway on embedded defaults), then every command of the
// walk-through against it, and checks what each step promises. The second
// quickstart command must be `make test`.
func TestREADMEQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the walk-through")
	}
	curl := testenv.LookPath(t, "curl", "apt-get install curl")
	_, file, _, _ := runtime.Caller(0)
	repo, _ := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := shellBlocks(string(readme))
	if len(blocks) < 2 {
		t.Fatalf("README has %d sh blocks, want the quickstart and the walk-through", len(blocks))
	}
	quick := blockCommands(blocks[0])
	if len(quick) != 2 || quick[1] != "make test" {
		t.Fatalf("quickstart commands %q, want exactly two, the second make test", quick)
	}
	const goRun = "go run ./cmd/rulelock "
	if !strings.HasPrefix(quick[0], goRun+"serve ") {
		t.Fatalf("first command %q does not run rulelock serve", quick[0])
	}

	// The binary that `go run ./cmd/rulelock` would build.
	work := t.TempDir()
	bin := filepath.Join(work, "rulelock")
	build := exec.Command("go", "build", "-o", bin, "./cmd/rulelock")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Symlink(filepath.Join(repo, "examples"), filepath.Join(work, "examples")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	args := append(strings.Fields(strings.TrimPrefix(quick[0], goRun)), "--listen", addr)
	var serveOut bytes.Buffer
	serve := exec.Command(bin, args...)
	serve.Dir, serve.Stdout, serve.Stderr = work, &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
		if t.Failed() {
			t.Logf("rulelock serve said:\n%s", serveOut.String())
		}
	}()
	waitReady(t, "http://"+addr)

	script := strings.NewReplacer("go run ./cmd/rulelock", bin, "127.0.0.1:8080", addr, "curl ", curl+" ").Replace(blocks[1])
	sh := exec.Command("bash", "-euo", "pipefail", "-c", script)
	sh.Dir = work
	sh.Env = append(os.Environ(), "RULELOCK_GATEWAY=http://"+addr)
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("walk-through: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		`"decision":"allow"`, `"outcome":{"status":"ok"`, // 1. allowed and executed
		`"name":"VerifyBeforeBankDetailChange","outcome":"deny"`, // 2. denied by the case study's rule 2
		"needs 2 from treasury",                                  // 3. parked for two approvers
		"approve recorded; state pending, 1 approvals",           //    the first approval
		"quorum reached; approved; executed: ok",                 //    the second executes it, once
		`"decision":"approved"`,                                  //    the agent sees it
		"ok: ",                                                   // 4. the log verifies
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the walk-through's output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("walk-through output:\n%s", got)
	}
	if strings.Count(got, `"decision":"deny"`) != 1 {
		t.Errorf("want exactly one denial in the walk-through:\n%s", got)
	}
	// The walk-through ends with every entry under a signed checkpoint.
	m := regexp.MustCompile(`ok: (\d+) entries, \d+ checkpoints; latest checkpoint covers (\d+) entries`).FindStringSubmatch(got)
	if m == nil || m[1] != m[2] || strings.Contains(got, "not yet signed") {
		t.Errorf("verify at the end of the walk-through: %q, want every entry covered by the latest checkpoint", m)
	}

	// The blocks after the walk-through run as written too.
	for i, block := range blocks[2:] {
		script := strings.ReplaceAll(block, "go run ./cmd/rulelock", bin)
		sh := exec.Command("bash", "-euo", "pipefail", "-c", script)
		sh.Dir = work
		if out, err := sh.CombinedOutput(); err != nil {
			t.Errorf("README sh block %d: %v\n%s\n%s", i+3, err, block, out)
		}
	}
}

// shellBlocks returns the README's ```sh blocks in order.
func shellBlocks(md string) []string {
	var out []string
	for {
		_, rest, ok := strings.Cut(md, "```sh\n")
		if !ok {
			return out
		}
		block, after, _ := strings.Cut(rest, "```")
		out = append(out, block)
		md = after
	}
}

// blockCommands returns a block's commands, without comments and blank lines.
func blockCommands(block string) []string {
	var cmds []string
	for _, line := range strings.Split(block, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			cmds = append(cmds, line)
		}
	}
	return cmds
}
