package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rulelock/rulelock/internal/testenv"
)

// mcpParts are what the MCP end-to-end tests run against: the repository
// root, node, the reference filesystem server from testdata/mcp's lockfile,
// and the rulelock binary.
type mcpParts struct {
	repo, node, fsServer, bin string
}

// needMCPParts skips in -short mode, finds node and the npm packages of
// testdata/mcp (a missing one skips loudly, or fails with CI=true: see
// internal/testenv), and builds rulelock once for the whole test binary.
func needMCPParts(t *testing.T) mcpParts {
	t.Helper()
	if testing.Short() {
		t.Skip("builds rulelock and runs node")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	p := mcpParts{repo: repo, node: testenv.LookPath(t, "node", "apt-get install nodejs npm")}
	mods := filepath.Join(repo, "testdata", "mcp", "node_modules")
	testenv.File(t, filepath.Join(mods, "@modelcontextprotocol", "sdk", "package.json"), "the npm packages of testdata/mcp", "npm ci --prefix testdata/mcp")
	p.fsServer = testenv.File(t, filepath.Join(mods, "@modelcontextprotocol", "server-filesystem", "dist", "index.js"), "@modelcontextprotocol/server-filesystem", "npm ci --prefix testdata/mcp")
	if p.bin, err = rulelockBinary(); err != nil {
		t.Fatal(err)
	}
	return p
}

// sharedDir holds what the tests of this binary build once; TestMain
// removes it.
var sharedDir = sync.OnceValues(func() (string, error) { return os.MkdirTemp("", "rulelock-test-") })

// rulelockBinary builds ./cmd/rulelock once per test binary.
var rulelockBinary = sync.OnceValues(func() (string, error) {
	dir, err := sharedDir()
	if err != nil {
		return "", err
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rulelock")
	build := exec.Command("go", "build", "-o", bin, "./cmd/rulelock")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// cleanupM runs the tests, then removes what they built once.
type cleanupM struct{ *testing.M }

func (c cleanupM) Run() int {
	code := c.M.Run()
	if dir, err := sharedDir(); err == nil {
		os.RemoveAll(dir)
	}
	return code
}
