// Package testenv decides what a test does when a real external part it needs
// (SoftHSM2, curl, Node and the npm MCP packages of testdata/mcp) is missing.
//
// Locally such a test skips, loudly. Under CI (CI=true) a missing part is a
// failure, never a skip: `make test` installs every part, so its absence
// means the set-up is broken.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// inCI reports whether the tests run under CI (CI=true).
func inCI() bool { return os.Getenv("CI") == "true" }

// Missing skips t locally and fails it under CI, saying which part is
// missing and how to install it.
func Missing(t testing.TB, part, howToInstall string) {
	t.Helper()
	msg := fmt.Sprintf("MISSING EXTERNAL PART %s: %s (make test installs it)", part, howToInstall)
	if inCI() {
		t.Fatal(msg + "; CI=true, so this is a failure")
	}
	fmt.Fprintf(os.Stderr, "\n*** SKIP %s: %s ***\n\n", t.Name(), msg)
	t.Skip(msg)
}

// LookPath returns the path of the named program, or calls Missing.
func LookPath(t testing.TB, prog, howToInstall string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		Missing(t, prog, howToInstall)
	}
	return p
}

// File returns path if it exists, or calls Missing.
func File(t testing.TB, path, part, howToInstall string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, part, howToInstall)
	}
	return path
}
