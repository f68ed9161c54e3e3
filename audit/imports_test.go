package audit

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports enforces that package audit imports nothing network-facing
// and nothing of the policy engine, so that third parties can embed the
// verifier (DESIGN.md §10).
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "net" || strings.HasPrefix(dep, "net/"),
			strings.HasPrefix(dep, "crypto/tls"),
			strings.HasPrefix(dep, "github.com/rulelock/rulelock/policy"),
			strings.Contains(dep, "pkcs11"),
			strings.Contains(dep, "grpc"):
			t.Errorf("audit depends on %s", dep)
		}
	}
}
