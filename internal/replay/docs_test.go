package replay_test

import (
	"os"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/replay"
)

// TestDocsListFindingClasses: docs/audit-log.md's table of `verify
// --replay` findings names every class Verify reports.
func TestDocsListFindingClasses(t *testing.T) {
	doc, err := os.ReadFile("../../docs/audit-log.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, class := range []string{replay.ReplayMismatch, replay.BundleMissing, replay.BundleHashMismatch,
		replay.UnmediatedOutcome, replay.ApprovalQuorumInvalid, replay.DevelopmentPolicy, replay.BundleRollback} {
		if !strings.Contains(string(doc), "| `"+class+"` |") {
			t.Errorf("docs/audit-log.md does not list the finding class %s", class)
		}
	}
}
