package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/replay"
)

// approversFor returns the approver registry to check quorums with: the
// config's approvers, or the development approvers in the data directory.
func approversFor(configPath, dataDir string) (*approval.Registry, error) {
	if configPath != "" {
		c, err := readConfig(configPath)
		if err != nil {
			return nil, err
		}
		return c.registry()
	}
	pubs, _ := filepath.Glob(filepath.Join(dataDir, "approvers", "*.pub"))
	if len(pubs) == 0 {
		return nil, nil
	}
	var as []approval.Approver
	for _, p := range pubs {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		id := strings.TrimSuffix(filepath.Base(p), ".pub")
		as = append(as, approval.Approver{ID: id, Groups: devApproverGroups, Key: strings.TrimSpace(string(b))})
	}
	return approval.NewRegistry(as)
}

// verifyReplay re-runs every recorded decision under the archived policy it
// names and checks the log's completeness (see package replay). The log
// must not be open in a running gateway: verify a stopped gateway's data
// directory or a copy.
func verifyReplay(logDir, bundlesDir string, reg *approval.Registry) (*replay.Summary, error) {
	return replay.VerifyDir(logDir, replay.Options{Bundles: bundlesDir, Approvers: reg})
}
